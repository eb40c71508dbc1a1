"""One run's parts, typed: its task (data, model, loss, metric) and what the loop trains it with, for every task."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3

from zoo.config import RunConfig
from zoo.training.classification import ClassificationTask
from zoo.training.components import autocast, optimisation_parts, placed
from zoo.training.dense_task import DetectionTask, SegmentationTask
from zoo.training.distributed import DistContext
from zoo.training.finetune import BackboneTuning, param_groups
from zoo.training.init_weights import LoadReport, load_init
from zoo.training.loaders import Loaders
from zoo.training.task import Task

TASKS: dict[str, type[Task]] = {
    "classification": ClassificationTask,
    "detection": DetectionTask,
    "segmentation": SegmentationTask,
}


@dataclass
class RunParts:
    """Everything one run builds once from its config; the engine's functions share it."""

    task: Task
    model: nn.Module  # the bare model: what checkpoints and EMA see
    train_model: nn.Module  # the model the loop calls: DDP-wrapped and/or compiled
    optimizer: torch.optim.Optimizer
    scheduler: CosineLRScheduler
    ema: ModelEmaV3 | None
    scaler: torch.amp.GradScaler  # enabled for float16 autocast only
    cfg: RunConfig
    device: torch.device
    init_report: LoadReport | None = None  # what a pretrained init loaded (None: from scratch)
    tuning: BackboneTuning | None = None  # the fine-tuning knobs, where they set the backbone apart

    @property
    def loaders(self) -> Loaders:
        return self.task.loaders

    def autocast(self):
        return autocast(self.device, self.cfg)


def build_parts(cfg: RunConfig, ctx: DistContext, compile_model: bool) -> RunParts:
    """The task (its loaders first), its model (with the init's weights loaded) on the device, then optimiser,
    schedule, EMA (from the loaded weights) and scaler."""
    task = TASKS[cfg.task](cfg, ctx)
    model = task.build_model()
    report, backbone = load_init(model, cfg) if cfg.init.pretrained else (None, set())
    model = placed(cfg, ctx, model)
    groups = param_groups(cfg, model, backbone) if cfg.init.tuned_apart else None
    train_model, optimizer, scheduler, ema, scaler = optimisation_parts(cfg, ctx, model, task.loaders.sampler,
                                                                        compile_model, groups)
    tuning = BackboneTuning.of(cfg, model, backbone) if cfg.init.tuned_apart else None
    return RunParts(task, model, train_model, optimizer, scheduler, ema, scaler, cfg, ctx.device, report, tuning)
