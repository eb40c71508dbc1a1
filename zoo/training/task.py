"""What a task supplies to the one training loop (`zoo.training.engine`): its data, model, loss and metric.

The loop owns everything the tasks share — seeding, the sampler's batch plan and accumulation weights, optimiser,
schedule, EMA, AMP, DDP, the NaN/inf guard, BatchNorm averaging over ranks, checkpoints and resume — and asks the
run's `Task` for the rest. A task is built once per run (its loaders first: the order the seeded RNG expects) and
holds whatever it needs between batches (classification: Mixup and the criterion).

Implementations: `zoo.training.classification.ClassificationTask`, `zoo.training.dense_task.DetectionTask` and
`SegmentationTask`; `zoo.training.parts.TASKS` maps `RunConfig.task` to them.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
import torch.nn as nn

from zoo.config import RunConfig
from zoo.training.distributed import DistContext
from zoo.training.loaders import Loaders


class Task(ABC):
    """One run's task. Subclasses implement the abstract methods; `cfg` and `loaders` are set on construction."""

    # Also score the raw (non-EMA) weights at the final epoch (classification: the board reads the raw top-1 of
    # short runs); a dense task scores the EMA weights only, as it always did.
    evaluates_raw: ClassVar[bool] = False
    # Seeds the loop draws from the global RNG before each epoch's batches, so that a seeded run repeats the
    # numbers its task's runs always had: classification's loop once gave its progress bar the loader, and
    # tqdm.auto's bar opened (and dropped) an iterator of its own, drawing one DataLoader seed; the dense loop had
    # no bar. The draw changes which random numbers an epoch sees, not how they are used.
    seeds_drawn_before_epoch: ClassVar[int] = 0

    def __init__(self, cfg: RunConfig, ctx: DistContext) -> None:
        self.cfg = cfg
        self.device = ctx.device
        self.loaders = self.build_loaders(ctx)

    @property
    def num_classes(self) -> int:
        return self.loaders.num_classes

    @abstractmethod
    def build_loaders(self, ctx: DistContext) -> Loaders:
        """The run's train/val loaders over the task's data (the shared sampler inside)."""

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The task's model over the run's backbone, randomly initialised from the seeded RNG."""

    @abstractmethod
    def prepare(self, model: nn.Module, images: Any, targets: Any) -> tuple[Any, Any]:
        """One training batch on the run's device, as the model takes it (`model`: the bare model)."""

    @abstractmethod
    def loss(self, train_model: nn.Module, images: Any, targets: Any) -> torch.Tensor:
        """The batch's mean training loss (called inside autocast, the model in train mode)."""

    @abstractmethod
    def evaluate(self, model: nn.Module, ctx: DistContext) -> dict[str, float]:
        """The task's validation figures over every rank's images ("images": their count)."""

    @abstractmethod
    def epoch_fields(self, values: dict[str, float], raw: dict[str, float] | None) -> dict[str, Any]:
        """`EpochMetrics` fields from `evaluate`'s values (and the raw weights', when `evaluates_raw`)."""
