"""MobileViTv2 (Mehta & Rastegari, arXiv 2206.02680): MobileViT's own successor, from timm.

The multi-head self-attention of MobileViT becomes separable self-attention (linear in the number of tokens: one
context vector from a softmax over the tokens, then element-wise products), and the fusion block loses its
concatenation. Fully convolutional around the attention, no position embedding: timm's model runs at every size
24-320 px with one set of weights, as built (tests/test_all_models.py).

ml-cvnets trains MobileViTv2 on ImageNet at a fixed 256 px (its plain batch sampler), not with MobileViT's variable
multi-scale sampler; here it gets both samplers like every other family.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from zoo.models.registry import Published, register
from zoo.models.timm_bridge import create_timm_model

_TRAINED_AT_256 = "ml-cvnets trains it at a fixed 256 px (no variable sampler)"


@register(
    "mobilevitv2_050",
    family="mobilevitv2",
    published=Published(
        params_m=1.4, gmacs=0.5, resolution=256, top1=70.18,
        source="arXiv 2206.02680, ImageNet-1k results (MobileViTv2-0.5; figures rounded to 0.1)",
    ),
    description=f"MobileViTv2 width 0.5: separable self-attention (timm mobilevitv2_050); {_TRAINED_AT_256}",
)
def mobilevitv2_050(
    num_classes: int = 1000, drop_path_rate: float = 0.0, drop_rate: float | None = None, **knobs: Any
) -> nn.Module:
    return create_timm_model(
        "mobilevitv2_050", num_classes=num_classes, drop_path_rate=drop_path_rate, drop_rate=drop_rate, **knobs
    )


@register(
    "mobilevitv2_100",
    family="mobilevitv2",
    published=Published(
        params_m=4.9, gmacs=1.8, resolution=256, top1=78.09,
        source="arXiv 2206.02680, ImageNet-1k results (MobileViTv2-1.0; figures rounded to 0.1)",
    ),
    description=f"MobileViTv2 width 1.0: separable self-attention (timm mobilevitv2_100); {_TRAINED_AT_256}",
)
def mobilevitv2_100(
    num_classes: int = 1000, drop_path_rate: float = 0.0, drop_rate: float | None = None, **knobs: Any
) -> nn.Module:
    return create_timm_model(
        "mobilevitv2_100", num_classes=num_classes, drop_path_rate=drop_path_rate, drop_rate=drop_rate, **knobs
    )
