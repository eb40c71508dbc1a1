"""Parameter counts: of the model as built (its own head), and with a 1000-class head for paper comparison."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

__all__ = ["ParamCount", "count_params", "count_model_params"]

PAPER_NUM_CLASSES = 1000


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; shared tensors are counted once."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


@dataclass(frozen=True)
class ParamCount:
    """Trainable params with the head the model was built with (`num_classes`) and with a 1000-class head."""

    params: int
    params_1k: int
    num_classes: int


def count_model_params(name: str, num_classes: int = PAPER_NUM_CLASSES, **knobs) -> ParamCount:
    """Build zoo model `name` with `num_classes` (and again with 1000 classes if different) and count both."""
    from zoo.models import create

    params = count_params(create(name, num_classes=num_classes, **knobs))
    params_1k = params if num_classes == PAPER_NUM_CLASSES else count_params(
        create(name, num_classes=PAPER_NUM_CLASSES, **knobs)
    )
    return ParamCount(params=params, params_1k=params_1k, num_classes=num_classes)
