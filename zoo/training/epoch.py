"""What the loop reports at the end of each epoch; the results store keeps the list of them in each `RunRecord`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EpochMetrics:
    """Validation (of the EMA weights when the recipe has EMA) and training figures at the end of one epoch: top-1
    and the rest for classification, mAP or mIoU for a dense task."""

    epoch: int
    train_loss: float
    epoch_time_s: float
    updates: int
    # Classification's figures; None in a dense task's rows, which carry its own below instead.
    val_top1: float | None = None
    val_top5: float | None = None
    val_loss: float | None = None  # a detector's evaluation mode returns no loss: None there
    val_ece: float | None = None
    val_top1_raw: float | None = None  # the raw (non-EMA) model, when EMA is what val_* measures
    ema_decay: float | None = None  # the EMA decay in force at the end of the epoch
    val_images: int | None = None  # validation images counted (over all ranks): each exactly once
    val_map: float | None = None  # detection: COCO mAP@[.5:.95] (torchmetrics MeanAveragePrecision)
    val_map_50: float | None = None  # detection: mAP@.5
    val_miou: float | None = None  # segmentation: mean IoU over classes (MulticlassJaccardIndex)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "EpochMetrics":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
