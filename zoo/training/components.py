"""Build one run's parts from its config with timm's factories: model, optimiser, schedule, EMA, Mixup, loss, metrics
(`zoo.training.parts.build_parts` puts them together for a task)."""
from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn as nn
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

from torch.nn.parallel import DistributedDataParallel

from zoo.config import RunConfig
from zoo.models import create, get_entry
from zoo.training.distributed import DistContext


EMA_WARMUP_POWER = 2 / 3  # timm ModelEmaV3's default warm-up curve, compressed to the recipe's warm-up length


def build_model(cfg: RunConfig, num_classes: int) -> nn.Module:
    knobs = dict(cfg.model_kwargs)
    knobs.setdefault("drop_path_rate", cfg.recipe.drop_path)
    # A family whose position grid is tied to its construction size (DeiT, PiT) is built at the run's base
    # resolution, so the fixed sampler never resizes its position embeddings and multi-scale only away from it.
    if get_entry(cfg.model).hooks.sized_at_base_resolution:
        knobs.setdefault("img_size", cfg.sampler.base_resolution)
    return create(cfg.model, num_classes=num_classes, **knobs)


def build_optimizer(cfg: RunConfig, model: nn.Module, groups: list[dict[str, Any]] | None = None
                    ) -> torch.optim.Optimizer:
    """timm's optimiser over `model`, or over parameter `groups` already split (a fine-tuned run's backbone and
    new parameters: `zoo.training.finetune.param_groups`, whose weight-decay split is timm's)."""
    return create_optimizer_v2(
        model if groups is None else groups,
        opt=cfg.optimizer,
        lr=cfg.scaled_lr,
        weight_decay=cfg.recipe.weight_decay,
        # basic (MobileViT): decay on every parameter; DeiT: norms, biases and tokens are exempt.
        filter_bias_and_bn=not cfg.recipe.decay_norm_and_bias,
        betas=cfg.betas,
        eps=cfg.eps,
    )


def build_scheduler(cfg: RunConfig, optimizer: torch.optim.Optimizer, total_updates: int) -> CosineLRScheduler:
    """Warm-up then cosine over the optimiser updates the run will really take (multi-scale epochs differ in
    batch count, and accumulation groups end with each epoch), stepped per update."""
    warmup = round(cfg.warmup_epochs / cfg.epochs * total_updates)
    return CosineLRScheduler(optimizer, t_initial=max(1, total_updates), lr_min=cfg.min_lr, warmup_t=warmup,
                             warmup_lr_init=cfg.warmup_lr, t_in_epochs=False)


def ema_decay(cfg: RunConfig) -> float:
    """The recipe's decay, its time constant 1/(1-decay) scaled by the budget's ema_time_scale (1: as named);
    a time constant scaled below one update means no averaging (decay 0), never a negative decay."""
    return max(0.0, 1 - (1 - cfg.recipe.ema_decay) / cfg.ema_time_scale)


def build_ema(cfg: RunConfig, model: nn.Module, updates_per_epoch: float) -> ModelEmaV3 | None:
    """timm's EMA at the recipe's decay from the first update, or after a warm-up bounded to the recipe's
    `ema_warmup_epochs` (timm's power-law ramp, compressed so it reaches the decay exactly then)."""
    if not cfg.recipe.ema:
        return None
    decay = ema_decay(cfg)
    warmup_updates = cfg.recipe.ema_warmup_epochs * updates_per_epoch
    if warmup_updates <= 0:
        return ModelEmaV3(model, decay=decay)
    # timm counts warm-up steps from the second update (its step - 1): reach the decay at update `warmup_updates`
    gamma = max(warmup_updates - 1, 1e-9) / ((1 - decay) ** (-1 / EMA_WARMUP_POWER) - 1)
    return ModelEmaV3(model, decay=decay, use_warmup=True, warmup_gamma=gamma, warmup_power=EMA_WARMUP_POWER)


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


def autocast(device: torch.device, cfg: RunConfig):
    if not cfg.amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, cfg.amp_dtype))


def configure_cuda() -> None:
    """What timm users expect on GPUs: cuDNN picks the fastest kernels, fp32 matmuls may use TF32."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def optimisation_parts(cfg: RunConfig, ctx: DistContext, model: nn.Module, sampler, compile_model: bool,
                       groups: list[dict[str, Any]] | None = None
                       ) -> tuple[nn.Module, torch.optim.Optimizer, Any, Any, torch.amp.GradScaler]:
    """What every task's run trains `model` (already on its device) with: (the model as trained — DDP-wrapped
    and compiled where asked —, optimiser, schedule, EMA, grad scaler), sized by `sampler`'s updates; `groups`:
    the parameters split for fine-tuning (default: timm's groups of the whole model)."""
    optimizer = build_optimizer(cfg, model, groups)
    total_updates = sampler.total_updates(cfg.epochs, accum_steps=cfg.accum_steps)
    scheduler = build_scheduler(cfg, optimizer, total_updates)
    ema = build_ema(cfg, model, total_updates / cfg.epochs)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=bool(cfg.amp) and cfg.amp_dtype == "float16")
    train_model: nn.Module = model
    if ctx.distributed:
        train_model = DistributedDataParallel(model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
    if compile_model:
        train_model = torch.compile(train_model)
    return train_model, optimizer, scheduler, ema, scaler


def placed(cfg: RunConfig, ctx: DistContext, model: nn.Module) -> nn.Module:
    """`model` on the run's device, in its memory format (CUDA configured first)."""
    if ctx.device.type == "cuda":
        configure_cuda()
    model = model.to(ctx.device)
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model
