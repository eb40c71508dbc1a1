"""Make a zoo model exportable at one fixed resolution: `prepare_for_export(model, resolution)`.

Every latency backend (ONNX Runtime fp32 and int8, ExecuTorch, LiteRT, Core ML, and PyTorch eager) times the
copy this returns, so every column of the board times the graph a device would run. The steps are generic; what
a family needs is declared on the family (`zoo.models.registry.FamilyHooks`, in the family's own file):

1. a deep copy in eval mode (the model passed in is not modified, so a training run can export mid-way);
2. the family's `reparameterize` hook, if any: the fused inference model (structural reparameterisation);
3. the family's `bake_for_export(model, resolution)` hook, if any: makes the graph at that size static, e.g.
   DeiT's and PiT's run-time resize of their position embedding (an antialiased bicubic interpolation that no
   phone exporter lowers) evaluated once and stored as a buffer (`BAKED_BUFFER`);
4. every submodule's own `bake_for_export()` method, if it has one: layers that compute a constant from their
   parameters on every call (AFT-conv's depthwise kernel) store it, wherever the layer is used (AFT models,
   MobileViT with AFT mixers).

The logits at that size are the eager model's (baked values are the same computation, done once). Models with
nothing to bake are copied unchanged. `reclass` and `BAKED_BUFFER` are the tools families' bakes share.
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.models.registry import hooks_of

__all__ = ["BAKED_BUFFER", "prepare_for_export", "reclass", "xnnpack_friendly_ops"]

# The buffer a family's bake stores its precomputed position embedding in (non-persistent: not in state_dicts).
BAKED_BUFFER = "export_pos_embed"


def reclass(model: nn.Module, overrides: dict[str, Any]) -> None:
    """Give one instance a subclass of its class with some methods replaced (`Export<Class>`).

    A subclass made on the fly keeps the instance's weights, modules and every other method; only the overridden
    steps change (the technique of `AnySizePiT.from_timm`), and other instances of the class are untouched.
    """
    cls = type(model)
    model.__class__ = type(f"Export{cls.__name__}", (cls,), overrides)


def prepare_for_export(model: nn.Module, resolution: int) -> nn.Module:
    """An eval-mode copy of `model`, fused and baked for a `resolution` x `resolution` input (module docstring).

    Its logits at that size equal `model`'s (eval mode). Other sizes may be refused (PiT) or wrong (DeiT): the
    copy is for exporting and timing at one size only.
    """
    hooks = hooks_of(model)
    prepared = copy.deepcopy(model).eval()
    if hooks.reparameterize is not None:
        prepared = hooks.reparameterize(prepared).eval()
    if hooks.bake_for_export is not None:
        hooks.bake_for_export(prepared, resolution)
    for module in list(prepared.modules()):
        bake = getattr(module, "bake_for_export", None)
        if callable(bake):
            bake()
    return prepared


def _explicit_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                        enable_gqa=False):
    """softmax(Q Kᵀ · scale + mask) V with 3-D batched matmuls (inference: no dropout)."""
    if is_causal or enable_gqa:
        raise NotImplementedError("explicit attention for export covers the zoo's non-causal attention only")
    if query.dim() == 4 and key.shape[1] == 1 and query.shape[1] > 1:
        # Multi-query attention (MobileNetV4's Mobile MQA): one key/value head shared by every query head, passed
        # to SDPA by broadcasting. bmm does not broadcast, so the query heads are folded into the query length
        # (each query row attends to the same keys): same numbers, still only bmm and softmax in the graph.
        if attn_mask is not None:
            raise NotImplementedError("explicit multi-query attention for export takes no mask")
        batch, heads, length, dim = query.shape
        folded = _explicit_attention(query.reshape(batch, 1, heads * length, dim), key, value, scale=scale)
        return folded.reshape(batch, heads, length, value.shape[-1])
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


def _explicit_group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """GroupNorm from sub/mul/rsqrt and two 4-D spatial means over a [B, G, C/G·H·W, 1] view."""
    batch, channels = input.shape[0], input.shape[1]
    grouped = input.reshape(batch, num_groups, -1, 1)
    centred = grouped - grouped.mean(dim=(2, 3), keepdim=True)
    normed = centred * torch.rsqrt((centred * centred).mean(dim=(2, 3), keepdim=True) + eps)
    normed = normed.reshape(input.shape)
    affine = (1, channels) + (1,) * (input.dim() - 2)
    if weight is not None:
        normed = normed * weight.reshape(affine)
    return normed + bias.reshape(affine) if bias is not None else normed


# Tensor methods traced as views, slices and bmm (see `xnnpack_friendly_ops`). Each one falls back to the original
# outside the pattern it rewrites, and returns the same values (views where the original returns views).


def _pooled_mean(self: torch.Tensor, *args, **kwargs):
    """A 4-D mean over dims (2, 3) without keepdim (timm's `x.mean((2, 3))` heads) as a pool plus a view."""
    dim = args[0] if args else kwargs.get("dim")
    keepdim = args[1] if len(args) > 1 else kwargs.get("keepdim", False)
    plain = len(args) <= 2 and set(kwargs) <= {"dim", "keepdim"}
    if plain and not keepdim and self.dim() == 4 and isinstance(dim, (tuple, list)) \
            and sorted(d % 4 for d in dim) == [2, 3]:
        return _ORIGINAL["mean"](self, dim, keepdim=True).view(self.shape[0], self.shape[1])
    return _ORIGINAL["mean"](self, *args, **kwargs)


def _unsqueeze_as_view(self: torch.Tensor, dim: int):
    """unsqueeze on any but the trailing dim (XNNPACK takes the trailing one only) as a view."""
    position = dim % (self.dim() + 1)
    if position == self.dim():
        return _ORIGINAL["unsqueeze"](self, dim)
    shape = list(self.shape)
    shape.insert(position, 1)
    return self.view(shape)


def _batched_matmul(input: torch.Tensor, other: torch.Tensor):
    """A matmul of two tensors of the same rank >= 3 and batch dims as one 3-D bmm (torch traces it as expand +
    bmm, and XNNPACK does not take the expand); anything else (broadcast batches, vectors) unchanged."""
    if not (input.dim() == other.dim() >= 3 and input.shape[:-2] == other.shape[:-2]):
        return _ORIGINAL["matmul"](input, other)
    batch = input.shape[:-2]
    out = torch.bmm(input.reshape(-1, *input.shape[-2:]), other.reshape(-1, *other.shape[-2:]))
    return out.view(*batch, *out.shape[-2:])


_ORIGINAL: dict[str, Any] = {}
# (owner, attribute, replacement): functions in torch.nn.functional and methods of torch.Tensor.
_REWRITES: tuple[tuple[Any, str, Any], ...] = (
    (F, "scaled_dot_product_attention", _explicit_attention),
    (F, "layer_norm", _explicit_layer_norm),
    (F, "group_norm", _explicit_group_norm),
    (torch.Tensor, "mean", _pooled_mean),
    (torch.Tensor, "unsqueeze", _unsqueeze_as_view),
    (torch.Tensor, "matmul", _batched_matmul),
    (torch.Tensor, "__matmul__", _batched_matmul),
    (torch, "matmul", _batched_matmul),
)


@contextlib.contextmanager
def xnnpack_friendly_ops() -> Iterator[None]:
    """While exporting, trace attention, the norms and some tensor methods with ops XNNPACK delegates.

    Why: lowered to ExecuTorch's edge dialect, `F.scaled_dot_product_attention` decomposes into a 'safe softmax'
    (eq/any/logical_not/where/full_like guarding fully masked rows) plus 4-D matmuls (expand + bmm + squeeze), and
    XNNPACK's partitioner (executorch 1.5) takes neither those guards, nor `expand`, nor `native_layer_norm` /
    `native_group_norm`, nor a `mean` that is not a 4-D spatial pool with keepdim, nor `unsqueeze` but on the
    trailing dim. Each such node runs on portable kernels and splits the graph. Here attention is bmm → softmax →
    bmm on 3-D tensors; layer and group norm's means are 4-D spatial means (a global average pool to XNNPACK); a
    (2, 3) mean without keepdim is the pool plus a view; unsqueeze a view; a same-batch matmul one bmm.
    Not rewritten: `split` / `chunk` / `unbind` (`split_with_sizes`, `squeeze`) stay on portable kernels, because
    their XNNPACK alternative, `slice`, gives wrong numbers on a channel slice of a 4-D conv activation
    (executorch 1.5: max abs err 7 on a one-block model), and the parity check would fail the export.
    The numbers equal the eager ops' up to float rounding (the export's parity check bounds it; the tensor methods
    are exact); eager training is untouched: everything is restored on exit.
    """
    # by name: "matmul" ends up torch.matmul (listed last), which the same-batch rewrite falls back to
    _ORIGINAL.update({name: getattr(owner, name) for owner, name, _ in _REWRITES})
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in _REWRITES]
    try:
        for owner, name, replacement in _REWRITES:
            setattr(owner, name, replacement)
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)
