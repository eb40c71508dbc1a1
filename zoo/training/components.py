"""Build one run's parts from its config with timm's factories: model, optimiser, schedule, EMA, Mixup, loss, metrics."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from timm.data import Mixup
from timm.data.mixup import mixup_target
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

from torch.nn.parallel import DistributedDataParallel

from zoo.config import RunConfig
from zoo.models import create
from zoo.training.distributed import DistContext
from zoo.training.loaders import Loaders, build_loaders


def build_model(cfg: RunConfig, num_classes: int) -> nn.Module:
    knobs = dict(cfg.model_kwargs)
    knobs.setdefault("drop_path_rate", cfg.recipe.drop_path)
    return create(cfg.model, num_classes=num_classes, **knobs)


def build_optimizer(cfg: RunConfig, model: nn.Module, world_size: int) -> torch.optim.Optimizer:
    return create_optimizer_v2(
        model,
        opt=cfg.optimizer,
        lr=cfg.scaled_lr(world_size),
        weight_decay=cfg.recipe.weight_decay,
        # basic (MobileViT): decay on every parameter; DeiT: norms, biases and tokens are exempt.
        filter_bias_and_bn=not cfg.recipe.decay_norm_and_bias,
        betas=cfg.betas,
        eps=cfg.eps,
    )


def build_scheduler(cfg: RunConfig, optimizer: torch.optim.Optimizer, updates_per_epoch: int):
    """Warmup then cosine, stepped per optimiser update so multi-scale's varying batch counts are handled."""
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched="cosine",
        num_epochs=cfg.epochs,
        warmup_epochs=cfg.warmup_epochs,
        warmup_lr=cfg.warmup_lr,
        min_lr=cfg.min_lr,
        step_on_epochs=False,
        updates_per_epoch=max(1, updates_per_epoch),
    )
    return scheduler


def build_ema(cfg: RunConfig, model: nn.Module) -> ModelEmaV3 | None:
    if not cfg.recipe.ema:
        return None
    return ModelEmaV3(model, decay=cfg.recipe.ema_decay, use_warmup=cfg.recipe.ema_warmup)


def build_mixup(cfg: RunConfig, num_classes: int) -> Mixup | None:
    r = cfg.recipe
    if r.mixup <= 0 and r.cutmix <= 0:
        return None
    return Mixup(
        mixup_alpha=r.mixup,
        cutmix_alpha=r.cutmix,
        prob=r.mixup_prob,
        switch_prob=r.mixup_switch_prob,
        mode="batch",
        label_smoothing=r.label_smoothing,
        num_classes=num_classes,
    )


def build_criterion(cfg: RunConfig, mixup: Mixup | None) -> nn.Module:
    # Mixup already folds label smoothing into its soft targets.
    if mixup is not None:
        return SoftTargetCrossEntropy()
    return nn.CrossEntropyLoss(label_smoothing=cfg.recipe.label_smoothing)


def build_metrics(num_classes: int, device: torch.device) -> MetricCollection:
    # Papers report micro-averaged top-1 (torchmetrics' default for multiclass is macro).
    return MetricCollection(
        {
            "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
            "ece": MulticlassCalibrationError(num_classes, n_bins=15, norm="l1"),
        }
    ).to(device)


@dataclass
class RunParts:
    """Everything one run builds once from its config; the engine's functions share it."""

    loaders: Loaders
    model: nn.Module  # the bare model: what checkpoints and EMA see
    train_model: nn.Module  # the model the loop calls: DDP-wrapped and/or compiled
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: ModelEmaV3 | None
    mixup: Mixup | None
    criterion: nn.Module
    num_classes: int
    label_smoothing: float
    amp: bool
    channels_last: bool

    def mix(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The recipe's Mixup/CutMix (soft targets), or the hard targets unchanged when the recipe has none."""
        if self.mixup is None:
            return images, targets
        if images.shape[0] % 2 == 0:  # timm's batch Mixup needs an even batch
            return self.mixup(images, targets)
        # odd last batch: the same soft-target loss, smoothed, without mixing
        return images, mixup_target(targets, self.num_classes, lam=1.0, smoothing=self.label_smoothing)


def autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_parts(cfg: RunConfig, ctx: DistContext, compile_model: bool) -> RunParts:
    """Loaders, model, optimiser, schedule, EMA, mixing and loss of one run, in the order their RNG use requires."""
    amp = cfg.amp if cfg.amp is not None else ctx.device.type == "cuda"
    channels_last = cfg.channels_last if cfg.channels_last is not None else ctx.device.type == "cuda"
    loaders = build_loaders(cfg, ctx)
    model = build_model(cfg, loaders.num_classes).to(ctx.device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model, ctx.world_size)
    # Multi-scale epochs differ in batch count: size the schedule from the sampler's exact total.
    total_updates = loaders.sampler.total_updates(cfg.epochs) // cfg.accum_steps
    scheduler = build_scheduler(cfg, optimizer, max(1, math.ceil(total_updates / cfg.epochs)))
    ema = build_ema(cfg, model)
    mixup = build_mixup(cfg, loaders.num_classes)
    train_model: nn.Module = model
    if ctx.distributed:
        train_model = DistributedDataParallel(model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
    if compile_model:
        train_model = torch.compile(train_model)
    return RunParts(loaders, model, train_model, optimizer, scheduler, ema, mixup, build_criterion(cfg, mixup),
                    loaders.num_classes, cfg.recipe.label_smoothing, amp, channels_last)
