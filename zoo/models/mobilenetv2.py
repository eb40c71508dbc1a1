"""MobileNetV2 (Sandler et al. 2018), width 1.0, from timm: fully convolutional, so any input size runs."""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from zoo.models.registry import Published, register
from zoo.models.timm_bridge import create_timm_model


@register(
    "mobilenetv2_100",
    family="mobilenetv2",
    published=Published(
        params_m=3.50, gmacs=0.31, resolution=224, top1=72.0, source="Sandler et al. 2018; timm mobilenetv2_100",
        arxiv="1801.04381", distilled=False, paper_device="iPhone 12 Neural Engine", paper_latency_ms=0.92,
        latency_source="arXiv 2110.02178 Table 3"
    ),
    description="MobileNetV2 1.0: inverted residual bottlenecks, expansion 6, 1280-d head (timm mobilenetv2_100)",
)
def mobilenetv2_100(
    num_classes: int = 1000, drop_path_rate: float = 0.0, drop_rate: float | None = None, **knobs: Any
) -> nn.Module:
    return create_timm_model(
        "mobilenetv2_100", num_classes=num_classes, drop_path_rate=drop_path_rate, drop_rate=drop_rate, **knobs
    )
