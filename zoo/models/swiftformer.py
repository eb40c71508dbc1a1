"""SwiftFormer (Shaker et al., arXiv 2303.15446), from timm: efficient additive attention.

Queries are pooled into one global query vector by learned token weights and combined with the keys
element-wise, so attention is linear in the tokens and needs no matrix product between tokens. No position
embedding: timm marks the model `fixed_input_size`, but it runs at every size 24-320 px with one set of weights
(tests/test_all_models.py); the flag is stale.
"""
from __future__ import annotations

from zoo.models.registry import Published
from zoo.models.timm_bridge import mark_any_input_size, register_timm

# adapt: timm's stale `fixed_input_size` flag cleared (measured: any size runs).
swiftformer_xs = register_timm(
    "swiftformer_xs", "swiftformer_xs", family="swiftformer", adapt=mark_any_input_size,
    published=Published(params_m=3.5, gmacs=0.6, resolution=224, top1=75.7, arxiv="2303.15446",
                        paper_device="iPhone 14", paper_latency_ms=0.7,
                        source="arXiv 2303.15446, ImageNet-1k results (SwiftFormer-XS; 0.7 ms iPhone 14)"),
    description="SwiftFormer-XS: conv encoders plus one efficient-additive-attention block per stage, "
    "distillation head averaged in (timm swiftformer_xs)")
