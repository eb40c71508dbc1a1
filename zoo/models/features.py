"""Multi-scale features of every zoo model: `feature_backbone(name, out_strides)` -> `FeatureBackbone`.

One route for every model: timm's feature protocol, wrapped by timm's own `FeatureGetterNet` (what
`timm.create_model(..., features_only=True, feature_cls="getter")` builds). The protocol is a model's
`feature_info` (channels and stride of each level), `forward_intermediates(x, indices, intermediates_only=True)`
and `prune_intermediate_layers(indices)` (drops the classifier and every layer past the deepest level asked for).

- timm-built families speak it already, and the zoo instance is used, not a fresh timm model, so the zoo's
  adaptations stay in force at every input size (CoAtNet's relative-position tables rebuilt per map,
  EfficientFormerV2's bias index per map, the stochastic depth zoo adds to EfficientViT and RepViT).
- A family whose classifier does not speak it, or speaks it only at the construction size, declares a
  `features` hook (`FamilyHooks.features`): the classifier in, a `StagedFeatures` out. MobileViT (and its AFT
  variants), the AFT ViTs, DeiT and PiT have one; their docstrings say what they expose.

A level is named by its stride (total downsampling; the map at stride s of an H x W input has about H/s rows:
ceil(H/s) for padded convolutions, within a row of it where a family crops or rounds, as PiT's unpadded patch conv
or MobileViTv2's rounding up to its patch size). Where several levels share a stride (a ViT's blocks), the deepest
is the level. The hook's adapter keeps the classifier as a child, so the backbone's parameters are the
classifier's, under the same names (`FeatureBackbone.classifier`): a trained classifier's checkpoint loads into it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch.nn as nn
import torch.nn.functional as F
from timm.models._features import FeatureGetterNet, feature_take_indices
from torch import Tensor

from zoo.models.registry import create, get_entry

__all__ = [
    "FeatureBackbone", "FeatureLevel", "MissingFeatureError", "StagedFeatures", "feature_backbone", "halve",
]


class MissingFeatureError(ValueError):
    """A backbone without features at a stride that is asked for; the one-line message names the model, the
    strides it has and the strides needed (exit 2 at the command line)."""


@dataclass(frozen=True)
class FeatureLevel:
    """One level of a feature pyramid: its stride (input pixels per map pixel) and channels."""

    stride: int
    channels: int


class StagedFeatures(nn.Module):
    """timm's feature protocol over a zoo classifier, for a family's `features` hook.

    A subclass lists its `levels` and implements `stage(index, state)`: stage 0 takes the image, stage i the
    state stage i-1 returned; `feature(state)` reads the level's NCHW map from it (the state itself by default;
    PiT carries its class tokens along). `prune_after(index)` removes the modules only later stages use.
    The classifier is kept as `self.model`, its head removed by the subclass.
    """

    def __init__(self, model: nn.Module, levels: Sequence[FeatureLevel]) -> None:
        super().__init__()
        self.model = model
        self.levels = list(levels)
        self.num_stages = len(self.levels)
        self.feature_info = [
            {"num_chs": level.channels, "reduction": level.stride, "module": f"stage{i}"}
            for i, level in enumerate(self.levels)
        ]

    def stage(self, index: int, state: Any) -> Any:
        raise NotImplementedError

    def feature(self, state: Any) -> Tensor:
        return state

    def prune_after(self, index: int) -> None:
        """Remove the modules only stages after `index` use (none by default)."""

    def forward_intermediates(self, x: Tensor, indices: int | Sequence[int] | None = None, norm: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = True,
                              stop_early: bool = True) -> list[Tensor]:
        if output_fmt != "NCHW" or not intermediates_only:
            raise ValueError("zoo feature adapters return NCHW intermediates only")
        take, last = feature_take_indices(self.num_stages, indices)
        maps, state = [], x
        for index in range(last + 1):
            state = self.stage(index, state)
            if index in take:
                maps.append(self.feature(state))
        return maps

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        take, last = feature_take_indices(self.num_stages, indices)
        self.prune_after(last)
        self.num_stages = last + 1
        return take


def halve(x: Tensor) -> Tensor:
    """The next level of a single-stride (ViT) backbone: a 2x2 stride-2 max-pool, as ViTDet's simple feature
    pyramid makes its stride-32 map from the stride-16 one (arXiv 2203.16527); ceil mode, so an odd map of
    n rows gives ceil(n/2), as a padded stride-2 convolution would. No parameters."""
    return F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)


class FeatureBackbone(nn.Module):
    """A zoo model's feature maps at `strides` (NCHW, `channels` each), shallowest first."""

    def __init__(self, name: str, body: FeatureGetterNet, strides: Sequence[int], channels: Sequence[int]) -> None:
        super().__init__()
        self.name = name
        self.body = body
        self.strides = list(strides)
        self.channels = list(channels)

    @property
    def classifier(self) -> nn.Module:
        """The classifier the features come from (head and unused layers removed), under its own names."""
        model = self.body.model
        return model.model if isinstance(model, StagedFeatures) else model

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(self.body(x))


def _strides_by_index(feature_info: Sequence[dict[str, Any]]) -> dict[int, int]:
    # stride -> index of its deepest level
    return {int(info["reduction"]): index for index, info in enumerate(feature_info)}


def feature_backbone(name: str, out_strides: Sequence[int] | None = None, *, image_size: int | None = None,
                     needed_by: str = "", **knobs: Any) -> FeatureBackbone:
    """Features of registered model `name` at `out_strides` (default: every stride it has), built with `knobs`
    (as `zoo.models.create`). A family whose position grid is tied to its construction size is built for
    `image_size` when given (as training builds it for its base resolution); any size still runs. A stride it
    lacks raises `MissingFeatureError`, saying who needs it (`needed_by`, e.g. "SSDLite")."""
    entry = get_entry(name)
    if image_size is not None and entry.hooks.sized_at_base_resolution:
        knobs.setdefault("img_size", image_size)
    # One class: the head goes in the pruning below (0 classes would build a zero-size Linear in ours, which warns).
    model = create(name, num_classes=1, **knobs)
    hook = entry.hooks.features
    adapted = hook(model) if hook is not None else model
    if not hasattr(adapted, "forward_intermediates") or not isinstance(getattr(adapted, "feature_info", None),
                                                                       (list, tuple)):
        raise MissingFeatureError(f"{name}: exposes no multi-scale features (no timm feature_info/"
                                  f"forward_intermediates and no features hook in its family)")
    by_stride = _strides_by_index(adapted.feature_info)
    # Ascending: the maps come back in level order.
    strides = sorted(by_stride) if out_strides is None else sorted({int(s) for s in out_strides})
    missing = [s for s in strides if s not in by_stride]
    if missing:
        who = f"{needed_by} needs" if needed_by else "asked for"
        raise MissingFeatureError(
            f"{name}: no features at stride {', '.join(map(str, missing))}; it has strides "
            f"{', '.join(map(str, sorted(by_stride)))}; {who} {', '.join(map(str, strides))}"
        )
    indices = [by_stride[s] for s in strides]
    body = FeatureGetterNet(adapted, out_indices=indices, prune=True)
    channels = [int(adapted.feature_info[i]["num_chs"]) for i in indices]
    return FeatureBackbone(name, body, strides, channels)
