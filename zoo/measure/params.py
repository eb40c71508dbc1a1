"""Parameter counts (`count_params`); papers count with a 1000-class head (`PAPER_NUM_CLASSES`)."""
from __future__ import annotations

import torch.nn as nn

__all__ = ["PAPER_NUM_CLASSES", "count_params"]

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
