"""Train one detection or segmentation run: the classification engine's loop and rules with a dense head.

What is shared with `zoo.training.engine`, unchanged: seeding (initial weights from the seed, every epoch re-seeded
from (seed, epoch, rank)), the sampler's batch plan and gradient-accumulation weights, timm's optimizer, warm-up +
cosine schedule and EMA (`zoo.training.components`), the NaN/inf guard (`LossWindow`: a `Diverged` run), the
verified per-epoch checkpoint and its resume (`restore` / `checkpoint_state`), AMP and DDP.

What differs: the model is `build_detector` (SSDLite; its loss is torchvision SSD's own, box regression smooth-L1
+ classification with hard-negative mining, summed) or `build_segmenter` (DeepLabv3 at output stride 16;
cross-entropy with `IGNORE_INDEX` pixels left out), over the matrix's backbone with its model_kwargs and the
recipe's drop path; evaluation is COCO mAP@[.5:.95] and mAP@.5 or mIoU (`zoo.training.dense_metrics`) of the EMA
weights when the recipe has EMA. The detector never resizes: each batch already is at the sampler's resolution
(`at_size` sets torchvision's transform to it), so multi-scale training reaches the detector as drawn.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.utils import ModelEmaV3, distribute_bn, random_seed
from torchmetrics import MeanMetric

from zoo.config import PlannedRun, RunConfig
from zoo.data.dense import IGNORE_INDEX
from zoo.training.checkpoint import save_checkpoint
from zoo.training.components import autocast, optimisation_parts, placed
from zoo.training.dense_loaders import build_dense_loaders
from zoo.training.loaders import Loaders
from zoo.training.dense_metrics import detection_metric, detection_summary, segmentation_metric
from zoo.training.distributed import DistContext
from zoo.training.engine import (LogFn, RunOutcome, accumulation_weights, checkpoint_state, epoch_seed,
                                 optimizer_step, restore)
from zoo.training.epoch import EpochMetrics
from zoo.training.guards import LossWindow

SEGMENTATION_OUTPUT_STRIDE = 16  # DeepLabv3's (the MobileViT paper's) for every backbone
COCO_MAX_DETECTIONS = 100  # COCO scores each image's top 100: the rest cannot change mAP, so are not passed


@dataclass
class DenseParts:
    """What `zoo.training.engine.restore`, `checkpoint_state` and `optimizer_step` read, for a dense model."""

    loaders: Loaders
    model: nn.Module
    train_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: ModelEmaV3 | None
    scaler: torch.amp.GradScaler
    cfg: RunConfig
    device: torch.device


def build_dense_model(cfg: RunConfig, num_classes: int) -> nn.Module:
    from zoo.models.dense import build_detector, build_segmenter

    knobs = dict(cfg.model_kwargs)
    knobs.setdefault("drop_path_rate", cfg.recipe.drop_path)
    if cfg.task == "detection":
        return build_detector(cfg.model, num_classes, image_size=cfg.sampler.base_resolution, **knobs)
    return build_segmenter(cfg.model, num_classes, output_stride=SEGMENTATION_OUTPUT_STRIDE,
                           image_size=cfg.sampler.base_resolution, **knobs)


def build_dense_parts(cfg: RunConfig, ctx: DistContext, compile_model: bool) -> DenseParts:
    loaders = build_dense_loaders(cfg, ctx)
    model = placed(cfg, ctx, build_dense_model(cfg, loaders.num_classes))
    train_model, optimizer, scheduler, ema, scaler = optimisation_parts(cfg, ctx, model, loaders.sampler,
                                                                        compile_model)
    return DenseParts(loaders, model, train_model, optimizer, scheduler, ema, scaler, cfg, ctx.device)


def at_size(model: nn.Module, size: int) -> None:
    """Make a torchvision detector take its inputs at `size` px as they come (no resize of its own)."""
    transform = getattr(model, "transform", None)
    if transform is not None and hasattr(transform, "fixed_size"):
        transform.fixed_size, transform.min_size, transform.max_size = (size, size), (size,), size


def train_dense_run(run: PlannedRun, ctx: DistContext, run_dir: Path, *, compile_model: bool = False,
                    log_every: int = 10, progress: bool = True, log: LogFn | None = None,
                    stop_after_epochs: int | None = None) -> RunOutcome:
    """`zoo.training.engine.train_run` for a dense task (same arguments, same outcome, same checkpoints)."""
    log = log or (lambda metrics, step: None)
    run.check_world(ctx.world_size)
    cfg = run.config
    ckpt_path = run_dir / "checkpoint.pt"
    if ctx.device.type == "cpu":
        torch.set_flush_denormal(True)
    random_seed(cfg.seed, 0)
    parts = build_dense_parts(cfg, ctx, compile_model)
    outcome = RunOutcome(params=sum(p.numel() for p in parts.model.parameters() if p.requires_grad),
                         num_classes=parts.loaders.num_classes)
    start_epoch = restore(parts, outcome, ckpt_path, ctx)  # type: ignore[arg-type]  # the attributes it reads
    last_epoch = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, start_epoch + stop_after_epochs)
    for epoch in range(start_epoch, last_epoch):
        random_seed(epoch_seed(cfg.seed, epoch), ctx.rank)
        train_loss, epoch_time = train_dense_epoch(parts, ctx, epoch, outcome, log, log_every)
        average_batchnorm(parts, ctx)
        values = evaluate_dense(parts.ema.module if parts.ema is not None else parts.model, parts, ctx)
        row = EpochMetrics(epoch=epoch + 1, train_loss=train_loss, epoch_time_s=epoch_time, updates=outcome.updates,
                           val_loss=values.get("loss"), val_map=values.get("map"), val_map_50=values.get("map_50"),
                           val_miou=values.get("miou"), val_images=int(values["images"]),
                           ema_decay=parts.ema.get_decay(outcome.updates) if parts.ema is not None else None)
        outcome.history.append(row)
        log({f"epoch/{k}": v for k, v in row.to_json().items()}, outcome.updates)
        if ctx.is_main:
            final = epoch + 1 == cfg.epochs
            state = checkpoint_state(parts, outcome, epoch + 1, final=final)  # type: ignore[arg-type]
            save_checkpoint(ckpt_path, state, keep_previous=not final)
    return outcome


def average_batchnorm(parts: DenseParts, ctx: DistContext) -> None:
    """Under DDP, each rank's last forward passes left its own BatchNorm statistics (DDP broadcasts rank 0's
    buffers before a forward, the forward then moves them by the rank's batch; the EMA averages them): average them
    over the ranks, as `zoo.training.engine.evaluate_epoch` does, so every rank evaluates (and rank 0 saves) one
    model. Without it each rank scored its share of the validation images with different statistics."""
    if ctx.distributed:
        distribute_bn(parts.model, ctx.world_size, reduce=True)
        if parts.ema is not None:
            distribute_bn(parts.ema, ctx.world_size, reduce=True)


def dense_loss(parts: DenseParts, images: Any, targets: Any) -> torch.Tensor:
    """The task's training loss of one batch (the model in train mode)."""
    if parts.cfg.task == "detection":
        losses = parts.train_model(images, targets)
        return sum(losses.values())  # type: ignore[return-value]
    logits = parts.train_model(images)
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX)


def _to_device(task: str, images: Any, targets: Any, device: torch.device, channels_last: bool) -> tuple[Any, Any]:
    if task == "detection":
        images = [image.as_subclass(torch.Tensor).to(device) for image in images]
        targets = [{"boxes": t["boxes"].as_subclass(torch.Tensor).to(device), "labels": t["labels"].to(device)}
                   for t in targets]
        return images, targets
    images = images.as_subclass(torch.Tensor).to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets.as_subclass(torch.Tensor).to(device, non_blocking=True)


def train_dense_epoch(parts: DenseParts, ctx: DistContext, epoch: int, outcome: RunOutcome, log: LogFn,
                      log_every: int) -> tuple[float, float]:
    """One pass over the sampler's batches; returns (mean training loss, seconds)."""
    cfg = parts.cfg
    parts.loaders.set_epoch(epoch)
    parts.train_model.train()
    window = LossWindow(ctx, size=log_every)
    running = MeanMetric(sync_on_compute=ctx.distributed).set_dtype(torch.float64).to(ctx.device)
    start, samples = time.perf_counter(), 0
    weights = accumulation_weights(parts.loaders.sampler.batch_plan(epoch), cfg.accum_steps)
    parts.optimizer.zero_grad(set_to_none=True)
    for micro_step, (images, targets) in enumerate(parts.loaders.train):
        weight, boundary = weights[micro_step]
        size = images[0].shape[-1]
        at_size(parts.model, size)
        images, targets = _to_device(cfg.task, images, targets, ctx.device, bool(cfg.channels_last))
        sync = contextlib.nullcontext() if boundary or not ctx.distributed else parts.train_model.no_sync()
        with sync:
            with autocast(ctx.device, cfg):
                loss = dense_loss(parts, images, targets)
            parts.scaler.scale(loss * weight).backward()
        window.add(loss.detach(), step=outcome.updates + 1)
        samples += len(images)
        if not boundary:
            continue
        optimizer_step(cfg, parts, outcome)  # type: ignore[arg-type]
        if window.full or outcome.updates % log_every == 0:
            window.flush(epoch, running)
        if outcome.updates % log_every == 0:
            log({"train/loss": float(running.compute()), "train/lr": parts.optimizer.param_groups[0]["lr"],
                 "train/resolution": size, "train/batch": len(images)}, outcome.updates)
    window.flush(epoch, running)
    seconds = time.perf_counter() - start
    outcome.train_time_s += seconds
    outcome.train_samples += samples * ctx.world_size
    return (float(running.compute()) if running.update_count else 0.0), seconds


@torch.no_grad()
def evaluate_dense(model: nn.Module, parts: DenseParts, ctx: DistContext) -> dict[str, float]:
    """mAP (map, map_50) or mIoU (miou, with the mean cross-entropy as loss) over the validation images of all
    ranks ("images": their count); mIoU is reduced over ranks by torchmetrics, detections are gathered here."""
    cfg = parts.cfg
    model.eval()
    at_size(model, cfg.sampler.eval_size)
    detection = cfg.task == "detection"
    metric = None if detection else segmentation_metric(parts.loaders.num_classes).to(ctx.device)
    detections: list[tuple[list, list]] = []  # per batch (preds, targets) on the CPU, scored once after the loop
    loss_sum, count = torch.zeros((), device=ctx.device), torch.zeros((), device=ctx.device)
    for images, targets in parts.loaders.val:
        images, targets = _to_device(cfg.task, images, targets, ctx.device, bool(cfg.channels_last))
        with autocast(ctx.device, cfg):
            out = model(images)
        if detection:
            detections.append((_top_detections(out), [{k: v.cpu() for k, v in t.items()} for t in targets]))
        else:
            logits = out.float()
            loss_sum += F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum") / targets[0].numel()
            metric.update(logits.argmax(1), targets)
        count += len(images)
    if ctx.distributed:
        torch.distributed.all_reduce(loss_sum)
        torch.distributed.all_reduce(count)
    values = (_detection_values(detections, ctx) if detection
              else {"miou": float(metric.compute()), "loss": float(loss_sum / count.clamp(min=1))})
    values["images"] = float(count)
    return values


def _top_detections(out: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Each image's COCO_MAX_DETECTIONS best boxes, scores and labels, on the CPU (boxes and scores as float32)."""
    return [{k: (d[k][:COCO_MAX_DETECTIONS].float() if k != "labels" else d[k][:COCO_MAX_DETECTIONS]).cpu()
             for k in ("boxes", "scores", "labels")} for d in out]


def _detection_values(detections: list[tuple[list, list]], ctx: DistContext) -> dict[str, float]:
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
