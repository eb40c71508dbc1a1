"""SwiftFormer (Shaker et al., arXiv 2303.15446), from timm: efficient additive attention.

Queries are pooled into one global query vector by learned token weights and combined with the keys
element-wise, so attention is linear in the tokens and needs no matrix product between tokens. No position
embedding: timm marks the model `fixed_input_size`, but it runs at every size 24-320 px with one set of weights
(tests/test_all_models.py); the flag is stale.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from zoo.models.registry import Published, register
from zoo.models.timm_bridge import create_timm_model


@register(
    "swiftformer_xs",
    family="swiftformer",
    published=Published(
        params_m=3.5, gmacs=0.6, resolution=224, top1=75.7, arxiv="2303.15446", paper_device="iPhone 14",
        paper_latency_ms=0.7,
        source="arXiv 2303.15446, ImageNet-1k results (SwiftFormer-XS; 0.7 ms iPhone 14)",
    ),
    description="SwiftFormer-XS: conv encoders plus one efficient-additive-attention block per stage, "
    "distillation head averaged in (timm swiftformer_xs)",
)
def swiftformer_xs(
    num_classes: int = 1000, drop_path_rate: float = 0.0, drop_rate: float | None = None, **knobs: Any
) -> nn.Module:
    model = create_timm_model(
        "swiftformer_xs", num_classes=num_classes, drop_path_rate=drop_path_rate, drop_rate=drop_rate, **knobs
    )
    if isinstance(getattr(model, "pretrained_cfg", None), dict):
        model.pretrained_cfg["fixed_input_size"] = False  # measured: any size runs (timm's data helpers read it)
    return model
