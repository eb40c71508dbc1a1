"""COCO detection (the MobileViT paper's SSDLite task, at 320 px) through torchvision's
`CocoDetection` (pycocotools reads the annotation file).

Layout: ``root/annotations/instances_{split}2017.json`` and the images in ``root/{split}2017/``. Checked when the
data set is opened, each failure a `DenseDataError` naming the file and what is expected: a missing annotation
file or image folder; an annotation file that is not JSON (with the parse error's line, column and character), or
not COCO's object of ``images`` / ``annotations`` / ``categories`` lists; an annotation naming an unknown image or
category; a box ``[x, y, w, h]`` with a negative size or outside its image by more than `BOX_TOLERANCE` px; image
files the annotation file lists but the folder lacks.

Labels: COCO's category ids (1..90, with gaps) mapped in their sorted order to contiguous 1..C (C = 80 for COCO),
0 kept for the background; ``category_ids[label - 1]`` maps back. Crowd annotations (``iscrowd`` = 1) are left out
unless ``keep_crowd`` (COCO's evaluation ignores them; a detector should not be taught them as objects). Boxes are
clamped to the image (within the tolerance) and those left without area are dropped.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.ops import box_convert

from zoo.data.dense.common import DenseDataError, Sample, Transforms, default_transforms

BOX_TOLERANCE = 1.0  # px a box may overhang its image (COCO's own boxes round to the pixel)


class CocoDetectionData(Dataset):
    """COCO ``split`` (train, val) as (float image [3, H, W], detection target); see the module docstring."""

    def __init__(self, root: str | os.PathLike[str], split: str = "val", *, size: int | None = None,
                 transforms: Transforms | None = None, keep_crowd: bool = False) -> None:
        from torchvision.datasets import CocoDetection

        root = Path(root).expanduser()
        self.annotation_file = root / "annotations" / f"instances_{split}2017.json"
        self.image_dir = root / f"{split}2017"
        _require(self.annotation_file, "annotation file", split, is_dir=False)
        _require(self.image_dir, "image folder", split, is_dir=True)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its loading times
                self.base = CocoDetection(str(self.image_dir), str(self.annotation_file))
        except json.JSONDecodeError as err:
            raise DenseDataError(f"{self.annotation_file}: not valid JSON: {err.msg} at line {err.lineno} column "
                                 f"{err.colno} (char {err.pos}); expected COCO's instances JSON") from None
        except (UnicodeDecodeError, AssertionError, KeyError, TypeError) as err:
            raise DenseDataError(f"{self.annotation_file}: not a COCO instances file ({type(err).__name__}: {err}); "
                                 f"expected an object with images, annotations and categories lists") from None
        self.category_ids = check_annotations(self.base.coco.dataset, self.annotation_file)
        _check_image_files(self.base.coco.dataset["images"], self.image_dir, self.annotation_file)
        self.label_of = {category: label for label, category in enumerate(self.category_ids, start=1)}
        names = {c["id"]: str(c.get("name", c["id"])) for c in self.base.coco.dataset["categories"]}
        self.class_names = ("background", *(names[c] for c in self.category_ids))
        self.num_classes = len(self.class_names)
        self.keep_crowd = keep_crowd
        self.transforms = transforms or default_transforms(size)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Sample:
        image, annotations = self.base[index]
        image_id = self.base.ids[index]
        kept = [a for a in annotations if self.keep_crowd or not a.get("iscrowd", 0)]
        width, height = image.size
        boxes = box_convert(torch.tensor([a["bbox"] for a in kept], dtype=torch.float32).reshape(-1, 4),
                            "xywh", "xyxy")
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        has_area = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes[has_area], format="XYXY", canvas_size=(height, width)),
            "labels": torch.tensor([self.label_of[a["category_id"]] for a in kept], dtype=torch.int64)[has_area],
            "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in kept], dtype=torch.int64)[has_area],
            "image_id": int(image_id),
        }
        return self.transforms(image, target)


def _require(path: Path, what: str, split: str, *, is_dir: bool) -> None:
    if path.is_dir() if is_dir else path.is_file():
        return
    raise DenseDataError(f"{path}: {what} missing; a COCO root needs annotations/instances_{split}2017.json "
                         f"and the images in {split}2017/")


def check_annotations(data: Any, source: Path) -> tuple[int, ...]:
    """Check a parsed COCO instances file; returns its category ids, sorted (label l is category_ids[l - 1])."""
    if not isinstance(data, dict):
        raise DenseDataError(f"{source}: expected a JSON object with images, annotations and categories lists")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DenseDataError(f"{source}: {key}: expected a list, got {type(data.get(key)).__name__}")
    try:
        sizes = {image["id"]: (float(image["width"]), float(image["height"])) for image in data["images"]}
        categories = {category["id"] for category in data["categories"]}
    except (KeyError, TypeError, ValueError) as err:
        raise DenseDataError(f"{source}: images need id, width, height and file_name, categories an id "
                             f"({type(err).__name__}: {err})") from None
    for annotation in data["annotations"]:
        _check_annotation(annotation, sizes, categories, source)
    return tuple(sorted(categories))


def _check_annotation(annotation: Any, sizes: dict[Any, tuple[float, float]], categories: set[Any],
                      source: Path) -> None:
    where = f"{source}: annotation {annotation.get('id')!r}" if isinstance(annotation, dict) else f"{source}"
    if not isinstance(annotation, dict) or annotation.get("image_id") not in sizes:
        image = annotation.get("image_id") if isinstance(annotation, dict) else annotation
        raise DenseDataError(f"{where}: image_id {image!r} is not among the file's images")
    if annotation.get("category_id") not in categories:
        raise DenseDataError(f"{where}: category_id {annotation.get('category_id')!r} is not among the file's "
                             f"categories ({', '.join(str(c) for c in sorted(categories, key=str))})")
    box = annotation.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
        raise DenseDataError(f"{where}: bbox must be [x, y, width, height] numbers, got {box!r}")
    x, y, w, h = box
    width, height = sizes[annotation["image_id"]]
    inside = (x >= -BOX_TOLERANCE and y >= -BOX_TOLERANCE and x + w <= width + BOX_TOLERANCE
              and y + h <= height + BOX_TOLERANCE)
    if w < 0 or h < 0 or not inside:
        raise DenseDataError(
            f"{where} of image {annotation['image_id']!r}: box [x, y, w, h] = {box} lies outside the "
            f"{width:g}x{height:g} image; need w, h >= 0, x, y >= 0 and x + w <= width, y + h <= height "
            f"(within {BOX_TOLERANCE:g} px)")


def _check_image_files(images: list[dict[str, Any]], folder: Path, source: Path) -> None:
    present = set(os.listdir(folder))  # one listing, not a stat per image: train2017 holds 118k files
    names = [str(image["file_name"]) for image in images]
    missing = [name for name in names if name not in present and not (folder / name).is_file()]
    if missing:
        listed = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DenseDataError(f"{folder}: {len(missing)} image file(s) listed in {source.name} missing: {listed}")
