"""SSDLite over any zoo backbone: torchvision's SSD with its SSD-lite head and default-box generator.

The recipe is torchvision's `ssdlite320_mobilenet_v3_large` with the MobileNetV3 replaced by a zoo backbone, the
same for every backbone (this module never names one):

- features: the backbone's stride-16 and stride-32 levels (`zoo.models.features`; torchvision taps MobileNetV3's
  C4 expansion conv and its last layer, both at those strides);
- extra layers: four of torchvision's `_extra_block` (1x1 conv to half the width, 3x3 depthwise conv stride 2,
  1x1 conv to the width, each BatchNorm + ReLU6), widths 512, 256, 256, 128, at strides 64, 128, 256, 512,
  initialised N(0, 0.03) as torchvision does; six maps in all;
- anchors: `DefaultBoxGenerator` with aspect ratios [2, 3] (and their inverses) on each of the six maps,
  scales 0.2 to 0.95 (6 boxes per location);
- head: `SSDLiteHead` (depthwise-separable 3x3 predictors), BatchNorm eps 0.001, momentum 0.03;
- input: images in [0, 1], resized by the model to `image_size` x `image_size` and normalised with ImageNet's mean
  and std (what the zoo's classifiers are trained with; torchvision's own recipe uses 0.5 / 0.5 for its backbone);
- inference: score threshold 0.001, NMS IoU 0.55, 300 candidates per class, 300 detections per image.

`num_classes` counts the background, class 0 (torchvision's convention and `zoo.data.dense`'s labels).
Every size down to 64 px builds and trains (the last maps are then 1 x 1; a 3x3 stride-2 conv keeps a 1 x 1 map).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead, _extra_block, _normal_init

from zoo.models.features import FeatureBackbone, feature_backbone

__all__ = ["ASPECT_RATIOS", "EXTRA_WIDTHS", "FEATURE_STRIDES", "SSDLiteBackbone", "build_detector"]

FEATURE_STRIDES = (16, 32)  # the backbone levels the head reads
EXTRA_WIDTHS = (512, 256, 256, 128)  # torchvision's extra layers (width multiplier 1.0)
ASPECT_RATIOS = (2, 3)  # per map, with their inverses and the two square boxes
MIN_RATIO, MAX_RATIO = 0.2, 0.95  # the smallest and largest box scale, as fractions of the image
INFERENCE = {"score_thresh": 0.001, "nms_thresh": 0.55, "detections_per_img": 300, "topk_candidates": 300}


def _norm_layer(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels, eps=0.001, momentum=0.03)  # torchvision's SSDLite norm


class SSDLiteBackbone(nn.Module):
    """The backbone's stride-16/32 maps followed by the extra blocks; what torchvision's `SSD` calls."""

    def __init__(self, features: FeatureBackbone, widths: tuple[int, ...] = EXTRA_WIDTHS) -> None:
        super().__init__()
        self.features = features
        inputs = [features.channels[-1], *widths[:-1]]
        self.extra = nn.ModuleList(_extra_block(i, o, _norm_layer) for i, o in zip(inputs, widths))
        _normal_init(self.extra)
        self.out_channels = [*features.channels, *widths]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        maps = self.features(x)
        y = maps[-1]
        for block in self.extra:
            y = block(y)
            maps.append(y)
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


def build_detector(backbone_name: str, num_classes: int, image_size: int = 320, **knobs: Any) -> SSD:
    """SSDLite (module docstring) over zoo model `backbone_name`, for `image_size` px inputs; `knobs` build the
    backbone (as `zoo.models.create`). A backbone without stride-16 and stride-32 features raises
    `MissingFeatureError`."""
    if num_classes < 2:
        raise ValueError(f"SSDLite: num_classes counts the background, so it must be >= 2, got {num_classes}")
    features = feature_backbone(backbone_name, FEATURE_STRIDES, image_size=image_size, needed_by="SSDLite",
                                **knobs)
    backbone = SSDLiteBackbone(features)
    maps = len(backbone.out_channels)
    anchors = DefaultBoxGenerator([list(ASPECT_RATIOS)] * maps, min_ratio=MIN_RATIO, max_ratio=MAX_RATIO)
    head = SSDLiteHead(backbone.out_channels, anchors.num_anchors_per_location(), num_classes,
                       _norm_layer)
    return SSD(backbone, anchors, (image_size, image_size), num_classes, head=head,
               image_mean=list(IMAGENET_DEFAULT_MEAN), image_std=list(IMAGENET_DEFAULT_STD), **INFERENCE)
