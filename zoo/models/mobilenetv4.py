"""MobileNetV4 (Qin et al., arXiv 2404.10518), from timm: universal inverted bottlenecks, and in the hybrids
Mobile MQA attention (multi-query, keys and values spatially downsampled) in the last stages.

Registered: `mobilenetv4_conv_small` (the conv-only control, 224 px in the paper) and
`mobilenetv4_hybrid_medium` (the smallest hybrid; the paper reports it at 256 px, so its deployment resolution
here is 256). Both run at every size 24-320 px as timm builds them.
"""
from __future__ import annotations

from zoo.models.registry import Published
from zoo.models.timm_bridge import register_timm

_PAPER = "arXiv 2404.10518, ImageNet-1k results"
mobilenetv4_conv_small = register_timm(
    "mobilenetv4_conv_small", "mobilenetv4_conv_small", family="mobilenetv4",
    published=Published(params_m=3.8, gmacs=0.2, resolution=224, top1=73.8, arxiv="2404.10518",
                        source=f"{_PAPER} (MNv4-Conv-S; GMACs rounded to 0.1)"),
    description="MobileNetV4 Conv-S: universal inverted bottlenecks, no attention: the control "
    "(timm mobilenetv4_conv_small)")
mobilenetv4_hybrid_medium = register_timm(
    "mobilenetv4_hybrid_medium", "mobilenetv4_hybrid_medium", family="mobilenetv4",
    published=Published(
        params_m=10.5, gmacs=1.2, resolution=256, top1=80.7, arxiv="2404.10518",
        source=f"{_PAPER} (MNv4-Hybrid-M at 256 px); timm's definition counts 11.07 M params and 1.27 GMACs at 256"),
    description="MobileNetV4 Hybrid-M: universal inverted bottlenecks with Mobile MQA attention in the last two "
    "stages (timm mobilenetv4_hybrid_medium)")
