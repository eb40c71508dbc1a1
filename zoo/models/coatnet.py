"""CoAtNet (Dai et al., arXiv 2106.04803), C-C-T-T, from timm, adapted so one instance runs at any input size.

timm's CoAtNet transformer stages ('T' blocks) attend globally over the whole feature map (no windows or grids:
those belong to MaxViT), with a relative-position bias over every pair of positions. That bias is the only part
tied to the construction size. Two ways out were measured (see below); we use (a):

(a) timm's `rmlp` variants: the bias comes from a small MLP over log-spaced relative coordinates, so its
    parameters do not depend on the size; only the coordinate table and the pair index do. `AnySizeRelPosMlp`
    builds those for the feature size each attention call actually sees (cached per size, shared by all blocks).
(b) table variants: resize each learned (2H-1)x(2W-1) bias table to the new size on every forward.

Why (a): the same parameters mean the same thing at every size (an offset of k feature pixels gets the same
bias whether the batch is 160 or 320 pixels), so multi-scale training never pushes one table through a different
interpolation per batch; timm reports it slightly better than the table variant at 224 (82.05 vs 81.70 top-1);
it costs about the same. Measured on this shared 2-core CPU (1 thread, throwaway scripts not kept in the repo):
params 15.15 M (a) vs 15.14 M (b, coatnet_nano_rw_224); eval forward, batch 8, adapted instance built at 224:
(a) 1.71-1.85 s at 224, 2.19-2.26 s at 256; (b) 1.02-1.78 s at 224, 2.06-2.31 s at 256 (machine noise is
larger than the gap); the bias alone, forward+backward over all 9 'T' blocks: (a) 51/75/122 ms at 224/256/320,
(b) 22/40/123 ms, against ~5 s for a batch-8 training step, which convolutions dominate. Both adapted models
ran at every size 32..320; neither timm model runs at 48 or 80 even when built for that size.

Also size-dependent in timm: the feature sizes it precomputes round up ((r - 1) // 2 + 1) while the 2x2 average
pools of the 'T' blocks round down, so even a model built for 48 or 80 pixels fails; reading the size from the
tensor each call fixes that as well (odd maps lose their last row/column in the pool, as in timm).

Registered: `coatnet_nano` (timm coatnet_rmlp_nano_rw_224) and `coatnet_pico`, timm's pico layout given the
same MLP bias (timm has no rmlp pico; the parameter count moves by 0.001 M).
"""
from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import RelPosMlp, gen_relative_log_coords, gen_relative_position_index
from timm.models.maxxvit import Attention2d, MaxxVit, TransformerBlock2d

from zoo.models.registry import Published
from zoo.models.timm_bridge import mark_any_input_size, register_timm


@functools.lru_cache(maxsize=128)
def relative_position_tables(
    size: tuple[int, int], device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pair index (N*N,), log relative coordinates (2H-1, 2W-1, 2)) for an H x W map, as timm builds them."""
    # Outside inference mode: tables first built under torch.inference_mode() must still be usable in training.
    with torch.inference_mode(False):
        index = gen_relative_position_index(size, device=device).view(-1)
        coords = gen_relative_log_coords(size, mode="cr", device=device, dtype=dtype)
    return index, coords


class AnySizeRelPosMlp(nn.Module):
    """timm's MLP relative-position bias (mode 'cr'), evaluated for the feature size of the current input.

    Holds timm's MLP unchanged (same state_dict keys); `feature_size` is set by a forward pre-hook on the
    attention module just before each call.
    """

    def __init__(self, source: RelPosMlp) -> None:
        super().__init__()
        if source.mode != "cr" or source.prefix_tokens or source.bias_gain is not None:
            raise ValueError(f"only the plain 'cr' log-coordinate MLP bias is supported, got mode {source.mode!r}")
        self.mlp = source.mlp
        self.num_heads = source.num_heads
        self.feature_size: tuple[int, int] = tuple(source.window_size)  # type: ignore[assignment]

    def set_window_size(self, window_size: tuple[int, int]) -> None:
        """timm's `set_input_size` interface; unnecessary here, every forward uses the size it sees."""
        self.feature_size = tuple(window_size)  # type: ignore[assignment]

    def get_bias(self) -> torch.Tensor:
        """The bias (1, heads, N, N) for the current feature size, N = H * W."""
        weight = self.mlp.fc1.weight
        index, coords = relative_position_tables(self.feature_size, weight.device, weight.dtype)
        area = self.feature_size[0] * self.feature_size[1]
        bias = self.mlp(coords).view(-1, self.num_heads)[index].view(area, area, self.num_heads)
        return bias.permute(2, 0, 1).unsqueeze(0).contiguous()

    def forward(self, attn: torch.Tensor, shared_rel_pos: torch.Tensor | None = None) -> torch.Tensor:
        return attn + self.get_bias()


def _follow_feature_size(attn: nn.Module, args: tuple[Any, ...]) -> None:
    # A module-level function (not a closure) so models with it still deepcopy (EMA) and pickle.
    attn.rel_pos.feature_size = tuple(args[0].shape[-2:])


MIN_INPUT = 32  # the total stride: below it a stage's 2x2 pool meets a 1x1 map


def _pad_to_min_size(model: nn.Module, args: tuple[Any, ...]) -> tuple[torch.Tensor] | None:
    # Zero-pad (bottom/right) inputs smaller than the total stride, e.g. the 24 px of a small multi-scale set.
    x = args[0]
    pad_h, pad_w = max(0, MIN_INPUT - x.shape[-2]), max(0, MIN_INPUT - x.shape[-1])
    return (F.pad(x, (0, pad_w, 0, pad_h)),) if pad_h or pad_w else None


def make_any_size(model: MaxxVit) -> MaxxVit:
    """Adapt a timm CoAtNet with MLP relative-position bias, in place, to run at any input size."""
    if any(hasattr(module, "set_partition_size") for module in model.modules()):
        raise TypeError("window/grid partition blocks (MaxViT) are not CoAtNet blocks; not supported here")
    blocks = [module for module in model.modules() if isinstance(module, TransformerBlock2d)]
    if not blocks:
        raise TypeError("no CoAtNet transformer blocks found")
    for block in blocks:
        attn: Attention2d = block.attn
        if not isinstance(attn.rel_pos, RelPosMlp):
            raise TypeError(f"expected timm's RelPosMlp (an 'rmlp' CoAtNet), got {type(attn.rel_pos).__name__}")
        attn.rel_pos = AnySizeRelPosMlp(attn.rel_pos)
        attn.register_forward_pre_hook(_follow_feature_size)
    model.register_forward_pre_hook(_pad_to_min_size)
    return mark_any_input_size(model)


coatnet_nano = register_timm(
    "coatnet_nano", "coatnet_rmlp_nano_rw_224", family="coatnet", adapt=make_any_size,
    published=Published(params_m=15.15, gmacs=2.62, resolution=224, top1=82.05,
                        source="timm coatnet_rmlp_nano_rw_224.sw_in1k (timm results table)"),
    description="CoAtNet nano C-C-T-T, widths (64, 128, 256, 512), depths (3, 4, 6, 3), MLP relative-position "
    "bias (timm coatnet_rmlp_nano_rw_224)")
# timm has no rmlp pico, so the pico layout takes the nano rmlp's bias MLP (hidden 384) through timm's overlay.
coatnet_pico = register_timm(
    "coatnet_pico", "coatnet_pico_rw_224", family="coatnet", adapt=make_any_size,
    defaults={"transformer_rel_pos_type": "mlp", "transformer_rel_pos_dim": 384},
    published=Published(
        params_m=10.85, gmacs=2.05, resolution=224,
        source="timm coatnet_pico_rw_224 (table bias, untrained in timm); here with the rmlp MLP bias: +0.001 M"),
    description="CoAtNet pico C-C-T-T, widths (64, 128, 256, 512), depths (2, 3, 5, 2), MLP relative-position "
    "bias (timm coatnet_pico_rw_224 with transformer_rel_pos_type='mlp', as in the rmlp nano)")
