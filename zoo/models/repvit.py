"""RepViT (Wang et al., arXiv 2307.09283), from timm: MobileNetV3 redesigned from the ViT view (control).

Token mixer and channel mixer separated as in a MetaFormer block, the token mixer a RepVGG-style depthwise
conv whose 1x1 and identity branches fold into the 3x3 at inference, no attention at all: the CNN control among the
hybrids. Runs at every size 24-320 px as timm builds it.

Reparameterisation: trained unfused; every export and latency measurement uses the fused copy of the
`reparameterize` hook (timm's `fuse` methods: conv+BN, the RepVGG branches, and the two classifier heads averaged
into one), as in `zoo.models.fastvit`.

Stochastic depth: timm's RepViT has none (its `drop_path_rate` is refused); the matrix's advanced recipe sets 0.1
for every family, so `add_stochastic_depth` puts timm's `DropPath` on the channel-mixer residual of every block
(and of the downsampling blocks' FFN), rates rising linearly with depth. The token mixer's identity branch is part
of the reparameterised conv and is left alone. No parameters are added: the state_dict is timm's.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import DropPath
from timm.models.repvit import RepViTBlock, RepVitDownsample

from zoo.models.fastvit import FUSED
from zoo.models.registry import Published
from zoo.models.timm_bridge import register_timm


class RepViTBlockWithDropPath(RepViTBlock):
    """timm's `RepViTBlock` with stochastic depth on the channel-mixer branch."""

    drop_path: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se(self.token_mixer(x))
        return x + self.drop_path(self.channel_mixer(x))


class RepVitDownsampleWithDropPath(RepVitDownsample):
    """timm's `RepVitDownsample` with stochastic depth on its FFN branch."""

    drop_path: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.channel_downsample(self.spatial_downsample(self.pre_block(x)))
        return x + self.drop_path(self.ffn(x))


_WITH_DROP_PATH = {RepViTBlock: RepViTBlockWithDropPath, RepVitDownsample: RepVitDownsampleWithDropPath}


def add_stochastic_depth(model: nn.Module, drop_path_rate: float) -> nn.Module:
    """In place: DropPath on every residual branch of a timm RepViT, rates linear in depth from 0."""
    blocks = [m for m in model.modules() if type(m) in _WITH_DROP_PATH]
    if drop_path_rate <= 0 or not blocks:
        return model
    for block, rate in zip(blocks, torch.linspace(0, drop_path_rate, len(blocks), dtype=torch.float64).tolist()):
        block.__class__ = _WITH_DROP_PATH[type(block)]
        block.drop_path = DropPath(rate) if rate > 0 else nn.Identity()
    return model


repvit_m0_9 = register_timm(
    "repvit_m0_9", "repvit_m0_9", family="repvit", hooks=FUSED, stochastic_depth=add_stochastic_depth,
    published=Published(
        params_m=5.1, gmacs=0.8, resolution=224, top1=78.7, arxiv="2307.09283", epochs=300, paper_device="iPhone 12",
        paper_latency_ms=0.9,
        source="arXiv 2307.09283, ImageNet-1k results (RepViT-M0.9, 300 epochs; 0.9 ms iPhone 12; fused model)"),
    description="RepViT-M0.9: RepVGG depthwise token mixer + FFN, SE every other block, no attention: the CNN "
    "control; trained unfused, exported and timed fused (timm repvit_m0_9)")
