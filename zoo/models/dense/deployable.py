"""The graph a phone runs of a detector or segmenter: what the architecture board exports and times.

A deployed detector is the network only: image -> per-anchor class logits and box offsets. Decoding the boxes
against the anchors and NMS are postprocessing, run outside the timed graph (as MobileNetV2's and MobileViT's SSDLite
latencies are reported, and as ExecuTorch and LiteRT deploy SSD: the graph ends at the head). A segmenter's graph
ends at the logits upsampled to the input size (the upsampling is part of the model), before the per-pixel argmax.

Both take [1, 3, S, S] images in [0, 1] at the head's deployment size (no resize inside: the camera pipeline
delivers that size), normalised inside the graph as in training. Class counts are the papers' data sets: COCO's
80 classes + background for SSDLite at 320 px, PASCAL VOC's 20 + background for DeepLabv3 at 512 px (arXiv
2110.02178, section 4.2). The head never names a backbone: any zoo backbone with the strides the head needs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from zoo.models.dense.deeplab import build_segmenter
from zoo.models.dense.ssdlite import build_detector
from zoo.models.registry import get_entry

__all__ = ["DENSE_HEADS", "DenseHead", "DetectorGraph", "SegmenterGraph", "dense_graph"]


@dataclass(frozen=True)
class DenseHead:
    """A head as deployed: its paper's data set (classes with background) and input size."""

    name: str
    task: str
    num_classes: int
    resolution: int
    dataset: str


DENSE_HEADS: dict[str, DenseHead] = {
    "ssdlite": DenseHead("ssdlite", "detection", 81, 320, "COCO"),
    "deeplabv3": DenseHead("deeplabv3", "segmentation", 21, 512, "PASCAL VOC"),
}


class _DenseGraph(nn.Module):
    """Shared by both graphs: the backbone's family hooks applied at export time, and the int8 check's labels."""

    backbone_name: str
    resolution: int

    def bake_for_export(self) -> None:
        """Called on the eval copy `zoo.models.export.prepare_for_export` makes (it calls every submodule's
        `bake_for_export`): the backbone family's fusion (FastViT, RepViT), as its classifier is exported. A
        family bake that rewrites modules where they are (MobileViTv2's attention) applies too; one that reads
        the classifier's own attributes (DeiT/PiT position grids, EfficientFormerV2's attention biases) does not
        fit the feature wrapper, so those stay computed in the graph, as eager PyTorch computes them."""
        hooks = get_entry(self.backbone_name).hooks
        if hooks.reparameterize is not None:
            self.body = hooks.reparameterize(self.body).eval()
        if hooks.bake_for_export is not None:
            try:
                hooks.bake_for_export(self.body, self.resolution)
            except (AttributeError, TypeError):
                pass  # a classifier-level bake (see above): the graph keeps the eager computation

    def class_labels(self, outputs: Tensor) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError


class DetectorGraph(_DenseGraph):
    """SSDLite's network: images -> [N, anchors, classes + 4] (class logits, then the 4 box offsets)."""

    def __init__(self, backbone_name: str, num_classes: int, resolution: int, **knobs: Any) -> None:
        super().__init__()
        detector = build_detector(backbone_name, num_classes, image_size=resolution, **knobs)
        self.backbone_name, self.resolution, self.num_classes = backbone_name, resolution, num_classes
        self.body = nn.ModuleDict({"backbone": detector.backbone, "head": detector.head})
        transform = detector.transform
        self.register_buffer("mean", torch.tensor(transform.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(transform.image_std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        maps = list(self.body["backbone"]((images - self.mean) / self.std).values())
        out = self.body["head"](maps)
        return torch.cat([out["cls_logits"], out["bbox_regression"]], dim=-1)

    def class_labels(self, outputs: Tensor) -> Tensor:
        """Each anchor's top class: what the int8 check compares with fp32."""
        return outputs[..., : self.num_classes].argmax(dim=-1)


class SegmenterGraph(_DenseGraph):
    """DeepLabv3's network: images -> [N, classes, S, S] logits."""

    def __init__(self, backbone_name: str, num_classes: int, resolution: int, **knobs: Any) -> None:
        super().__init__()
        self.backbone_name, self.resolution, self.num_classes = backbone_name, resolution, num_classes
        self.body = build_segmenter(backbone_name, num_classes, output_stride=16, image_size=resolution, **knobs)

    def forward(self, images: Tensor) -> Tensor:
        return self.body(images)

    def class_labels(self, outputs: Tensor) -> Tensor:
        """Each pixel's top class: what the int8 check compares with fp32."""
        return outputs.argmax(dim=1)


def dense_graph(backbone_name: str, head: str, **knobs: Any) -> _DenseGraph:
    """The deployable graph of `head` (a `DENSE_HEADS` key) over zoo backbone `backbone_name` built with
    `knobs`, at the head's deployment size and class count."""
    if head not in DENSE_HEADS:
        raise ValueError(f"unknown dense head {head!r}; known: {', '.join(DENSE_HEADS)}")
    spec = DENSE_HEADS[head]
    graph_type = DetectorGraph if spec.task == "detection" else SegmenterGraph
    return graph_type(backbone_name, spec.num_classes, spec.resolution, **knobs)
