"""Classification as a task of the training loop: a zoo classifier, the recipe's Mixup/CutMix and loss, top-1."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from zoo.training.components import build_criterion, build_mixup, build_model
from zoo.training.distributed import DistContext
from zoo.training.evaluate import evaluate
from zoo.training.loaders import Loaders, build_loaders
from zoo.training.task import Task


class ClassificationTask(Task):
    """Images and labels; the loss is the recipe's (soft-target cross-entropy under Mixup/CutMix, else
    cross-entropy with label smoothing); validation is top-1/top-5 (micro), loss and ECE."""

    evaluates_raw = True
    seeds_drawn_before_epoch = 1  # see Task: its runs' numbers since the first landing

    def __init__(self, cfg, ctx: DistContext) -> None:
        super().__init__(cfg, ctx)
        self.mixup = build_mixup(cfg, self.num_classes)
        self.criterion = build_criterion(cfg, self.mixup)

    def build_loaders(self, ctx: DistContext) -> Loaders:
        return build_loaders(self.cfg, ctx)

    def build_model(self) -> nn.Module:
        return build_model(self.cfg, self.num_classes)

    def prepare(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> tuple[Any, Any]:
        images = images.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.mix(images, targets)

    def mix(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The recipe's Mixup/CutMix (soft targets), or the hard targets unchanged when the recipe has none."""
        if self.mixup is None:
            return images, targets
        if images.shape[0] % 2:  # the sampler's batches are even: an odd one is a bug, not a recipe choice
            raise RuntimeError(f"odd training batch of {images.shape[0]}: Mixup/CutMix cannot pair every image")
        return self.mixup(images, targets)

    def loss(self, train_model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.criterion(train_model(images), targets)

    def evaluate(self, model: nn.Module, ctx: DistContext) -> dict[str, float]:
        return evaluate(model, self.loaders, ctx, self.cfg)

    def epoch_fields(self, values: dict[str, float], raw: dict[str, float] | None) -> dict[str, Any]:
        return {"val_top1": values["top1"], "val_top5": values["top5"], "val_loss": values["loss"],
                "val_ece": values["ece"], "val_top1_raw": raw["top1"] if raw is not None else None}
