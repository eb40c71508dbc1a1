"""EfficientViT, the MIT B series (Cai et al., arXiv 2205.14756), from timm: multi-scale linear attention.

ReLU linear attention (no softmax: cost linear in the tokens) over the tokens and over small depthwise-conv
aggregations of them, in MBConv-based stages. No position embedding: timm's model runs at every size 24-320 px as
built. (Not the Microsoft EfficientViT-M, which is fixed-size.)

Stochastic depth: timm's EfficientViT-B has none (its `drop_path_rate` is refused), but the matrix's advanced
recipe sets drop_path 0.1 for every family. `add_stochastic_depth` puts timm's `DropPath` on the residual branch of
every block with an identity shortcut (the MBConv and attention residuals; the stride-2 blocks have no shortcut),
rates rising linearly with depth from 0 to `drop_path_rate`, as timm's other models do. It adds no parameters, so
the state_dict is timm's; at drop_path_rate 0 the model is timm's unchanged.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import DropPath
from timm.models.efficientvit_mit import ResidualBlock

from zoo.models.registry import Published
from zoo.models.timm_bridge import register_timm


class ResidualBlockWithDropPath(ResidualBlock):
    """timm's `ResidualBlock` with stochastic depth on the main branch (identity shortcuts only)."""

    drop_path: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop_path(self.main(self.pre_norm(x))) + self.shortcut(x)


def add_stochastic_depth(model: nn.Module, drop_path_rate: float) -> nn.Module:
    """In place: DropPath on every identity-shortcut residual of a timm EfficientViT-B, linear in depth."""
    blocks = [m for m in model.modules() if type(m) is ResidualBlock and isinstance(m.shortcut, nn.Identity)]
    if drop_path_rate <= 0 or not blocks:
        return model
    for block, rate in zip(blocks, torch.linspace(0, drop_path_rate, len(blocks), dtype=torch.float64).tolist()):
        block.__class__ = ResidualBlockWithDropPath
        block.drop_path = DropPath(rate) if rate > 0 else nn.Identity()
    return model


efficientvit_b0 = register_timm(
    "efficientvit_b0", "efficientvit_b0", family="efficientvit", stochastic_depth=add_stochastic_depth,
    published=Published(params_m=3.41, gmacs=0.10, resolution=224,
                        source="timm efficientvit_b0 as measured here (the paper's ImageNet table starts at B1)"),
    description="EfficientViT-B0 (MIT): MBConv stages, multi-scale ReLU linear attention in the last two, widths "
    "(8, 16, 32, 64, 128) (timm efficientvit_b0)")
efficientvit_b1 = register_timm(
    "efficientvit_b1", "efficientvit_b1", family="efficientvit", stochastic_depth=add_stochastic_depth,
    published=Published(
        params_m=9.1, gmacs=0.52, resolution=224, top1=79.4, arxiv="2205.14756",
        source="arXiv 2205.14756, ImageNet-1k results (EfficientViT-B1 r224; latency given on Jetson/TensorRT only)"),
    description="EfficientViT-B1 (MIT): MBConv stages, multi-scale ReLU linear attention in the last two, widths "
    "(16, 32, 64, 128, 256) (timm efficientvit_b1)")
