"""Make a zoo model exportable at one fixed resolution: `prepare_for_export(model, resolution)`.

Phone runtimes (ExecuTorch/XNNPACK, LiteRT, Core ML) compile a graph for one input shape. Two families resize a
learned position embedding on every forward with timm's antialiased bicubic interpolation
(`aten._upsample_bicubic2d_aa`), an op none of those exporters lower:

- DeiT (timm `dynamic_img_size`): timm skips its size-match early-out while exporting (`is_exporting()`), so the
  op appears even at the construction size 224.
- PiT (`AnySizePiT`): the map is resized whenever the token grid differs from the construction one (256 px).

The resize depends only on the weights and the input size, so at a fixed size it is a constant: we evaluate it
once in eager mode (the very same call the model makes) and store the result as a buffer that the exported graph
adds. The logits at that size are then the eager model's (same numbers, added in the same order).

AFT-conv's depthwise kernel, a function of its parameters, is baked the same way (a conv with static weights).

The model passed in is not modified: a deep copy is prepared (in eval mode), so a training run can export its
model mid-way. Models with nothing to bake are copied unchanged.
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

from zoo.models.aft_layers import AFTConv
from zoo.models.pit import AnySizePiT

__all__ = ["BAKED_BUFFER", "xnnpack_friendly_ops", "prepare_for_export", "token_grid_of"]

BAKED_BUFFER = "export_pos_embed"


def token_grid_of(model: nn.Module, resolution: int) -> tuple[int, int]:
    """The token grid a DeiT/PiT produces from a square image of `resolution` pixels."""
    if isinstance(model, AnySizePiT):
        return model.token_grid((resolution, resolution))
    if isinstance(model, VisionTransformer):
        patch = model.patch_embed.patch_size
        # dynamic_img_pad pads up to the next multiple of the patch: ceil division.
        return tuple(-(-resolution // p) for p in patch)  # type: ignore[return-value]
    raise TypeError(f"{type(model).__name__} has no position-embedding grid")


def _baked_vit_pos_embed(self: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    # timm's `_pos_embed` for the dynamic-size path (patch embed output NHWC), with the resample replaced by the
    # stored result. Class/register tokens are concatenated first, as timm does when no_embed_class is False.
    batch, _, _, channels = x.shape
    x = x.view(batch, -1, channels)
    to_cat = []
    if self.cls_token is not None:
        to_cat.append(self.cls_token.expand(batch, -1, -1))
    if self.reg_token is not None:
        to_cat.append(self.reg_token.expand(batch, -1, -1))
    pos_embed = getattr(self, BAKED_BUFFER)
    if self.no_embed_class:
        x = x + pos_embed
        x = torch.cat(to_cat + [x], dim=1) if to_cat else x
    else:
        x = torch.cat(to_cat + [x], dim=1) if to_cat else x
        x = x + pos_embed
    return self.pos_drop(x)


def _baked_pit_position_embedding(self: AnySizePiT, grid: tuple[int, int]) -> torch.Tensor:
    baked = getattr(self, BAKED_BUFFER)
    if tuple(baked.shape[-2:]) != tuple(grid):
        raise ValueError(f"exported for token grid {tuple(baked.shape[-2:])}, got {tuple(grid)}")
    return baked


def _reclass(model: nn.Module, overrides: dict[str, Any]) -> None:
    # A subclass made on the fly keeps the instance's weights, modules and every other method; only the
    # position-embedding step changes. (Same technique as AnySizePiT.from_timm.)
    cls = type(model)
    model.__class__ = type(f"Export{cls.__name__}", (cls,), overrides)


def _bake_vit(model: VisionTransformer, resolution: int) -> None:
    if not getattr(model, "dynamic_img_size", False) or model.pos_embed is None:
        return  # fixed-size ViT: pos_embed is added as is, nothing to bake
    grid = token_grid_of(model, resolution)
    with torch.no_grad():
        baked = resample_abs_pos_embed(
            model.pos_embed,
            new_size=grid,
            old_size=model.patch_embed.grid_size,
            num_prefix_tokens=0 if model.no_embed_class else model.num_prefix_tokens,
        )
    model.register_buffer(BAKED_BUFFER, baked.detach().clone(), persistent=False)
    _reclass(model, {"_pos_embed": _baked_vit_pos_embed})


def _bake_pit(model: AnySizePiT, resolution: int) -> None:
    grid = token_grid_of(model, resolution)
    with torch.no_grad():
        baked = model.position_embedding(grid)  # the eager model's own resize at this grid
    model.register_buffer(BAKED_BUFFER, baked.detach().clone(), persistent=False)
    _reclass(model, {"position_embedding": _baked_pit_position_embedding})


def _baked_conv_weight(self: AFTConv, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return self.export_conv_weight.to(dtype), self.export_global_scale.to(dtype)


def _bake_aft_conv(module: AFTConv) -> None:
    # AFT-conv's depthwise kernel is computed from parameters on every call; in the graph that makes a conv with
    # a computed weight, which XNNPACK does not delegate (it runs on ExecuTorch's portable conv, ~35x slower
    # than MobileNetV2 overall, and its int8 form has no kernel at all). At inference it is a constant.
    with torch.no_grad():
        weight, scale = module.conv_weight(module.weight.dtype)
    module.register_buffer("export_conv_weight", weight.detach().clone(), persistent=False)
    module.register_buffer("export_global_scale", scale.detach().clone(), persistent=False)
    _reclass(module, {"conv_weight": _baked_conv_weight})


def prepare_for_export(model: nn.Module, resolution: int) -> nn.Module:
    """An eval-mode copy of `model` whose forward at `resolution` x `resolution` has no run-time pos-embed resize.

    Its logits at that size equal `model`'s (eval mode). Other sizes are refused (PiT) or wrong (DeiT): the copy
    is for exporting at one size only.
    """
    prepared = copy.deepcopy(model).eval()
    if isinstance(prepared, AnySizePiT):
        _bake_pit(prepared, resolution)
    elif isinstance(prepared, VisionTransformer):
        _bake_vit(prepared, resolution)
    for module in prepared.modules():
        if isinstance(module, AFTConv):
            _bake_aft_conv(module)
    return prepared


def _explicit_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                        enable_gqa=False):
    """softmax(Q Kᵀ · scale + mask) V with 3-D batched matmuls (inference: no dropout)."""
    if is_causal or enable_gqa:
        raise NotImplementedError("explicit attention for export covers the zoo's non-causal attention only")
    *lead, length, dim = query.shape
    scale = dim ** -0.5 if scale is None else scale
    # bmm on [batch*heads, L, d]: a 4-D matmul would be traced as expand + bmm + squeeze, and XNNPACK does not
    # take the expand.
    q = (query * scale).reshape(-1, length, dim)
    k = key.reshape(-1, key.shape[-2], dim)
    scores = torch.bmm(q, k.transpose(1, 2))
    if attn_mask is not None:
        mask = attn_mask.expand(*lead, length, key.shape[-2]).reshape(scores.shape)
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    out = torch.bmm(scores.softmax(dim=-1), value.reshape(-1, value.shape[-2], value.shape[-1]))
    return out.reshape(*lead, length, value.shape[-1])


def _mean_last(x: torch.Tensor) -> torch.Tensor:
    # XNNPACK's mean is a global average pool: 4-D input, dims (2, 3), keepdim.
    # View [..., C] as [R, 1, C, 1] and average the last two dims.
    return x.reshape(-1, 1, x.shape[-1], 1).mean(dim=(2, 3), keepdim=True).reshape(*x.shape[:-1], 1)


def _explicit_layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """LayerNorm over the last dim from sub/mul/rsqrt and two 4-D spatial means."""
    if len(normalized_shape) != 1:
        return _ORIGINAL["layer_norm"](input, normalized_shape, weight, bias, eps)
    centred = input - _mean_last(input)
    normed = centred * torch.rsqrt(_mean_last(centred * centred) + eps)
    if weight is not None:
        normed = normed * weight
    return normed + bias if bias is not None else normed


_ORIGINAL: dict[str, Any] = {}


@contextlib.contextmanager
def xnnpack_friendly_ops() -> Iterator[None]:
    """While exporting, trace attention and layer norm with ops XNNPACK delegates.

    Why: lowered to ExecuTorch's edge dialect, `F.scaled_dot_product_attention` decomposes into a 'safe softmax'
    (eq/any/logical_not/where/full_like guarding fully masked rows) plus 4-D matmuls (expand + bmm + squeeze), and
    XNNPACK's partitioner (executorch 1.5) takes neither those guards, nor `expand`, nor `native_layer_norm`, nor a
    `mean` that is not a 4-D spatial pool. Each such node runs on portable kernels and splits the graph. Here
    attention is bmm → softmax → bmm on 3-D tensors, and layer norm's two means are 4-D spatial means (a
    global average pool to XNNPACK). The numbers equal the eager ops' up to float rounding (the export's
    parity check bounds it); eager training is untouched.
    """
    _ORIGINAL.update(sdpa=F.scaled_dot_product_attention, layer_norm=F.layer_norm)
    F.scaled_dot_product_attention = _explicit_attention
    F.layer_norm = _explicit_layer_norm
    try:
        yield
    finally:
        F.scaled_dot_product_attention = _ORIGINAL["sdpa"]
        F.layer_norm = _ORIGINAL["layer_norm"]
