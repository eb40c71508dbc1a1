"""Divergence guard: a NaN/inf loss stops the run on every rank at once, with the first optimiser step (over all
ranks) whose loss was not finite, and that loss — whichever rank it happened on, since only rank 0 writes records."""
from __future__ import annotations

import math

import torch
from torchmetrics import MeanMetric

from zoo.training.distributed import DistContext, broadcast_flag, earliest_over_ranks


class Diverged(RuntimeError):
    def __init__(self, step: int, epoch: int, loss: float, rank: int | None = None):
        where = f"epoch {epoch}" if rank is None else f"epoch {epoch}, rank {rank}"
        super().__init__(f"loss became {loss} at optimiser step {step} ({where})")
        self.step, self.epoch, self.loss, self.rank = step, epoch, loss, rank


class LossWindow:
    """Losses not yet checked: checked `size` at a time, so a GPU run pays one host sync per window."""

    def __init__(self, ctx: DistContext, size: int):
        self.ctx, self.size = ctx, max(1, size)
        self.losses: list[torch.Tensor] = []
        self.steps: list[int] = []  # the optimiser step (1-based) each micro-batch's loss belongs to

    def add(self, loss: torch.Tensor, step: int) -> None:
        self.losses.append(loss)
        self.steps.append(step)

    @property
    def full(self) -> bool:
        return len(self.losses) >= self.size

    def flush(self, epoch: int, running: MeanMetric) -> None:
        """Raise Diverged (on every rank) if any rank's loss is NaN/inf; else add them to the running mean."""
        if not self.losses:
            return
        values = torch.stack(self.losses).double().cpu()
        bad = (~torch.isfinite(values)).nonzero()
        # Every rank flushes at the same steps, so the collectives line up: one flag per window, and the (step,
        # loss) exchange only when some rank diverged.
        if broadcast_flag(self.ctx, len(bad) > 0):
            first = int(bad[0]) if len(bad) else None
            step, loss = (self.steps[first], float(values[first])) if first is not None else (math.inf, math.nan)
            step, loss, rank = earliest_over_ranks(self.ctx, step, loss)
            raise Diverged(int(step), epoch + 1, loss, rank if self.ctx.distributed else None)
        running.update(values.to(running.device))
        self.losses.clear()
        self.steps.clear()
