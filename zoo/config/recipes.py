"""Recipes (recipes/*.yaml): their type and their files. Regularisation only: a recipe never names a model.

Apart from `zoo.config.schema` so that the matrix's validation can load the recipes it names without an import
cycle (schema -> recipes; files -> schema).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from zoo.config.typed import Checker, ConfigError, from_dict

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPES_DIR = REPO_ROOT / "recipes"


@dataclass(frozen=True)
class RecipeConfig:
    """Regularisation only: augmentation, mixing, label smoothing, weight decay, stochastic depth, EMA."""

    name: str
    source: str = ""
    scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area range
    hflip: float = 0.5
    auto_augment: str | None = None  # timm RandAugment string, e.g. rand-m9-mstd0.5-inc1
    color_jitter: float | None = None
    re_prob: float = 0.0  # random erasing
    re_mode: Literal["const", "rand", "pixel"] = "pixel"
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    label_smoothing: float = 0.1
    weight_decay: float = 0.01
    decay_norm_and_bias: bool = True  # basic: decay on all parameters; DeiT skips norms and biases
    drop_path: float = 0.0
    ema: bool = True
    ema_decay: float = 0.9995
    ema_warmup_epochs: float = 0.0  # 0: the decay is in force from the first update (ml-cvnets and DeiT alike)
    repeated_aug: int = 1  # DeiT's ×3, applied only under DDP

    def validate(self, source: str, path: str) -> None:
        # Per-image augmentation (crop scale, flip, erasing, the RandAugment string) is checked by the transform
        # that will apply it, so the rules live in one place; the rest of the recipe is checked here. (The edge asks
        # the data stage: an upward import, kept in the validating function, tests/test_layout.py EDGE_CHECKS.)
        from zoo.data.transforms import TransformSpec

        at = f"{path}." if path else ""

        try:
            TransformSpec(scale=self.scale, hflip=self.hflip, auto_augment=self.auto_augment,
                          color_jitter=self.color_jitter, re_prob=self.re_prob, re_mode=self.re_mode,
                          interpolation=self.interpolation)
        except ValueError as err:
            key, _, message = str(err).removeprefix("TransformSpec.").partition(": ")
            raise ConfigError(f"{source}: {at}{key}: {message}") from None
        for key in ("mixup_prob", "mixup_switch_prob", "label_smoothing", "drop_path"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(f"{source}: {at}{key}: must be within [0, 1], got {getattr(self, key)}")
        for key in ("mixup", "cutmix", "weight_decay"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{source}: {at}{key}: must be >= 0, got {getattr(self, key)}")
        if self.ema and not 0 < self.ema_decay < 1:
            raise ConfigError(f"{source}: {at}ema_decay: must be within (0, 1), got {self.ema_decay}")
        check = Checker(self, source, path)
        check.non_negative("ema_warmup_epochs")
        if self.repeated_aug < 1:
            raise ConfigError(f"{source}: {at}repeated_aug: must be >= 1, got {self.repeated_aug}")


def available_recipes(recipes_dir: Path = RECIPES_DIR) -> list[str]:
    return sorted(p.stem for p in recipes_dir.glob("*.yaml"))


def load_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None


def load_recipe(name: str, overrides: dict[str, Any] | None = None, recipes_dir: Path = RECIPES_DIR, *,
                overrides_at: tuple[str, str] | None = None) -> RecipeConfig:
    """Recipe `name` with `overrides` applied. Errors name the recipe file, or, with `overrides_at=(source, path)`
    (the matrix checks its `recipe_overrides` so, on a recipe that loads alone), that file and key path."""
    path = recipes_dir / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"recipe {name!r}: {path} not found (allowed: {', '.join(available_recipes(recipes_dir))})")
    data = load_yaml(path) or {}
    data.setdefault("name", name)
    data.update(overrides or {})
    if overrides_at is None:
        return from_dict(RecipeConfig, data, str(path))
    source, key = overrides_at
    try:
        return from_dict(RecipeConfig, data, source, key)
    except ConfigError as err:
        raise ConfigError(f"{err} (recipe {name!r}, {path})") from None
