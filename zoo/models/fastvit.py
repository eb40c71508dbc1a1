"""FastViT (Vasu et al., Apple, arXiv 2303.14189), from timm: structural reparameterisation in a hybrid.

Stages of RepMixer blocks (a depthwise-conv token mixer whose skip connection folds into the conv at inference),
MobileOne-style train-time branches in the stem and downsampling, and in the SA variants attention stages with a
7x7 depthwise-conv position encoding (size-free). timm's model runs at every size 24-320 px as built.

Registered: `fastvit_t8` (RepMixer only: the conv-only control) and `fastvit_sa12` (attention in the last stage).

Reparameterisation: the model trains unfused (branches, BatchNorms); every export and latency measurement uses
the fused copy that the `reparameterize` hook returns (timm's `reparameterize_model` on a deep copy in eval mode).
Checkpoints and accuracy stay those of the unfused model; the fused logits equal the unfused ones (eval mode) up
to float rounding (tests/test_hybrids.py).
"""
from __future__ import annotations

import copy
import torch.nn as nn
from timm.utils.model import reparameterize_model

from zoo.models.registry import FamilyHooks, Published
from zoo.models.timm_bridge import register_timm


FUSED_ATTR = "zoo_fused"  # set on a fused copy: fusing it again returns a plain copy


def fused_for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode copy with every train-time branch folded (timm's `fuse` / `reparameterize` methods).

    The model passed in is left as it is (mode, modules and weights), so training continues on it. Fusing uses
    the BatchNorm running statistics, hence eval mode: the fused model equals the unfused one in eval mode only.
    A model this returned may be passed again (timm's RepMixer cannot be fused twice): it is copied unchanged.
    Count the fused model's parameters with `trainable_only=False`: timm's MobileOne fusion detaches
    (`requires_grad=False`) every parameter of a fused block, its squeeze-excite included.
    """
    fused = copy.deepcopy(model).eval()
    if getattr(model, FUSED_ATTR, False):
        return fused
    fused = reparameterize_model(fused, inplace=True)
    setattr(fused, FUSED_ATTR, True)
    return fused


FUSED = FamilyHooks(reparameterize=fused_for_inference)


_PAPER = "arXiv 2303.14189, ImageNet-1k results"
fastvit_t8 = register_timm(
    "fastvit_t8", "fastvit_t8", family="fastvit", hooks=FUSED,
    published=Published(params_m=3.6, gmacs=0.7, resolution=256, top1=76.2, arxiv="2303.14189",
                        paper_device="iPhone 12 Pro", paper_latency_ms=0.8,
                        source=f"{_PAPER} (FastViT-T8; 0.8 ms iPhone 12 Pro, fused)"),
    description="FastViT-T8: RepMixer stages only, the conv-only control, widths (48, 96, 192, 384); trained "
    "unfused, exported and timed fused (timm fastvit_t8)")
fastvit_sa12 = register_timm(
    "fastvit_sa12", "fastvit_sa12", family="fastvit", hooks=FUSED,
    published=Published(
        params_m=10.9, gmacs=1.9, resolution=256, top1=80.9, arxiv="2303.14189", paper_device="iPhone 12 Pro",
        paper_latency_ms=1.6, source=f"{_PAPER} (FastViT-SA12; 1.6 ms iPhone 12 Pro, fused; top-1 of the "
        "ml-fastvit README)"),
    description="FastViT-SA12: RepMixer stages, attention in the last stage with a conv position encoding, "
    "widths (64, 128, 256, 512); trained unfused, exported and timed fused (timm fastvit_sa12)")
