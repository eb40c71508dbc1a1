"""Fine-tuning knobs of a pretrained run: the loaded parameters' learning-rate multiplier and frozen first epochs.

"Backbone" is what the init loaded (`zoo.training.init_weights.load_init`): a detector's or segmenter's backbone, a
classifier without its head. The parameters are split into timm-style weight-decay groups per part, each with
timm's `lr_scale` (timm's schedulers set every group's lr to the schedule's value times it), so the whole schedule
— warm-up, cosine — applies to both parts alike, the backbone's scaled. While frozen, the backbone's `lr_scale` is 0
(AdamW's decoupled decay is scaled by the lr too: the weights do not move) and its BatchNorm layers stay in eval
mode (their running statistics stay the pretrained ones), as torchvision's references keep a frozen backbone's.
A run whose knobs are the defaults (multiplier 1, no frozen epochs) builds its optimiser exactly as from scratch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from zoo.config import RunConfig

BACKBONE, NEW = "backbone", "new"  # the `zoo_part` of each parameter group


def param_groups(cfg: RunConfig, model: nn.Module, backbone: set[str]) -> list[dict[str, Any]]:
    """timm's weight-decay groups (biases, norms and a model's `no_weight_decay()` exempt unless the recipe decays
    them), split into backbone and new parameters, the backbone's with the run's `backbone_lr_scale`."""
    exempt_1d = not cfg.recipe.decay_norm_and_bias
    skip = set(model.no_weight_decay()) if exempt_1d and hasattr(model, "no_weight_decay") else set()
    groups: dict[tuple[str, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        part = BACKBONE if name in backbone else NEW
        no_decay = exempt_1d and (param.ndim <= 1 or name.endswith(".bias") or name in skip)
        groups.setdefault((part, 0.0 if no_decay else cfg.recipe.weight_decay), []).append(param)
    return [{"params": params, "weight_decay": decay, "zoo_part": part,
             "lr_scale": cfg.init.backbone_lr_scale if part == BACKBONE else 1.0}
            for (part, decay), params in groups.items()]


@dataclass
class BackboneTuning:
    """Applies the knobs at each epoch's start (`zoo.training.engine.train_one_epoch`)."""

    scale: float
    freeze_epochs: int
    norms: list[nn.Module] = field(default_factory=list)  # the backbone's BatchNorm layers

    @classmethod
    def of(cls, cfg: RunConfig, model: nn.Module, backbone: set[str]) -> "BackboneTuning":
        ids = {id(p) for name, p in model.named_parameters() if name in backbone}
        norms = [m for m in model.modules() if isinstance(m, _BatchNorm)
                 and all(id(p) in ids for p in m.parameters(recurse=False))]
        return cls(cfg.init.backbone_lr_scale, cfg.init.freeze_backbone_epochs, norms)

    def frozen(self, epoch: int) -> bool:
        return epoch < self.freeze_epochs

    def at_epoch(self, epoch: int, optimizer: Any, scheduler: Any, updates: int) -> None:
        """Set the backbone's lr_scale for this epoch (re-applied at once: timm sets lrs only after updates) and,
        while frozen, its BatchNorm layers to eval mode (the loop has just put the model in train mode)."""
        frozen = self.frozen(epoch)
        for group in optimizer.param_groups:
            if group.get("zoo_part") == BACKBONE:
                group["lr_scale"] = 0.0 if frozen else self.scale
        scheduler.step_update(updates)
        if frozen:
            for norm in self.norms:
                norm.eval()

