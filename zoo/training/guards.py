"""Divergence guard: a NaN/inf loss stops the run on every rank at once, with the optimiser step it happened at."""
from __future__ import annotations

import torch
from torchmetrics import MeanMetric

from zoo.training.distributed import DistContext, broadcast_flag


class Diverged(RuntimeError):
    def __init__(self, step: int, epoch: int, loss: float):
        super().__init__(f"loss became {loss} at optimiser step {step} (epoch {epoch})")
        self.step, self.epoch, self.loss = step, epoch, loss


class LossWindow:
    """Losses not yet checked: checked `size` at a time, so a GPU run pays one host sync per window."""

    def __init__(self, ctx: DistContext, size: int):
        self.ctx, self.size = ctx, max(1, size)
        self.losses: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor) -> None:
        self.losses.append(loss)

    @property
    def full(self) -> bool:
        return len(self.losses) >= self.size

    def flush(self, step: int, epoch: int, running: MeanMetric) -> None:
        """Raise Diverged (on every rank) if any loss is NaN/inf; else add them to the running mean."""
        if not self.losses:
            return
        values = torch.stack(self.losses).float().cpu()
        finite = torch.isfinite(values)
        if broadcast_flag(self.ctx, not bool(finite.all())):
            bad = int((~finite).nonzero()[0]) if not bool(finite.all()) else 0
            raise Diverged(step - len(self.losses) + bad + 1, epoch + 1, float(values[bad]))
        running.update(values.double().to(running.device))
        self.losses.clear()
