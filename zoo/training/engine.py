"""Train one run: the whole loop, readable in one sitting.

Every epoch re-seeds all RNGs from (seed, epoch) and checkpoints atomically at its end, so a run killed at any
moment resumes from its last finished epoch and ends with the same numbers as an uninterrupted one (on CPU).
"""
from __future__ import annotations

import contextlib
import math
import random
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from zoo.training.checkpoint import load_checkpoint, save_checkpoint
from zoo.training.components import (
    build_criterion,
    build_ema,
    build_metrics,
    build_mixup,
    build_model,
    build_optimizer,
    build_scheduler,
)
from zoo.config import RunConfig
from zoo.training.distributed import DistContext, broadcast_flag
from zoo.training.loaders import Loaders, build_loaders


class Diverged(RuntimeError):
    def __init__(self, step: int, epoch: int, loss: float):
        super().__init__(f"loss became {loss} at optimiser step {step} (epoch {epoch})")
        self.step, self.epoch, self.loss = step, epoch, loss


@dataclass
class RunOutcome:
    """What one run produced; `zoo.train.execute_run` turns it into a results-store record."""

    history: list[dict[str, Any]] = field(default_factory=list)
    updates: int = 0
    train_time_s: float = 0.0
    train_samples: int = 0
    params: int = 0
    num_classes: int = 0
    resumed_from_epoch: int = 0
    skipped_images: int = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (KiB on Linux)


@torch.no_grad()
def evaluate(model: nn.Module, loaders: Loaders, ctx: DistContext, amp: bool, channels_last: bool) -> dict[str, float]:
    model.eval()
    metrics = build_metrics(loaders.num_classes, ctx.device)
    loss_sum = torch.zeros((), device=ctx.device)
    count = torch.zeros((), device=ctx.device)
    for images, targets in loaders.val:
        images, targets = images.to(ctx.device, non_blocking=True), targets.to(ctx.device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with _autocast(ctx.device, amp):
            logits = model(images)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, targets, reduction="sum")
        count += targets.numel()
        metrics.update(logits.softmax(-1), targets)
    if ctx.distributed:
        torch.distributed.all_reduce(loss_sum)
        torch.distributed.all_reduce(count)
    values = {k: float(v) for k, v in metrics.compute().items()}  # torchmetrics syncs across ranks itself
    values["loss"] = float(loss_sum / count.clamp(min=1))
    return values


def train_run(
    cfg: RunConfig,
    ctx: DistContext,
    run_dir: Path,
    *,
    compile_model: bool = False,
    log_every: int = 10,
    progress: bool = True,
    log: Callable[[dict[str, Any], int], None] | None = None,
    stop_after_epochs: int | None = None,
) -> RunOutcome:
    """Train `cfg` to its budget (or resume it). `log(metrics, step)` receives per-step and per-epoch metrics."""
    log = log or (lambda metrics, step: None)
    amp = cfg.amp if cfg.amp is not None else ctx.device.type == "cuda"
    channels_last = cfg.channels_last if cfg.channels_last is not None else ctx.device.type == "cuda"
    ckpt_path = run_dir / "checkpoint.pt"

    if ctx.device.type == "cpu":
        torch.set_flush_denormal(True)  # tiny weights late in training otherwise hit x86's slow denormal path
    seed_everything(cfg.seed)  # identical initial weights on every rank and every attempt
    loaders = build_loaders(cfg, ctx)
    model = build_model(cfg, loaders.num_classes).to(ctx.device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model, ctx.world_size)
    # Multi-scale epochs differ in batch count: size the schedule from the sampler's exact total.
    total_updates = loaders.sampler.total_updates(cfg.epochs) // cfg.accum_steps
    updates_per_epoch = max(1, math.ceil(total_updates / cfg.epochs))
    scheduler = build_scheduler(cfg, optimizer, updates_per_epoch)
    ema = build_ema(cfg, model)
    mixup = build_mixup(cfg, loaders.num_classes)
    criterion = build_criterion(cfg, mixup)
    outcome = RunOutcome(
        params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        num_classes=loaders.num_classes,
        skipped_images=loaders.skipped_images,
    )

    start_epoch = 0
    if ckpt_path.is_file():
        state = load_checkpoint(ckpt_path, ctx.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        start_epoch = state["epoch"]
        outcome.history, outcome.updates = state["history"], state["updates"]
        outcome.train_time_s, outcome.train_samples = state["train_time_s"], state["train_samples"]
        outcome.resumed_from_epoch = start_epoch

    train_model: nn.Module = model
    if ctx.distributed:
        train_model = DistributedDataParallel(model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
    if compile_model:
        train_model = torch.compile(train_model)

    last_epoch = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, start_epoch + stop_after_epochs)
    for epoch in range(start_epoch, last_epoch):
        seed_everything(epoch_seed(cfg.seed, epoch))
        loaders.set_epoch(epoch)
        train_model.train()
        window: list[torch.Tensor] = []  # losses not yet checked: one host sync per window, not per step
        check_every = 1 if ctx.device.type == "cpu" else log_every
        bar = tqdm(
            loaders.train,
            total=loaders.batches_per_epoch,
            desc=f"{cfg.label} epoch {epoch + 1}/{cfg.epochs}",
            disable=not (progress and ctx.is_main),
            leave=False,
            dynamic_ncols=True,
        )
        epoch_start, epoch_samples, loss_sum, loss_count = time.perf_counter(), 0, 0.0, 0
        optimizer.zero_grad(set_to_none=True)
        for micro_step, (images, targets) in enumerate(bar):
            images, targets = images.to(ctx.device, non_blocking=True), targets.to(ctx.device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            if mixup is not None and images.shape[0] % 2 == 0:  # timm's batch Mixup needs an even batch
                images, targets = mixup(images, targets)
            elif mixup is not None:  # odd last batch: same soft-target loss, smoothed, without mixing
                smoothing = cfg.recipe.label_smoothing
                targets = F.one_hot(targets, loaders.num_classes).float() * (1 - smoothing) + smoothing / loaders.num_classes
            boundary = (micro_step + 1) % cfg.accum_steps == 0
            sync = contextlib.nullcontext() if boundary or not ctx.distributed else train_model.no_sync()
            with sync:
                with _autocast(ctx.device, amp):
                    loss = criterion(train_model(images), targets)
                (loss / cfg.accum_steps).backward()
            window.append(loss.detach())
            epoch_samples += images.shape[0]
            if not boundary:
                continue
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            outcome.updates += 1
            if ema is not None:
                ema.update(model, step=outcome.updates)
            scheduler.step_update(outcome.updates)
            if len(window) >= check_every:
                loss_sum, loss_count = _check_window(window, outcome.updates, epoch, ctx, loss_sum, loss_count)
                window.clear()
            if outcome.updates % log_every == 0:
                elapsed = time.perf_counter() - epoch_start
                step_metrics = {
                    "train/loss": loss_sum / max(loss_count, 1),
                    "train/lr": optimizer.param_groups[0]["lr"],
                    "train/img_per_s": epoch_samples * ctx.world_size / max(elapsed, 1e-9),
                    "train/resolution": images.shape[-1],
                    "train/batch": images.shape[0],
                    "epoch": epoch + micro_step / max(loaders.batches_per_epoch, 1),
                }
                log(step_metrics, outcome.updates)
                bar.set_postfix(loss=f"{step_metrics['train/loss']:.3f}", lr=f"{step_metrics['train/lr']:.2e}",
                                img_s=f"{step_metrics['train/img_per_s']:.0f}")
        if window:
            loss_sum, loss_count = _check_window(window, outcome.updates, epoch, ctx, loss_sum, loss_count)
        bar.close()
        epoch_time = time.perf_counter() - epoch_start
        outcome.train_time_s += epoch_time
        outcome.train_samples += epoch_samples * ctx.world_size

        eval_model = ema.module if ema is not None else model
        val = evaluate(eval_model, loaders, ctx, amp, channels_last)
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(loss_count, 1), "epoch_time_s": epoch_time,
               "updates": outcome.updates, **{f"val_{k}": v for k, v in val.items()}}
        if ema is not None:
            row["val_top1_raw"] = evaluate(model, loaders, ctx, amp, channels_last)["top1"]
        outcome.history.append(row)
        log({f"epoch/{k}": v for k, v in row.items()}, outcome.updates)
        if ctx.is_main:
            save_checkpoint(ckpt_path, {
                "epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                "history": outcome.history, "updates": outcome.updates,
                "train_time_s": outcome.train_time_s, "train_samples": outcome.train_samples,
            })
    return outcome


def _check_window(window, step, epoch, ctx, loss_sum, loss_count):
    """Raise Diverged (on every rank) if any loss in the window is NaN/inf; else add them to the running mean."""
    values = torch.stack(window).float().cpu()
    finite = torch.isfinite(values)
    if broadcast_flag(ctx, not bool(finite.all())):
        bad = int((~finite).nonzero()[0]) if not bool(finite.all()) else 0
        raise Diverged(step - len(window) + bad + 1, epoch + 1, float(values[bad]))
    return loss_sum + float(values.sum()), loss_count + values.numel()


def best_of(history: list[dict[str, Any]], key: str) -> float | None:
    values = [row[key] for row in history if key in row and not math.isnan(row[key])]
    return max(values) if values else None
