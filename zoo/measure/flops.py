"""Multiply-accumulates (MACs) of one forward pass, attention matmuls included.

Built on `torch.utils.flop_counter.FlopCounterMode`, with two fixes for traps of torch 2.14 on CPU:

1. Fused attention is invisible. `F.scaled_dot_product_attention` on CPU dispatches to
   `aten._scaled_dot_product_flash_attention_for_cpu`, which has no FLOP formula, so the QKᵀ and AV matmuls count
   as 0 (deit_tiny reads 1.08 GMACs instead of 1.26). We add a formula for that op rather than forcing the math
   path: the model then runs exactly the kernels it runs in production, and the count is the same two matmuls
   the math path would show (softmax and scaling are not MACs in either case).
2. `no_grad` breaks the module tracker. FlopCounterMode's ModuleTracker registers autograd hooks on every module
   input that requires grad; under `no_grad` such a tensor (PiT hands its class-token parameter to its
   transformer stages) yields no grad_fn and the tracker raises. We instead switch off `requires_grad` on the parameters for the duration of the count: no
   tensor needs grad, so no hooks and no autograd graph (the memory of `no_grad`), and every model works.

GMACs = FLOPs / 2, the unit the papers use.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["MacCount", "count_macs", "sdpa_macs"]

_aten = torch.ops.aten


def sdpa_macs(query_shape: Sequence[int], key_shape: Sequence[int], value_shape: Sequence[int]) -> int:
    """MACs of softmax(Q Kᵀ) V for (batch, heads, length, dim) shapes: Lq·Lk·E for QKᵀ plus Lq·Lk·Ev for AV."""
    *batch_dims, q_len, qk_dim = query_shape
    key_len = key_shape[-2]
    value_dim = value_shape[-1]
    batch_heads = 1
    for d in batch_dims:
        batch_heads *= d
    return batch_heads * q_len * key_len * (qk_dim + value_dim)


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # FlopCounterMode passes tensor arguments as shapes (its shape wrapper) and expects FLOPs = 2 x MACs.
    return 2 * sdpa_macs(query_shape, key_shape, value_shape)


def _missing_attention_formulas() -> dict:
    """Fused attention ops that torch's table lacks (CPU flash attention; the device-agnostic fused variant)."""
    from torch.utils.flop_counter import flop_registry

    candidates = ["_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable"]
    mapping = {}
    for name in candidates:
        op = getattr(_aten, name, None)
        if op is not None and op not in flop_registry and op.default not in flop_registry:
            mapping[op] = _sdpa_flops
    return mapping


@contextlib.contextmanager
def _frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Temporarily set requires_grad=False on every parameter, restoring each flag afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@dataclass(frozen=True)
class MacCount:
    """MACs of one forward pass at `input_shape`, in total and per aten op (e.g. 'convolution', 'addmm')."""

    macs: int
    input_shape: tuple[int, ...]
    by_op: dict[str, int] = field(default_factory=dict)

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def attention_macs(self) -> int:
        return sum(v for k, v in self.by_op.items() if "scaled_dot_product" in k)


def _op_name(op: object) -> str:
    # OpOverloadPacket str() is 'aten.addmm'; keep the readable tail.
    return str(op).removeprefix("aten.")


def count_macs(
    model: nn.Module,
    resolution: int | tuple[int, int] = 224,
    batch_size: int = 1,
    in_chans: int = 3,
) -> MacCount:
    """Count the MACs of `model` on one input of `resolution` (batch 1 by default), attention included.

    The model is run in eval mode (restored afterwards) on random data on the model's device.
    """
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    input_shape = (batch_size, in_chans, height, width)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    counter = FlopCounterMode(display=False, custom_mapping=_missing_attention_formulas())
    was_training = model.training
    model.eval()
    try:
        with _frozen_parameters(model), counter:
            model(torch.randn(input_shape, device=device))
    finally:
        model.train(was_training)
    by_op = {_op_name(op): flops // 2 for op, flops in counter.get_flop_counts().get("Global", {}).items()}
    return MacCount(macs=counter.get_total_flops() // 2, input_shape=input_shape, by_op=by_op)


# --- MACs by operator class (for the latency breakdown, zoo.measure.breakdown) ---------------------------------------
OP_CLASSES: tuple[str, ...] = (
    "convolution", "depthwise conv", "matmul/linear", "attention", "normalization", "reshape/transpose", "resize",
    "elementwise", "other",
)
_MATMUL_OPS = {"mm", "addmm", "matmul", "linear"}
_ATTENTION_OPS = {"bmm", "baddbmm"}  # batched matmuls between activations: QKᵀ/AV, AFT's weighted sums


def macs_by_class(model: nn.Module, resolution: int | tuple[int, int] = 224) -> dict[str, int]:
    """MACs of one batch-1 forward grouped like the runtime profiles (only MAC-bearing classes are non-zero).

    Depthwise convolutions (groups == input channels > 1) are told apart from the others by a wrapper around
    torch's own convolution formula that records the MACs of depthwise calls on the side.
    """
    from torch.utils.flop_counter import conv_flop_count  # torch's own convolution formula, on shapes

    depthwise = [0]

    def conv_formula(x_shape, w_shape, bias, stride, padding, dilation, transposed, *args, out_shape=None, **kw):
        flops = conv_flop_count(x_shape, w_shape, out_shape, transposed=transposed)
        if not transposed and w_shape[1] == 1 and x_shape[1] > 1:  # one input channel per group: depthwise
            depthwise[0] += flops // 2
        return flops

    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    counter = FlopCounterMode(display=False, custom_mapping={
        **_missing_attention_formulas(), _aten.convolution: conv_formula})
    was_training = model.training
    model.eval()
    try:
        with _frozen_parameters(model), counter:
            model(torch.randn(1, 3, height, width))
    finally:
        model.train(was_training)
    classes = dict.fromkeys(OP_CLASSES, 0)
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        name, macs = _op_name(op), flops // 2
        if name == "convolution":
            classes["convolution"] += macs
        elif "scaled_dot_product" in name or name in _ATTENTION_OPS:
            classes["attention"] += macs
        elif name in _MATMUL_OPS:
            classes["matmul/linear"] += macs
        else:
            classes["other"] += macs
    classes["convolution"] -= depthwise[0]
    classes["depthwise conv"] = depthwise[0]
    return classes
