"""DeiT (Touvron et al., arXiv 2012.12877): timm's ViT built so one instance takes any input size.

`dynamic_img_size` resamples the 14x14 position embedding to the input's patch grid on every forward, and
`dynamic_img_pad` pads the image up to a multiple of the 16-pixel patch, so sizes such as 200 run too.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from zoo.models.registry import Published, register
from zoo.models.timm_bridge import create_timm_model


@register(
    "deit_tiny",
    family="deit",
    published=Published(params_m=5.7, gmacs=1.26, resolution=224, top1=72.2, source="DeiT-Ti, arXiv 2012.12877"),
    description="DeiT-Ti: 12 layers, width 192, 3 heads, patch 16, class token (timm deit_tiny_patch16_224)",
)
def deit_tiny(
    num_classes: int = 1000, drop_path_rate: float = 0.0, drop_rate: float | None = None, **knobs: Any
) -> nn.Module:
    return create_timm_model(
        "deit_tiny_patch16_224",
        num_classes=num_classes,
        drop_path_rate=drop_path_rate,
        drop_rate=drop_rate,
        **{"dynamic_img_size": True, "dynamic_img_pad": True, **knobs},
    )
