"""MobileViTv2 (Mehta & Rastegari, arXiv 2206.02680): MobileViT's own successor, from timm.

The multi-head self-attention of MobileViT becomes separable self-attention (linear in the number of tokens: one
context vector from a softmax over the tokens, then element-wise products), and the fusion block loses its
concatenation. Fully convolutional around the attention, no position embedding: timm's model runs at every size
24-320 px with one set of weights, as built (tests/test_all_models.py).

ml-cvnets trains MobileViTv2 on ImageNet at a fixed 256 px (its plain batch sampler), not with MobileViT's variable
multi-scale sampler; here it gets both samplers like every other family.

Export (`bake_for_export`, the family's hook): each separable self-attention is traced with timm's
`F.relu(value) * context_vector.expand_as(value)` as a broadcast product, the same numbers: LiteRT's converter
rejects the explicit expand ("'tfl.mul' op operands don't have broadcast-compatible shapes"), and XNNPACK does
not take `expand`. The rest stays timm's, though XNNPACK takes neither the q/k/v `split_with_sizes` nor the
token `sum` (9 portable nodes each): the formulations that avoid them (channel slices, or three convs holding
the projection's rows; a mean times N) gave wrong logits through executorch 1.5's XNNPACK delegate (max abs err
0.3-0.5), apparently its channels-last handling of a softmax over a conv output's last dim. Eager training runs
timm's code unchanged.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.mobilevit import LinearSelfAttention

from zoo.models.export import reclass
from zoo.models.registry import FamilyHooks, Published
from zoo.models.timm_bridge import register_timm

_TRAINED_AT_256 = "ml-cvnets trains it at a fixed 256 px (no variable sampler)"


def _export_self_attention(self: LinearSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """timm's separable self-attention (inference), its expand_as a broadcast (module docstring)."""
    query, key, value = self.qkv_proj(x).split([1, self.embed_dim, self.embed_dim], dim=1)
    context_scores = F.softmax(query, dim=-1)  # [B, 1, P, N]: over the N tokens
    context_vector = (key * context_scores).sum(dim=-1, keepdim=True)  # [B, d, P, 1]
    return self.out_proj(F.relu(value) * context_vector)  # [B, d, P, N] * [B, d, P, 1]: a broadcast product


def bake_for_export(model: nn.Module, resolution: int) -> None:
    """In place (an eval-mode copy): every separable self-attention traced in its export formulation."""
    for module in model.modules():
        if isinstance(module, LinearSelfAttention):
            reclass(module, {"_forward_self_attn": _export_self_attention})


EXPORT_HOOKS = FamilyHooks(bake_for_export=bake_for_export)


_PAPER = "arXiv 2206.02680, ImageNet-1k results"
mobilevitv2_050 = register_timm(
    "mobilevitv2_050", "mobilevitv2_050", family="mobilevitv2", hooks=EXPORT_HOOKS,
    published=Published(params_m=1.4, gmacs=0.5, resolution=256, top1=70.18, arxiv="2206.02680",
                        source=f"{_PAPER} (MobileViTv2-0.5; figures rounded to 0.1)"),
    description=f"MobileViTv2 width 0.5: separable self-attention (timm mobilevitv2_050); {_TRAINED_AT_256}")
mobilevitv2_100 = register_timm(
    "mobilevitv2_100", "mobilevitv2_100", family="mobilevitv2", hooks=EXPORT_HOOKS,
    published=Published(params_m=4.9, gmacs=1.8, resolution=256, top1=78.09, arxiv="2206.02680",
                        source=f"{_PAPER} (MobileViTv2-1.0; figures rounded to 0.1)"),
    description=f"MobileViTv2 width 1.0: separable self-attention (timm mobilevitv2_100); {_TRAINED_AT_256}")
