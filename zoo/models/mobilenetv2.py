"""MobileNetV2 (Sandler et al. 2018), width 1.0, from timm: fully convolutional, so any input size runs."""
from __future__ import annotations

from zoo.models.registry import Published
from zoo.models.timm_bridge import register_timm

mobilenetv2_100 = register_timm(
    "mobilenetv2_100", "mobilenetv2_100", family="mobilenetv2",
    published=Published(params_m=3.50, gmacs=0.31, resolution=224, top1=72.0, arxiv="1801.04381", distilled=False,
                        paper_device="iPhone 12 Neural Engine", paper_latency_ms=0.92, paper_cpu_latency_ms=7.50,
                        latency_source="arXiv 2110.02178 Table 3", source="Sandler et al. 2018; timm mobilenetv2_100"),
    description="MobileNetV2 1.0: inverted residual bottlenecks, expansion 6, 1280-d head (timm mobilenetv2_100)")
