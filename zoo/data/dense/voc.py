"""PASCAL VOC 2012 segmentation (the MobileViT paper's DeepLabv3 task, at 512 px)
through torchvision's `VOCSegmentation`.

Layout: ``root/VOCdevkit/VOC2012/`` with ``ImageSets/Segmentation/{split}.txt`` (one image id a line),
``JPEGImages/<id>.jpg`` and ``SegmentationClass/<id>.png``: palette (or greyscale) PNGs whose values are the class
index, 0..20 (0 background), and 255 on object borders and unlabelled pixels (`IGNORE_INDEX`, not scored).
Checked when the data set is opened, each failure a `DenseDataError` naming what is missing: the VOC folder, the
split file (or an empty one), the image or mask folder, and the image or mask files of listed ids. A mask that is
not class indices (an RGB colour rendering, or a value outside 0..20 and 255) is named when it is read.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from zoo.data.dense.common import IGNORE_INDEX, DenseDataError, Sample, Transforms, default_transforms

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
SPLITS = ("train", "val", "trainval")  # torchvision's image sets for segmentation
LAYOUT = "a VOC root needs VOCdevkit/VOC2012/ with ImageSets/Segmentation/<split>.txt, JPEGImages/ and " \
         "SegmentationClass/"


class VocSegmentationData(Dataset):
    """VOC 2012 ``split`` as (float image [3, H, W], {"semantic": int64 [H, W]}); see the module docstring."""

    def __init__(self, root: str | os.PathLike[str], split: str = "train", *, size: int | None = None,
                 transforms: Transforms | None = None) -> None:
        from torchvision.datasets import VOCSegmentation

        if split not in SPLITS:
            raise DenseDataError(f"VOC split: unknown split {split!r} (allowed: {', '.join(SPLITS)})")
        root = Path(root).expanduser()
        self.voc_root = root / "VOCdevkit" / "VOC2012"
        check_layout(self.voc_root, split)
        self.base = VOCSegmentation(str(root), year="2012", image_set=split)
        self.num_classes = len(VOC_CLASSES)
        self.class_names = VOC_CLASSES
        self.transforms = transforms or default_transforms(size)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Sample:
        image, mask = self.base[index]
        target = {"semantic": tv_tensors.Mask(torch.from_numpy(_class_indices(mask, self.base.masks[index])))}
        return self.transforms(image, target)


def check_layout(voc_root: Path, split: str) -> list[str]:
    """The split's image ids, after checking every file they need is there."""
    if not voc_root.is_dir():
        raise DenseDataError(f"{voc_root}: folder missing; {LAYOUT}")
    split_file = voc_root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not split_file.is_file():
        raise DenseDataError(f"{split_file}: split file missing; {LAYOUT}")
    ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise DenseDataError(f"{split_file}: lists no image id; expected one id a line")
    for folder, extension in (("JPEGImages", ".jpg"), ("SegmentationClass", ".png")):
        _check_files(voc_root / folder, ids, extension, split_file)
    return ids


def _check_files(folder: Path, ids: list[str], extension: str, split_file: Path) -> None:
    if not folder.is_dir():
        raise DenseDataError(f"{folder}: folder missing; {LAYOUT}")
    present = set(os.listdir(folder))
    missing = [name + extension for name in ids if name + extension not in present]
    if missing:
        listed = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DenseDataError(f"{folder}: {len(missing)} file(s) of the ids in {split_file.name} missing: {listed}")


def _class_indices(mask: object, path: str) -> np.ndarray:
    mode = getattr(mask, "mode", None)
    if mode not in ("P", "L"):
        raise DenseDataError(f"{path}: mask mode {mode!r}; expected a palette or greyscale PNG of class indices "
                             f"0..{len(VOC_CLASSES) - 1} and {IGNORE_INDEX}")
    values = np.asarray(mask, dtype=np.int64)
    bad = np.setdiff1d(np.unique(values), [*range(len(VOC_CLASSES)), IGNORE_INDEX])
    if bad.size:
        raise DenseDataError(f"{path}: mask values {bad[:5].tolist()} are not classes; expected 0.."
                             f"{len(VOC_CLASSES) - 1} and {IGNORE_INDEX} (ignore)")
    return values
