"""EfficientFormerV2 (Li et al., arXiv 2212.08059), from timm, adapted so one instance runs at any input size.

timm's model is tied to its construction size in three ways (its `fixed_input_size` flag is right for once):

1. Each attention module learns a bias per head and per relative offset, a table of H·W entries for the H x W map
   it was built for, gathered through an (N_query, N_key) index buffer computed once for that map.
2. Its forward reshapes the attention output to the construction `resolution`.
3. The stride-2 attention of stage 3 upsamples its output by a fixed factor 2, which misses the input size
   whenever the map it halved was odd (40, 48 or 80 px inputs).

The adaptation, in the manner of `zoo.models.coatnet`:

1. The table is built for the largest map the samplers draw: timm's model is constructed at `max_input_size`
   (320 px, the top of the multi-scale set), which sizes each attention's table by its own stride (stride 32:
   10 x 10 offsets; the downsampling attention's keys at stride 16: 20 x 20). The index is rebuilt for the map
   each call actually sees (cached per size and device). timm's index is an absolute offset |dy|·W + |dx| into a
   table of width W, so indexing with the table's width W_table serves every smaller map exactly: a model built
   for a smaller size holds precisely the top-left h x w corner of this table (`sub_table`), no interpolation.
2. Reshapes read the size from the tensor.
3. Upsampling goes to the size of the map before the stride-2 conv (at even sizes identical to the factor 2).

timm also caches the gathered bias in eval mode and clears that cache only on `.train()`; an EMA copy, which
stays in eval mode while its weights move, would read a stale bias. Here the bias is gathered on every call (a
few thousand numbers) and only the integer index is cached.

At the construction size 224 the adapted model's logits equal timm's `efficientformerv2_s0` with the same weights
and its tables cut to 224's sub-tables (tests/test_hybrids.py). The larger tables add 3,264 parameters (0.09 %).

Export: `bake_for_export(model, resolution)` (the family's hook) stores each attention's gathered bias at that
resolution as a constant buffer, so the exported graph holds neither index computation nor gather.
"""
from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import ndgrid
from timm.models.efficientformer_v2 import Attention2d, Attention2dDownsample, EfficientFormerV2

from zoo.models.registry import FamilyHooks, Published, register
from zoo.models.timm_bridge import create_timm_model

MAX_INPUT_SIZE = 320  # the largest input the samplers draw (multi-scale set 160..320)
BAKED_BIAS = "export_attention_bias"


@functools.lru_cache(maxsize=256)
def bias_index(
    table_size: tuple[int, int], query_step: int, key_size: tuple[int, int], device: torch.device
) -> torch.Tensor:
    """(N_query, N_key) offsets |dy|·W_table + |dx| into a table of `table_size`, for keys on a `key_size` map and
    queries on every `query_step`-th key position (timm's construction, with the table's width)."""
    if key_size[0] > table_size[0] or key_size[1] > table_size[1]:
        raise ValueError(
            f"a {key_size[0]}x{key_size[1]} attention map exceeds the {table_size[0]}x{table_size[1]} bias table; "
            f"build the model with a larger max_input_size (default {MAX_INPUT_SIZE})"
        )
    # Outside inference mode: an index first built under torch.inference_mode() must still serve training.
    with torch.inference_mode(False):
        rows, cols = (torch.arange(n, device=device) for n in key_size)
        key_pos = torch.stack(ndgrid(rows, cols)).flatten(1)
        query_pos = torch.stack(ndgrid(rows[::query_step], cols[::query_step])).flatten(1)
        offset = (query_pos[:, :, None] - key_pos[:, None, :]).abs()
        return offset[0] * table_size[1] + offset[1]


def sub_table(table: torch.Tensor, table_size: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """The (heads, h·w) bias table a timm model built for an h x w map holds: the top-left corner of `table`."""
    heads = table.shape[0]
    return table.view(heads, *table_size)[:, : size[0], : size[1]].reshape(heads, -1)


class _AnySizeBias:
    """The bias for the current map: gathered from the table on every call, or the baked constant (export)."""

    attention_biases: nn.Parameter
    resolution: tuple[int, int]  # timm's construction map: the table's size
    query_step: int

    def bias_for(self, query_size: tuple[int, int], key_size: tuple[int, int]) -> torch.Tensor:
        baked = getattr(self, BAKED_BIAS, None)
        if baked is not None:
            if (query_size, key_size) != self.baked_sizes:
                raise ValueError(f"exported for query/key maps {self.baked_sizes}, got {(query_size, key_size)}")
            return baked
        index = bias_index(tuple(self.resolution), self.query_step, key_size, self.attention_biases.device)
        return self.attention_biases[:, index]

    def bake(self, query_size: tuple[int, int], key_size: tuple[int, int]) -> None:
        with torch.no_grad():
            bias = self.bias_for(query_size, key_size).detach().clone()
        self.register_buffer(BAKED_BIAS, bias, persistent=False)  # type: ignore[attr-defined]
        self.baked_sizes = (query_size, key_size)

    def _init_buffers(self) -> None:
        # timm's index buffer is not used (nor kept): the index follows the map size.
        self.attention_bias_cache = {}


class AnySizeAttention2d(_AnySizeBias, Attention2d):
    """timm's `Attention2d` (talking-head attention, optional stride-2 conv before it) at the input's size."""

    query_step = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, input_size = x.shape[0], tuple(x.shape[-2:])
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        size = tuple(x.shape[-2:])
        tokens = size[0] * size[1]
        q = self.q(x).reshape(batch, self.num_heads, -1, tokens).permute(0, 1, 3, 2)
        k = self.k(x).reshape(batch, self.num_heads, -1, tokens)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(batch, self.num_heads, -1, tokens).permute(0, 1, 3, 2)

        attn = (q @ k) * self.scale
        attn = attn + self.bias_for(size, size)
        attn = self.talking_head2(self.talking_head1(attn).softmax(dim=-1))

        x = (attn @ v).transpose(2, 3).reshape(batch, self.dh, *size) + v_local
        if self.upsample is not None:
            # Back to the map before the stride conv (2x at even sizes, where this equals timm's scale factor).
            x = F.interpolate(x, size=input_size, mode=self.upsample.mode, align_corners=self.upsample.align_corners)
        return self.proj(self.act(x))


class AnySizeAttention2dDownsample(_AnySizeBias, Attention2dDownsample):
    """timm's `Attention2dDownsample` (queries at stride 2, keys at the full map) at the input's size."""

    query_step = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, key_size = x.shape[0], tuple(x.shape[-2:])
        keys = key_size[0] * key_size[1]
        q = self.q(x)
        query_size = tuple(q.shape[-2:])
        q = q.reshape(batch, self.num_heads, -1, query_size[0] * query_size[1]).permute(0, 1, 3, 2)
        k = self.k(x).reshape(batch, self.num_heads, -1, keys)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(batch, self.num_heads, -1, keys).permute(0, 1, 3, 2)

        attn = (q @ k) * self.scale
        attn = (attn + self.bias_for(query_size, key_size)).softmax(dim=-1)

        x = (attn @ v).transpose(2, 3).reshape(batch, self.dh, *query_size) + v_local
        return self.proj(self.act(x))


_ANY_SIZE = {Attention2d: AnySizeAttention2d, Attention2dDownsample: AnySizeAttention2dDownsample}


def attention_modules(model: nn.Module) -> list[_AnySizeBias]:
    return [m for m in model.modules() if isinstance(m, _AnySizeBias)]


def make_any_size(model: EfficientFormerV2) -> EfficientFormerV2:
    """Adapt a timm EfficientFormerV2, in place: index, reshapes and upsampling follow the input size."""
    adapted = 0
    for module in model.modules():
        if type(module) in _ANY_SIZE:
            module.__class__ = _ANY_SIZE[type(module)]
            del module.attention_bias_idxs  # a non-persistent buffer for the construction size only
            module.attention_bias_cache = {}
            adapted += 1
    if not adapted:
        raise TypeError("no EfficientFormerV2 attention modules found")
    if isinstance(getattr(model, "pretrained_cfg", None), dict):
        model.pretrained_cfg["fixed_input_size"] = False  # tells timm's data helpers any size is fine
    return model


def _record_output_size(sizes: dict[int, tuple[int, int]], module: nn.Module, args: Any, output: Any) -> None:
    sizes[id(module)] = tuple(output.shape[-2:])


def bake_for_export(model: nn.Module, resolution: int) -> None:
    """In place (an eval-mode copy): each attention's bias at `resolution` x `resolution` becomes a constant.

    The query and key map sizes are read from one eager forward (the query and key projections' outputs), so
    they are the sizes the exported graph sees.
    """
    modules = attention_modules(model)
    sizes: dict[int, tuple[int, int]] = {}
    hook = functools.partial(_record_output_size, sizes)
    handles = [proj.register_forward_hook(hook) for m in modules for proj in (m.q, m.k)]
    parameter = next(model.parameters())
    try:
        with torch.no_grad():
            model(torch.zeros(1, model.in_chans, resolution, resolution, device=parameter.device,
                              dtype=parameter.dtype))
    finally:
        for handle in handles:
            handle.remove()
    for m in modules:
        m.bake(sizes[id(m.q)], sizes[id(m.k)])


@register(
    "efficientformerv2_s0",
    family="efficientformerv2",
    published=Published(
        params_m=3.5, gmacs=0.40, resolution=224, top1=75.7, arxiv="2212.08059", paper_device="iPhone 12",
        paper_latency_ms=0.9,
        source="arXiv 2212.08059, ImageNet-1k results (EfficientFormerV2-S0; 0.9 ms iPhone 12)",
    ),
    description="EfficientFormerV2-S0: 4D conv stages, talking-head attention with learned relative bias in the "
    "last two, widths (32, 48, 96, 176), distillation head averaged in; bias tables sized for inputs up to 320 px, "
    "index rebuilt per input size (timm efficientformerv2_s0)",
    hooks=FamilyHooks(bake_for_export=bake_for_export),
)
def efficientformerv2_s0(
    num_classes: int = 1000,
    drop_path_rate: float = 0.0,
    drop_rate: float | None = None,
    max_input_size: int = MAX_INPUT_SIZE,
    **knobs: Any,
) -> nn.Module:
    model = create_timm_model(
        "efficientformerv2_s0", num_classes=num_classes, drop_path_rate=drop_path_rate, drop_rate=drop_rate,
        img_size=max_input_size, **knobs,
    )
    return make_any_size(model)
