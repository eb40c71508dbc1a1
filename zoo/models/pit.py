"""PiT (Heo et al., arXiv 2103.16302) from timm, adapted so one instance runs at any input size.

The only part of timm's PiT tied to the construction size is the learned position-embedding map
(1, C, H', W') that `forward_features` adds to the patch grid: the overlapping patch conv (kernel 16, stride 8)
and the depthwise pooling convs work at any size, timm 1.0.31's `ConvEmbedding` has no size assert, and the
class tokens carry no spatial layout. `AnySizePiT` resizes the map to the token grid of each input, bicubic with
antialiasing (as timm's `dynamic_img_size` ViTs do, so DeiT and PiT are treated alike). At the construction grid
the map is used as is, so the logits equal timm's exactly. The resize is not cached: it is a few microseconds
and, since the map is a trained parameter, a cache would go stale after every optimiser step.

Inputs must be at least 16 pixels (one patch).

Family hooks: built at the run's base resolution (its position map is tied to the construction size), and for
export at a grid other than the construction one the resize (antialiased bicubic, which no phone exporter
lowers) is evaluated once by the model's own `position_embedding` and stored as a buffer; the baked copy then
refuses other sizes.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.pit import PoolingVisionTransformer

from zoo.models.export import BAKED_BUFFER, reclass
from zoo.models.features import FeatureLevel, StagedFeatures
from zoo.models.registry import FamilyHooks, Published
from zoo.models.timm_bridge import mark_any_input_size, register_timm


class AnySizePiT(PoolingVisionTransformer):
    """timm's PiT with the position-embedding map resized to each input's token grid.

    It adds no parameters or buffers, so its state_dict is timm's, key for key.
    """

    @classmethod
    def from_timm(cls, model: PoolingVisionTransformer) -> "AnySizePiT":
        # timm built and initialised the network; the subclass only adds behaviour (no state), so re-classing
        # the instance keeps timm's weights, state_dict keys and methods (reset_classifier, no_weight_decay...).
        model.__class__ = cls
        return mark_any_input_size(model)

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """The (1, C, *grid) position-embedding map for a token grid."""
        if tuple(self.pos_embed.shape[-2:]) == grid:
            return self.pos_embed
        return F.interpolate(self.pos_embed, size=grid, mode="bicubic", align_corners=False, antialias=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = self.pos_drop(x + self.position_embedding(tuple(x.shape[-2:])))
        cls_tokens = self.cls_token.expand(x.shape[0], -1, -1)
        _, cls_tokens = self.transformers((x, cls_tokens))
        return self.norm(cls_tokens)

    def token_grid(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The patch grid the overlapping patch conv makes from an image of `image_size` (H, W)."""
        conv = self.patch_embed.conv
        return tuple(  # type: ignore[return-value]
            (size + 2 * pad - kernel) // stride + 1
            for size, kernel, stride, pad in zip(image_size, conv.kernel_size, conv.stride, conv.padding)
        )

    def forward_intermediates(self, x: torch.Tensor, *args: Any, **kwargs: Any):  # type: ignore[override]
        # timm's version adds the fixed-size map, so it is only right at the construction grid: say so plainly.
        grid = self.token_grid(tuple(x.shape[-2:]))
        if grid != tuple(self.pos_embed.shape[-2:]):
            raise NotImplementedError(
                f"forward_intermediates runs only at the construction size (token grid "
                f"{tuple(self.pos_embed.shape[-2:])}, got {grid}); forward and forward_features take any size."
            )
        return super().forward_intermediates(x, *args, **kwargs)


def _baked_position_embedding(self: AnySizePiT, grid: tuple[int, int]) -> torch.Tensor:
    baked = getattr(self, BAKED_BUFFER)
    if tuple(baked.shape[-2:]) != tuple(grid):
        raise ValueError(f"exported for token grid {tuple(baked.shape[-2:])}, got {tuple(grid)}")
    return baked


def bake_pit_for_export(model: nn.Module, resolution: int) -> None:
    """In place, on an eval copy: the position map at `resolution`'s token grid, stored as a buffer."""
    grid = model.token_grid((resolution, resolution))
    with torch.no_grad():
        baked = model.position_embedding(grid)  # the eager model's own resize at this grid
    model.register_buffer(BAKED_BUFFER, baked.detach().clone(), persistent=False)
    reclass(model, {"position_embedding": _baked_position_embedding})


class PiTFeatures(StagedFeatures):
    """The features hook: PiT's three stages are the levels, strides 8, 16, 32 (timm's `feature_info`), the
    position map resized to each input's grid as in `forward_features` (timm's `forward_intermediates` adds it
    unresized). The patch conv is unpadded (kernel 16, stride 8), so the stride-8 map has floor((H - 16)/8) + 1
    rows: one fewer than H/8 at multiples of 8. The class tokens travel along (the blocks attend to them) and
    are dropped from the maps."""

    def __init__(self, model: AnySizePiT) -> None:
        levels = [FeatureLevel(int(info["reduction"]), int(info["num_chs"])) for info in model.feature_info]
        super().__init__(model, levels)
        model.prune_intermediate_layers(len(model.transformers), prune_norm=True, prune_head=True)

    def stage(self, index: int, state: Any) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        if index == 0:
            x = model.patch_embed(state)
            x = model.pos_drop(x + model.position_embedding(tuple(x.shape[-2:])))
            state = (x, model.cls_token.expand(x.shape[0], -1, -1))
        return model.transformers[index](state)

    def feature(self, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return state[0]

    def prune_after(self, index: int) -> None:
        self.model.transformers = self.model.transformers[: index + 1]


PIT_HOOKS = FamilyHooks(sized_at_base_resolution=True, bake_for_export=bake_pit_for_export, features=PiTFeatures)


_PAPER = "arXiv 2103.16302"
# MobileViT's Table 3 sets PiT-Ti against DeiT-Ti: about half the GMACs, hardly less latency on a phone.
pit_ti = register_timm(
    "pit_ti", "pit_ti_224", family="pit", hooks=PIT_HOOKS, adapt=AnySizePiT.from_timm,
    published=Published(params_m=4.9, gmacs=0.70, resolution=224, top1=73.0, source=f"PiT-Ti, {_PAPER}",
                        arxiv="2103.16302", epochs=300, distilled=False, paper_device="iPhone 12 Neural Engine",
                        paper_latency_ms=10.56, paper_cpu_latency_ms=24.03, latency_source="arXiv 2110.02178 Table 3",
                        compared_with="deit_tiny"),
    description="PiT-Ti: base dim 32, depths (2, 6, 4), heads (2, 4, 8), pooling between stages (timm pit_ti_224)")
pit_xs = register_timm(
    "pit_xs", "pit_xs_224", family="pit", hooks=PIT_HOOKS, adapt=AnySizePiT.from_timm,
    published=Published(params_m=10.6, gmacs=1.40, resolution=224, top1=78.1, source=f"PiT-XS, {_PAPER}",
                        arxiv="2103.16302", epochs=300, distilled=False),
    description="PiT-XS: base dim 48, depths (2, 6, 4), heads (2, 4, 8), pooling between stages (timm pit_xs_224)")
