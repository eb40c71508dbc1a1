"""What the dense (detection and segmentation) data sources share: their error, constants, image conversion and
the collate functions.

Every dense source yields ``(image, target)``: ``image`` a float32 ``[3, H, W]`` tensor in [0, 1]
(`tv_tensors.Image`), ``target`` a dict in torchvision's detection format (``boxes`` xyxy pixels as
`tv_tensors.BoundingBoxes`, ``labels`` int64 with 0 kept for the background) and/or ``semantic``, an int64
``[H, W]`` `tv_tensors.Mask` of class indices with `IGNORE_INDEX` where no class is scored. Because they are
tv_tensors, a `torchvision.transforms.v2` pipeline resizes or crops the image and its boxes and masks together.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from zoo.data.options import DataError

IGNORE_INDEX = 255  # segmentation pixels no class is scored on (VOC's object borders)

Sample = tuple[torch.Tensor, dict[str, Any]]
Transforms = Callable[[Any, Any], Sample]


class DenseDataError(DataError):
    """A detection/segmentation data set that cannot be used: a missing file, a file that does not parse, a box
    outside its image. The message names the file and what is expected. A `DataError`, and so a `ValueError` and a
    `ConfigError`: the command line reports it on one line and exits 2."""


def default_transforms(size: int | None = None) -> Transforms:
    """PIL/uint8 image -> float32 [0, 1] tensor, the targets alongside; with `size`, image and targets resized to
    size × size (boxes scaled, masks by nearest neighbour so class indices stay class indices)."""
    steps: list[Any] = [v2.ToImage()]
    if size is not None:
        steps.append(v2.Resize((size, size), antialias=True))
    steps.append(v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True))
    return v2.Compose(steps)


def collate_detection(batch: Sequence[Sample]) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """A list of images and a list of target dicts: what torchvision's detection models take (sizes may differ)."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)


def collate_segmentation(batch: Sequence[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images stacked to [B, 3, H, W] and semantic masks to [B, H, W] int64 (every sample the same size)."""
    images = torch.stack([torch.as_tensor(image) for image, _ in batch])
    masks = torch.stack([torch.as_tensor(target["semantic"]) for _, target in batch]).long()
    return images, masks
