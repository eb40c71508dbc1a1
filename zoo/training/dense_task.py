"""Detection and segmentation as tasks of the one training loop (`zoo.training.engine`).

The loop and its rules are classification's (seeding, sampler, accumulation, optimiser, schedule, EMA, guards,
checkpoints, AMP, DDP); what a dense task supplies:

- model: `build_detector` (SSDLite) or `build_segmenter` (DeepLabv3 at output stride 16) over the matrix's backbone
  with its model_kwargs and the recipe's drop path;
- loss: torchvision SSD's own (box regression smooth-L1 + classification with hard-negative mining, summed), or
  cross-entropy with `IGNORE_INDEX` pixels left out;
- metric: COCO mAP@[.5:.95] and mAP@.5, or mIoU (`zoo.training.dense_metrics`), of the EMA weights when the recipe
  has EMA.

The detector never resizes: each batch already is at the sampler's resolution (`at_size` sets torchvision's
transform to it), so multi-scale training reaches the detector as drawn.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.config import RunConfig
from zoo.data.dense import IGNORE_INDEX
from zoo.models.dense import build_detector, build_segmenter
from zoo.training.components import autocast
from zoo.training.dense_loaders import build_dense_loaders
from zoo.training.dense_metrics import detection_metric, detection_summary, segmentation_metric
from zoo.training.distributed import DistContext
from zoo.training.loaders import Loaders
from zoo.training.task import Task

SEGMENTATION_OUTPUT_STRIDE = 16  # DeepLabv3's (the MobileViT paper's) for every backbone
COCO_MAX_DETECTIONS = 100  # COCO scores each image's top 100: the rest cannot change mAP, so are not passed


def at_size(model: nn.Module, size: int) -> None:
    """Make a torchvision detector take its inputs at `size` px as they come (no resize of its own)."""
    transform = getattr(model, "transform", None)
    if transform is not None and hasattr(transform, "fixed_size"):
        transform.fixed_size, transform.min_size, transform.max_size = (size, size), (size,), size


def dense_model(cfg: RunConfig, num_classes: int) -> nn.Module:
    """SSDLite or DeepLabv3 over the run's backbone, with its model_kwargs and the recipe's drop path."""
    knobs = dict(cfg.model_kwargs)
    knobs.setdefault("drop_path_rate", cfg.recipe.drop_path)
    if cfg.task == "detection":
        return build_detector(cfg.model, num_classes, image_size=cfg.sampler.base_resolution, **knobs)
    return build_segmenter(cfg.model, num_classes, output_stride=SEGMENTATION_OUTPUT_STRIDE,
                           image_size=cfg.sampler.base_resolution, **knobs)


class DenseTask(Task):
    """What detection and segmentation share: their loaders, batches moved with their targets, scoring."""

    def build_loaders(self, ctx: DistContext) -> Loaders:
        return build_dense_loaders(self.cfg, ctx)

    def build_model(self) -> nn.Module:
        return dense_model(self.cfg, self.num_classes)

    def prepare(self, model: nn.Module, images: Any, targets: Any) -> tuple[Any, Any]:
        at_size(model, images[0].shape[-1])
        return self.to_device(images, targets)

    def to_device(self, images: Any, targets: Any) -> tuple[Any, Any]:
        images = images.as_subclass(torch.Tensor).to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, targets.as_subclass(torch.Tensor).to(self.device, non_blocking=True)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, ctx: DistContext) -> dict[str, float]:
        """The task's figures over the validation images of all ranks ("images": their count)."""
        model.eval()
        at_size(model, self.cfg.sampler.eval_size)
        count = torch.zeros((), device=ctx.device)
        for images, targets in self.loaders.val:
            images, targets = self.to_device(images, targets)
            with autocast(ctx.device, self.cfg):
                out = model(images)
            self.score(out, targets)
            count += len(images)
        if ctx.distributed:
            torch.distributed.all_reduce(count)
        values = self.scores(ctx, count)
        values["images"] = float(count)
        return values

    @abstractmethod
    def score(self, out: Any, targets: Any) -> None:
        """Add one validation batch's outputs to the state the subclass's `evaluate` set up."""

    @abstractmethod
    def scores(self, ctx: DistContext, count: torch.Tensor) -> dict[str, float]:
        """The figures of every rank's scored batches (`count`: images over all ranks)."""


class DetectionTask(DenseTask):
    """SSDLite; mAP over every rank's detections, scored once (each image's top COCO_MAX_DETECTIONS)."""


    def to_device(self, images: Any, targets: Any) -> tuple[Any, Any]:
        images = [image.as_subclass(torch.Tensor).to(self.device) for image in images]
        targets = [{"boxes": t["boxes"].as_subclass(torch.Tensor).to(self.device),
                    "labels": t["labels"].to(self.device)} for t in targets]
        return images, targets

    def loss(self, train_model: nn.Module, images: Any, targets: Any) -> torch.Tensor:
        losses = train_model(images, targets)
        return sum(losses.values())  # type: ignore[return-value]  # a dict of tensors sums to a tensor

    def evaluate(self, model: nn.Module, ctx: DistContext) -> dict[str, float]:
        self.detections: list[tuple[list, list]] = []  # per batch (preds, targets) on the CPU, scored after
        return super().evaluate(model, ctx)

    def score(self, out: Any, targets: Any) -> None:
        self.detections.append((top_detections(out), [{k: v.cpu() for k, v in t.items()} for t in targets]))

    def scores(self, ctx: DistContext, count: torch.Tensor) -> dict[str, float]:
        return detection_values(self.detections, ctx)

    def epoch_fields(self, values: dict[str, float], raw: dict[str, float] | None) -> dict[str, Any]:
        return {"val_map": values["map"], "val_map_50": values["map_50"]}


class SegmentationTask(DenseTask):
    """DeepLabv3; mIoU reduced over ranks by torchmetrics, with the mean cross-entropy as the loss."""


    def loss(self, train_model: nn.Module, images: Any, targets: Any) -> torch.Tensor:
        logits = train_model(images)
        return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX)

    def evaluate(self, model: nn.Module, ctx: DistContext) -> dict[str, float]:
        self.metric = segmentation_metric(self.num_classes).to(ctx.device)
        self.loss_sum = torch.zeros((), device=ctx.device)
        return super().evaluate(model, ctx)

    def score(self, out: Any, targets: Any) -> None:
        logits = out.float()
        self.loss_sum += F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX,
                                         reduction="sum") / targets[0].numel()
        self.metric.update(logits.argmax(1), targets)

    def scores(self, ctx: DistContext, count: torch.Tensor) -> dict[str, float]:
        if ctx.distributed:
            torch.distributed.all_reduce(self.loss_sum)
        return {"miou": float(self.metric.compute()), "loss": float(self.loss_sum / count.clamp(min=1))}

    def epoch_fields(self, values: dict[str, float], raw: dict[str, float] | None) -> dict[str, Any]:
        return {"val_miou": values["miou"], "val_loss": values["loss"]}


def top_detections(out: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Each image's COCO_MAX_DETECTIONS best boxes, scores and labels, on the CPU (boxes and scores as float32)."""
    return [{k: (d[k][:COCO_MAX_DETECTIONS].float() if k != "labels" else d[k][:COCO_MAX_DETECTIONS]).cpu()
             for k in ("boxes", "scores", "labels")} for d in out]


def detection_values(detections: list[tuple[list, list]], ctx: DistContext) -> dict[str, float]:
    """mAP and mAP@.5 over every rank's images. Under DDP the ranks' detections are gathered as objects, in rank
    order, and every rank scores all of them itself: torchmetrics' own tensor gather of MeanAveragePrecision's
    ragged list states fails on gloo ("Storage size calculation overflowed"), and COCO's matching needs every
    image in one place anyway."""
    if ctx.distributed:
        gathered: list = [None] * ctx.world_size
        torch.distributed.all_gather_object(gathered, detections)
        detections = [batch for rank_batches in gathered for batch in rank_batches]
    metric = detection_metric(sync_on_compute=False)  # it holds every image already: no second, tensor gather
    for preds, targets in detections:
        metric.update(preds, targets)
    return {k: v for k, v in detection_summary(metric).items() if k in ("map", "map_50")}
