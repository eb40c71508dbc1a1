"""The architecture board's rows: every registered model, MobileViT's own ablations (patch sizes and fusion, as
knob variants under their `zoo.models.model_label`) and, when named, whole detectors and segmenters, each at its
deployment resolution (`zoo.models.registry.deploy_resolution`; a dense row: its head's) with a 1000-class head.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from zoo.measure.suite import build_model
from zoo.models import get_entry, list_models, model_label, model_name
from zoo.models.dense.deployable import DENSE_HEADS
from zoo.models.registry import deploy_resolution
from zoo.report.architectures.settings import MAX_RESOLUTION, MIN_RESOLUTION

__all__ = ["ABLATIONS", "DENSE", "DENSE_BACKBONES", "Architecture", "BoardError", "board_architectures",
           "check_resolutions", "dense_labels", "is_dense"]


@dataclass(frozen=True)
class Architecture:
    """One row of the board: a registry name with its knobs, at one resolution."""

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    resolution: int = 224

    @property
    def label(self) -> str:
        return model_label(self.name, dict(self.kwargs))


# MobileViT's ablations (arXiv 2110.02178, on MobileViT-S): patch sizes per stage, and no fusion skip.
# The default mobilevit_s is the (2, 2, 2) row. Paper figures: `zoo.report.published.MOBILEVIT_ABLATIONS`.
ABLATIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("mobilevit_s", {"patch_size": [3, 3, 3]}),
    ("mobilevit_s", {"patch_size": [4, 4, 4]}),
    ("mobilevit_s", {"patch_size": [8, 4, 2]}),
    ("mobilevit_s", {"fusion": False}),
)
# Whole detectors and segmenters (`zoo.models.dense.deployable`: the graph ends at the head, postprocessing
# outside), over the backbones of the MobileViT paper's downstream tables (arXiv 2110.02178, Tables 3 and 4), at
# the heads' deployment sizes (SSDLite 320 px, DeepLabv3 512 px) on the 1-thread runtimes, fp32 and int8.
DENSE_BACKBONES: tuple[str, ...] = ("mobilenetv2_100", "mobilevit_xxs", "mobilevit_xs", "mobilevit_s")
DENSE: tuple[tuple[str, dict[str, Any]], ...] = tuple(
    (backbone, {"head": head}) for head in ("ssdlite", "deeplabv3") for backbone in DENSE_BACKBONES)


class BoardError(ValueError):
    """Bad input for the board (a resolution a model cannot take): one line naming it and what is allowed."""


def _known_labels() -> dict[str, tuple[str, dict[str, Any]]]:
    known = {name: (name, {}) for name in list_models()}
    known.update({model_label(name, kwargs): (name, kwargs) for name, kwargs in (*ABLATIONS, *DENSE)})
    return known


def dense_labels() -> list[str]:
    """The labels of the `DENSE` rows (`--models $(...)`, or `--dense`): not in the default board yet, since their
    exports at 320/512 px take about as long again as the classifiers'."""
    return [model_label(name, kwargs) for name, kwargs in DENSE]


def is_dense(arch: Architecture) -> bool:
    return "head" in arch.kwargs


def _row_resolution(label: str, kwargs: Mapping[str, Any]) -> int:
    return DENSE_HEADS[kwargs["head"]].resolution if "head" in kwargs else deploy_resolution(label)


def board_architectures(models: Sequence[str] | None = None, resolution: int | None = None) -> list[Architecture]:
    """The board's rows: `models` (registry names, ablation or detector/segmenter labels; default every
    registered model, then the ablations; `DENSE` rows only when named, with `dense_labels()`), each at `resolution` or its deployment resolution (a
    dense row: its head's). Unknown names raise the registry's error."""
    known = _known_labels()
    dense = {model_label(name, kwargs) for name, kwargs in DENSE}
    chosen = list(models) if models else [label for label in known if label not in dense]
    rows = []
    for label in chosen:
        if label not in known:
            get_entry(model_name(label))  # an unknown name: the registry's message, with the known names
            variants = [k for k in known if "[" in k]
            raise BoardError(f"unknown variant {label!r}; the board's variants: {', '.join(variants)}")
        name, kwargs = known[label]
        rows.append(Architecture(name, kwargs, resolution or _row_resolution(label, kwargs)))
    return rows


def check_resolutions(architectures: Sequence[Architecture]) -> None:
    """Raise BoardError for a resolution out of range, or one a model's forward pass refuses."""
    for arch in architectures:
        if not MIN_RESOLUTION <= arch.resolution <= MAX_RESOLUTION:
            raise BoardError(f"resolution {arch.resolution} is out of range: allowed {MIN_RESOLUTION}–"
                             f"{MAX_RESOLUTION} px")
        model = build_model(arch.label, arch.kwargs).eval()
        try:
            with torch.inference_mode():
                model(torch.zeros(1, 3, arch.resolution, arch.resolution))
        except Exception as error:
            raise BoardError(f"{arch.label} cannot take {arch.resolution} px ({type(error).__name__}: "
                             f"{str(error).splitlines()[0][:120] if str(error) else ''}); its deployment "
                             f"resolution is {deploy_resolution(arch.label)} px") from error
