"""What the loop reports at the end of each epoch; the results store keeps the list of them in each `RunRecord`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EpochMetrics:
    """Validation (of the EMA weights when the recipe has EMA) and training figures at the end of one epoch."""

    epoch: int
    train_loss: float
    epoch_time_s: float
    updates: int
    val_top1: float
    val_top5: float
    val_loss: float
    val_ece: float
    val_top1_raw: float | None = None  # the raw (non-EMA) model, when EMA is what val_* measures
    ema_decay: float | None = None  # the EMA decay in force at the end of the epoch
    val_images: int | None = None  # validation images counted (over all ranks): each exactly once

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "EpochMetrics":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
