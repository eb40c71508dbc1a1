"""DeepLabv3 over any zoo backbone: torchvision's `DeepLabHead` (ASPP) on one backbone level.

The recipe, the same for every backbone (this module never names one):

- features: the backbone's level at `output_stride` 16 or 32 (`zoo.models.features`), its deepest map at that
  stride; the layers after it are pruned. The backbone is not dilated (its own strides are kept: a hybrid's
  attention and a ViT's tokens have no dilated form), so output stride 16 reads a shallower level than 32;
- head: torchvision's `DeepLabHead`: ASPP with 256 channels (a 1x1 branch, three 3x3 atrous branches and an
  image-pooling branch, then a 1x1 projection and dropout 0.5), a 3x3 conv, BatchNorm, ReLU, a 1x1 classifier;
- ASPP rates: the DeepLabv3 paper's (6, 12, 18) at output stride 16, halved to (3, 6, 9) at 32, so each rate
  covers the same image area (torchvision's default (12, 24, 36) is the paper's output stride 8);
- output: the logits upsampled bilinearly (align_corners False, as torchvision) to the input size;
- input: images in [0, 1], normalised inside with ImageNet's mean and std (what the zoo's classifiers are
  trained with), as the detector does.

Training needs batches of 2 or more images: the image-pooling branch has a BatchNorm over a 1 x 1 map.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from zoo.models.features import FeatureBackbone, feature_backbone

__all__ = ["ASPP_RATES", "Segmenter", "build_segmenter"]

ASPP_RATES: dict[int, tuple[int, int, int]] = {16: (6, 12, 18), 32: (3, 6, 9)}  # output stride -> rates


class Segmenter(nn.Module):
    """images [N, 3, H, W] in [0, 1] -> class logits [N, num_classes, H, W]."""

    def __init__(self, features: FeatureBackbone, head: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.head = head
        shape = (1, 3, 1, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_DEFAULT_MEAN).view(shape), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_DEFAULT_STD).view(shape), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        (level,) = self.features((images - self.mean) / self.std)
        logits = self.head(level)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def build_segmenter(backbone_name: str, num_classes: int, output_stride: int = 16, image_size: int | None = None,
                    **knobs: Any) -> Segmenter:
    """DeepLabv3 (module docstring) over zoo model `backbone_name` at `output_stride` (16 or 32); `knobs` build
    the backbone (as `zoo.models.create`), for `image_size` px where its position grid is tied to a size. A
    backbone without features at that stride raises `MissingFeatureError`."""
    if output_stride not in ASPP_RATES:
        raise ValueError(f"DeepLabv3: output_stride must be one of {sorted(ASPP_RATES)}, got {output_stride!r}")
    if num_classes < 1:
        raise ValueError(f"DeepLabv3: num_classes must be >= 1, got {num_classes}")
    features = feature_backbone(backbone_name, (output_stride,), image_size=image_size,
                                needed_by=f"DeepLabv3 at output stride {output_stride}", **knobs)
    head = DeepLabHead(features.channels[0], num_classes, ASPP_RATES[output_stride])
    return Segmenter(features, head)
