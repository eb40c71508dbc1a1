"""Build one run's parts from its config with timm's factories: model, optimiser, schedule, EMA, Mixup, loss, metrics."""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

from zoo.config import RunConfig
from zoo.models import create


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
