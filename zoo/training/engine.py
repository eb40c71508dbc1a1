"""Train one run of any task: set up (or restore), then per epoch train, evaluate and checkpoint — readable in one
sitting. The run's task (`zoo.training.task.Task`: classification, detection, segmentation) supplies its data,
model, loss and metric; everything else here is shared by every task.

Randomness: the initial weights come from the seed alone (identical on every rank); every epoch then re-seeds all
RNGs from (seed, epoch, rank), so augmentation, mixing, drop-path and erasing differ per rank and per epoch while
the sampler's resolution per step stays shared. Each epoch ends with a verified checkpoint (the previous one kept
until then), so a run killed at any moment resumes from its last finished epoch and ends with the same numbers as an
uninterrupted one (on CPU); a damaged checkpoint falls back to the previous one or to a fresh start, with a warning.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from timm.utils import distribute_bn, random_seed
from torchmetrics import MeanMetric
from tqdm.auto import tqdm

from zoo.config import PlannedRun, RunConfig
from zoo.training.checkpoint import load_latest, save_checkpoint
from zoo.training.distributed import DistContext, broadcast_object
from zoo.training.epoch import EpochMetrics
from zoo.training.guards import LossWindow
from zoo.training.init_weights import LoadReport
from zoo.training.parts import RunParts, build_parts

LogFn = Callable[[dict[str, Any], int], None]


@dataclass
class RunOutcome:
    """What one run produced; `zoo.runner.execute` turns it into a `RunRecord`."""

    history: list[EpochMetrics] = field(default_factory=list)
    updates: int = 0
    train_time_s: float = 0.0
    train_samples: int = 0
    params: int = 0
    num_classes: int = 0
    resumed_from_epoch: int = 0
    skipped_images: int = 0
    init: LoadReport | None = None  # what a pretrained init loaded into the model (None: from scratch)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def train_run(
    run: PlannedRun,
    ctx: DistContext,
    run_dir: Path,
    *,
    compile_model: bool = False,
    log_every: int = 10,
    progress: bool = True,
    log: LogFn | None = None,
    stop_after_epochs: int | None = None,
) -> RunOutcome:
    """Train the planned run to its budget (or resume it). `log(metrics, step)` receives per-step and per-epoch
    metrics. The config is used as planned (resolved for these processes by the plan, never here)."""
    log = log or (lambda metrics, step: None)
    run.check_world(ctx.world_size)
    cfg = run.config
    ckpt_path = run_dir / "checkpoint.pt"
    if ctx.device.type == "cpu":
        torch.set_flush_denormal(True)  # tiny weights late in training otherwise hit x86's slow denormal path
    random_seed(cfg.seed, 0)  # identical initial weights on every rank and every attempt
    parts = build_parts(cfg, ctx, compile_model)
    outcome = RunOutcome(params=sum(p.numel() for p in parts.model.parameters() if p.requires_grad),
                         num_classes=parts.loaders.num_classes, skipped_images=parts.loaders.skipped_images,
                         init=parts.init_report)
    start_epoch = restore(parts, outcome, ckpt_path, ctx)

    last_epoch = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, start_epoch + stop_after_epochs)
    for epoch in range(start_epoch, last_epoch):
        random_seed(epoch_seed(cfg.seed, epoch), ctx.rank)
        train_loss, epoch_time = train_one_epoch(cfg, parts, ctx, epoch, outcome, log, log_every, progress)
        row = evaluate_epoch(parts, ctx, epoch, train_loss, epoch_time, outcome.updates,
                             raw_too=epoch + 1 == cfg.epochs)
        outcome.history.append(row)
        log({f"epoch/{k}": v for k, v in row.to_json().items()}, outcome.updates)
        if ctx.is_main:
            final = epoch + 1 == cfg.epochs
            state = checkpoint_state(parts, outcome, epoch + 1, final=final)
            save_checkpoint(ckpt_path, state, keep_previous=not final)
    return outcome


def restore(parts: RunParts, outcome: RunOutcome, ckpt_path: Path, ctx: DistContext) -> int:
    """Load the last good checkpoint into the parts and the outcome; returns the epoch to continue from (0: none).

    Rank 0 decides and reads its checkpoint, the other ranks receive it: on several nodes only rank 0's disk
    (where checkpoints are written) counts. A damaged newest checkpoint falls back to the previous one, a damaged
    previous one to a fresh start (`load_latest` warns naming the file); nothing is applied before it validated,
    so a fresh start begins from the untouched initial weights."""
    loaded = load_latest(ckpt_path, validate=lambda state: check_resumable(state, parts)) if ctx.is_main else None
    state = broadcast_object(ctx, loaded.state if loaded is not None else None)
    if state is None:
        return 0
    parts.model.load_state_dict(state["model"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        parts.scaler.load_state_dict(state["scaler"])
    if parts.ema is not None:
        parts.ema.load_state_dict(state["ema"])
    outcome.history = [EpochMetrics.from_json(row) for row in state["history"]]
    outcome.updates = state["updates"]
    outcome.train_time_s, outcome.train_samples = state["train_time_s"], state["train_samples"]
    outcome.resumed_from_epoch = state["epoch"]
    return state["epoch"]


RESUME_KEYS = ("epoch", "model", "optimizer", "scheduler", "ema", "history", "updates", "train_time_s",
               "train_samples")


def check_resumable(state: dict[str, Any], parts: RunParts) -> None:
    """Raise ValueError unless `state` is one `checkpoint_state` wrote for these parts: every key, and the model
    (and EMA) tensors by name and shape. Checked before anything is loaded, so a failure leaves the parts as built."""
    missing = [key for key in RESUME_KEYS if key not in state]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    if not isinstance(state["epoch"], int) or not 0 < state["epoch"] <= parts.cfg.epochs:
        raise ValueError(f"epoch {state['epoch']!r} outside 1..{parts.cfg.epochs}")
    _check_tensors("model", state["model"], parts.model.state_dict())
    if parts.ema is not None:
        _check_tensors("ema", state["ema"], parts.ema.state_dict())


def _check_tensors(name: str, saved: Any, expected: dict[str, torch.Tensor]) -> None:
    if not isinstance(saved, dict) or saved.keys() != expected.keys():
        raise ValueError(f"{name}: tensor names differ from the model's")
    for key, tensor in expected.items():
        if not isinstance(saved[key], torch.Tensor) or saved[key].shape != tensor.shape:
            raise ValueError(f"{name}.{key}: shape differs from the model's {tuple(tensor.shape)}")


def checkpoint_state(parts: RunParts, outcome: RunOutcome, epochs_done: int, final: bool = False) -> dict[str, Any]:
    """What a resume needs. The final epoch's checkpoint drops the optimizer's per-parameter moments (2x the
    weights for AdamW): nothing resumes past the budget, and a matrix of finished runs then takes half the disk."""
    optimizer = parts.optimizer.state_dict()
    if final:
        optimizer = {"state": {}, "param_groups": optimizer["param_groups"]}
    return {
        "epoch": epochs_done, "model": parts.model.state_dict(), "optimizer": optimizer,
        "scheduler": parts.scheduler.state_dict(), "ema": parts.ema.state_dict() if parts.ema is not None else None,
        "scaler": parts.scaler.state_dict(),
        "history": [row.to_json() for row in outcome.history], "updates": outcome.updates,
        "train_time_s": outcome.train_time_s, "train_samples": outcome.train_samples,
    }


def train_one_epoch(cfg: RunConfig, parts: RunParts, ctx: DistContext, epoch: int, outcome: RunOutcome,
                    log: LogFn, log_every: int, progress: bool) -> tuple[float, float]:
    """One pass over the sampler's batches; returns (mean training loss, seconds)."""
    parts.loaders.set_epoch(epoch)
    parts.train_model.train()
    if parts.tuning is not None:  # a fine-tuned run's backbone: its lr multiplier, or frozen this epoch
        parts.tuning.at_epoch(epoch, parts.optimizer, parts.scheduler, outcome.updates)
    # Losses are checked for NaN/inf a window at a time (the exact step is still found): one host sync and one
    # running-mean update per window, not per step.
    window = LossWindow(ctx, size=log_every)
    running = MeanMetric(sync_on_compute=ctx.distributed).set_dtype(torch.float64).to(ctx.device)
    # The bar counts by hand: given the loader, tqdm.auto's (asyncio) bar opens an iterator of its own at
    # construction and drops it (a set of DataLoader workers started for nothing), drawing one seed.
    bar = tqdm(total=parts.loaders.batches_per_epoch, desc=f"{cfg.label} epoch {epoch + 1}/{cfg.epochs}",
               disable=not (progress and ctx.is_main), leave=False, dynamic_ncols=True)
    for _ in range(parts.task.seeds_drawn_before_epoch):
        torch.empty((), dtype=torch.int64).random_()
    start, samples = time.perf_counter(), 0
    weights = accumulation_weights(parts.loaders.sampler.batch_plan(epoch), cfg.accum_steps)
    parts.optimizer.zero_grad(set_to_none=True)
    for micro_step, (images, targets) in enumerate(parts.loaders.train):
        bar.update()
        weight, boundary = weights[micro_step]
        size = images[0].shape[-1]  # the sampler's resolution of this batch (a tensor's or a list's images)
        loss = forward_backward(parts, ctx, images, targets, weight, boundary)
        window.add(loss, step=outcome.updates + 1)  # the update this micro-batch belongs to
        samples += len(images)
        if not boundary:
            continue
        optimizer_step(cfg, parts, outcome)
        logging_now = outcome.updates % log_every == 0
        if window.full or logging_now:
            # Flushed at every log point too: the window fills at a different step each epoch, and a loss logged
            # before the epoch's first flush would read 0.0 instead of the epoch's mean so far.
            window.flush(epoch, running)
        if logging_now:
            elapsed = time.perf_counter() - start
            metrics = {"train/loss": float(running.compute()),
                       "train/lr": parts.optimizer.param_groups[0]["lr"],
                       "train/img_per_s": samples * ctx.world_size / max(elapsed, 1e-9),
                       "train/resolution": size, "train/batch": len(images),
                       "epoch": epoch + micro_step / max(parts.loaders.batches_per_epoch, 1)}
            log(metrics, outcome.updates)
            bar.set_postfix(loss=f"{metrics['train/loss']:.3f}", lr=f"{metrics['train/lr']:.2e}",
                            img_s=f"{metrics['train/img_per_s']:.0f}")
    window.flush(epoch, running)
    bar.close()
    seconds = time.perf_counter() - start
    outcome.train_time_s += seconds
    outcome.train_samples += samples * ctx.world_size
    return (float(running.compute()) if running.update_count else 0.0), seconds


def accumulation_weights(plan: list[tuple[int, int]], accum_steps: int) -> list[tuple[float, bool]]:
    """(loss weight, ends an update) per micro-batch of an epoch's batch plan. Micro-batches are grouped
    `accum_steps` at a time, the last group of an epoch possibly shorter; within a group each batch's mean loss
    is weighted by its share of the group's images, so an update is the mean over every image it saw (as one big
    batch would be), whatever the resolutions and batch sizes the multi-scale sampler mixed into it."""
    weights = []
    for start in range(0, len(plan), accum_steps):
        group = plan[start:start + accum_steps]
        images = sum(batch for _, batch in group)
        weights += [(batch / images, i == len(group) - 1) for i, (_, batch) in enumerate(group)]
    return weights


def forward_backward(parts: RunParts, ctx: DistContext, images: Any, targets: Any, weight: float,
                     boundary: bool) -> torch.Tensor:
    """Prepare (device, layout, the recipe's mixing), forward and backward one micro-batch through the task's loss
    (gradients are only all-reduced on an update boundary)."""
    images, targets = parts.task.prepare(parts.model, images, targets)
    sync = contextlib.nullcontext() if boundary or not ctx.distributed else parts.train_model.no_sync()
    with sync:
        with parts.autocast():
            loss = parts.task.loss(parts.train_model, images, targets)
        parts.scaler.scale(loss * weight).backward()
    return loss.detach()


def optimizer_step(cfg: RunConfig, parts: RunParts, outcome: RunOutcome) -> None:
    if cfg.grad_clip:
        parts.scaler.unscale_(parts.optimizer)
        nn.utils.clip_grad_norm_(parts.model.parameters(), cfg.grad_clip)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.optimizer.zero_grad(set_to_none=True)
    outcome.updates += 1
    if parts.ema is not None:
        parts.ema.update(parts.model, step=outcome.updates)
    parts.scheduler.step_update(outcome.updates)


def evaluate_epoch(parts: RunParts, ctx: DistContext, epoch: int, train_loss: float, epoch_time: float,
                   updates: int, raw_too: bool = True) -> EpochMetrics:
    """Validation of the weights the recipe evaluates (EMA when it has one), plus the raw model beside it when
    `raw_too` and the task asks for it (classification, at the final epoch only: on a short CPU budget a second
    evaluation every epoch costs about 8 % of training, and the board reads the raw top-1 of the final weights)."""
    if ctx.distributed:
        # Each rank's last forward passes left its own BatchNorm statistics (DDP broadcasts rank 0's buffers before
        # a forward, which then moves them by the rank's batch; the EMA averaged them): average them over ranks, as
        # timm's train.py does, so every rank evaluates (and rank 0 saves) one model.
        distribute_bn(parts.model, ctx.world_size, reduce=True)
        if parts.ema is not None:
            distribute_bn(parts.ema, ctx.world_size, reduce=True)
    eval_model = parts.ema.module if parts.ema is not None else parts.model
    values = parts.task.evaluate(eval_model, ctx)
    raw, decay = None, None
    if parts.ema is not None:
        decay = parts.ema.get_decay(updates)
        if raw_too and parts.task.evaluates_raw:
            raw = parts.task.evaluate(parts.model, ctx)
    return EpochMetrics(epoch=epoch + 1, train_loss=train_loss, epoch_time_s=epoch_time, updates=updates,
                        ema_decay=decay, val_images=int(values["images"]), **parts.task.epoch_fields(values, raw))
