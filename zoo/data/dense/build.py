"""The dense data kinds of runs.yaml (`scattered-digits`, `coco`, `voc`): their typed `data.options` and their
train/val splits, built through `zoo.data.build_datasets` like every other kind.

Options (unknown ones are errors listing the allowed ones, reported with the runs file's name and key path):

* ``scattered-digits``: ``canvas`` (64 px), ``digits_per_image`` ([1, 4]), ``scale`` ([2, 3]), ``threshold``
  (0.5), ``seed`` (0: the images, the same for every run seed, as the digits' split is), ``train_size`` (1024),
  ``val_size`` (256); see `zoo.data.dense.scattered`. ``root`` unused.
* ``coco``: ``root`` with ``annotations/instances_{split}2017.json`` and ``{split}2017/``; ``train_split``
  ("train"), ``val_split`` ("val"), ``keep_crowd`` (false).
* ``voc``: ``root`` with ``VOCdevkit/VOC2012/``; ``train_split`` ("train"), ``val_split`` ("val").

The splits yield the sources' ``(image, target)`` samples at their own size; training resizes them per batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.data.dense.coco import CocoDetectionData
from zoo.data.dense.common import DenseDataError
from zoo.data.dense.scattered import DEFAULT_SIZES, ScatteredDigits, ScatterSpec
from zoo.data.dense.voc import VocSegmentationData
from zoo.data.options import typed_options
from zoo.data.splits import DataSplits


@dataclass(frozen=True)
class ScatteredOptions(ScatterSpec):
    """How the images are drawn (the `ScatterSpec` fields and defaults), plus the seed and the split sizes."""

    seed: int = 0
    train_size: int = DEFAULT_SIZES["train"]
    val_size: int = DEFAULT_SIZES["val"]

    def validate(self, source: str, path: str) -> None:
        for key in ("train_size", "val_size"):
            if getattr(self, key) < 1:
                raise DenseDataError(f"{source}: {path}.{key}: must be >= 1, got {getattr(self, key)}")
        try:
            self.check()
        except DenseDataError as err:  # its message names the field: say where it was set
            key, _, message = str(err).removeprefix("ScatteredDigits: ").partition(": ")
            raise DenseDataError(f"{source}: {path}.{key}: {message}") from None


@dataclass(frozen=True)
class CocoOptions:
    train_split: str = "train"
    val_split: str = "val"
    keep_crowd: bool = False


@dataclass(frozen=True)
class VocOptions:
    train_split: str = "train"
    val_split: str = "val"


DENSE_OPTIONS: dict[str, type] = {"scattered-digits": ScatteredOptions, "coco": CocoOptions, "voc": VocOptions}


def parse_dense_options(kind: str, options: Any, source: str = "build_datasets", path: str = "data.options") -> Any:
    if kind not in DENSE_OPTIONS:
        raise DenseDataError(f"{source}: data.kind: {kind!r} is not a dense kind (allowed: {', '.join(DENSE_OPTIONS)})")
    return typed_options(DENSE_OPTIONS[kind], kind, options, source, path, DenseDataError)


def build_dense(kind: str, root: Path | None, options: dict[str, Any]) -> DataSplits:
    """Train/val splits of dense kind `kind` (module docstring); a bad root raises `DenseDataError` naming it."""
    parsed = parse_dense_options(kind, options)
    if kind == "scattered-digits":
        knobs = dict(canvas=parsed.canvas, digits_per_image=parsed.digits_per_image, scale=parsed.scale,
                     threshold=parsed.threshold, seed=parsed.seed)
        train = ScatteredDigits("train", size=parsed.train_size, **knobs)
        val = ScatteredDigits("val", size=parsed.val_size, **knobs)
    elif root is None:
        raise DenseDataError(f"data.root: kind {kind!r} needs a root folder")
    elif kind == "coco":
        train = CocoDetectionData(root, parsed.train_split, keep_crowd=parsed.keep_crowd)
        val = CocoDetectionData(root, parsed.val_split, keep_crowd=parsed.keep_crowd)
    else:
        train, val = VocSegmentationData(root, parsed.train_split), VocSegmentationData(root, parsed.val_split)
    return DataSplits(train, val, train.num_classes, tuple(train.class_names))
