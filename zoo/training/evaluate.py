"""Validation: top-1/top-5 (micro-averaged, as papers report), loss and ECE, reduced across ranks."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.config import RunConfig
from zoo.training.components import autocast, build_metrics
from zoo.training.distributed import DistContext
from zoo.training.loaders import Loaders


@torch.no_grad()
def evaluate(model: nn.Module, loaders: Loaders, ctx: DistContext, cfg: RunConfig) -> dict[str, float]:
    """Metrics over this rank's disjoint slice of the validation set, reduced over ranks ("images": the count)."""
    model.eval()
    metrics = build_metrics(loaders.num_classes, ctx.device)
    loss_sum = torch.zeros((), device=ctx.device)
    count = torch.zeros((), device=ctx.device)
    for images, targets in loaders.val:
        images, targets = images.to(ctx.device, non_blocking=True), targets.to(ctx.device, non_blocking=True)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(ctx.device, cfg):
            logits = model(images)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, targets, reduction="sum")
        count += targets.numel()
        metrics.update(logits.softmax(-1), targets)
    if ctx.distributed:
        torch.distributed.all_reduce(loss_sum)
        torch.distributed.all_reduce(count)
    values = {k: float(v) for k, v in metrics.compute().items()}  # torchmetrics syncs across ranks itself
    values["loss"] = float(loss_sum / count.clamp(min=1))
    values["images"] = float(count)
    return values
