"""The config types: runs.yaml (the matrix), recipes/*.yaml (regularisation) and one run's resolved config.

A recipe never names a model and a model never names a recipe: the matrix crosses them. Everything that decides a
run's result lives in `RunConfig`, whose hash identifies the run in the results store.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal


from zoo.config.typed import ConfigError, to_dict

# The one list of data set kinds and sampler names; zoo.data and the CLI read them from these types.
DatasetKind = Literal["digits", "imagefolder", "cifar10", "cifar100", "hf"]
SamplerName = Literal["fixed", "multiscale"]


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
    ema_warmup: bool = True  # ramp the decay up so short budgets still get a meaningful average
    repeated_aug: int = 1  # DeiT's ×3, applied only under DDP

    def validate(self, source: str, path: str) -> None:
        # Per-image augmentation (crop scale, flip, erasing, the RandAugment string) is checked by the transform
        # that will apply it, so the rules live in one place; the rest of the recipe is checked here.
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
        if self.repeated_aug < 1:
            raise ConfigError(f"{source}: {at}repeated_aug: must be >= 1, got {self.repeated_aug}")


@dataclass(frozen=True)
class DataConfig:
    kind: DatasetKind = "digits"
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # kind-specific, checked by zoo.data
    workers: int = 0
    max_train_samples: int | None = None  # evenly spaced subset, for smoke tests and quick looks
    max_val_samples: int | None = None
    eval_crop_pct: float = 0.875  # resize to size / crop_pct, centre-crop size (paper: 288 -> 256 = 0.889)


@dataclass(frozen=True)
class SamplerConfig:
    """`fixed`: every batch at base_resolution. `multiscale`: the paper's variable-batch sampler over resolutions."""

    name: SamplerName = "fixed"
    base_resolution: int = 256
    resolutions: tuple[int, ...] = (160, 192, 256, 288, 320)
    mode: Literal["scaled", "v0.1"] = "scaled"
    eval_resolution: int | None = None  # default: base_resolution

    @property
    def eval_size(self) -> int:
        return self.eval_resolution or self.base_resolution


@dataclass(frozen=True)
class WandbConfig:
    project: str = "zoo"
    entity: str | None = None
    group: str | None = None
    mode: Literal["online", "offline", "disabled"] = "offline"
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class BudgetConfig:
    """The shared budget of a matrix: every recipe and sampler runs under the same one."""

    epochs: int = 300
    batch_size: int = 128
    accum_steps: int = 1
    lr: float = 0.002
    lr_reference_batch: int = 1024
    lr_scaling: Literal["none", "linear", "sqrt"] = "linear"
    min_lr: float = 0.0002
    warmup_lr: float = 0.0002
    warmup_epochs: float = 1.0
    optimizer: str = "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float | None = None


@dataclass(frozen=True, kw_only=True)
class RunConfig(BudgetConfig):
    """Everything that decides one run's result: the shared budget (flat, so `--lr=0.002` works from a CLI) plus
    the model, recipe, sampler, data and seed of one matrix cell."""

    model: str
    recipe: RecipeConfig
    sampler: SamplerConfig
    data: DataConfig = field(default_factory=DataConfig)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    amp: bool | None = None  # None: bf16 autocast on CUDA only
    channels_last: bool | None = None  # None: on CUDA only

    def run_id(self) -> str:
        """Short stable hash of everything that decides the result."""
        blob = json.dumps(to_dict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        return f"{self.model}/{self.recipe.name}/{self.sampler.name}/s{self.seed}"

    def global_batch(self, world_size: int) -> int:
        return self.batch_size * world_size * self.accum_steps

    def scaled_lr(self, world_size: int) -> float:
        ratio = self.global_batch(world_size) / self.lr_reference_batch
        factor = {"none": 1.0, "linear": ratio, "sqrt": ratio**0.5}[self.lr_scaling]
        return self.lr * factor


@dataclass(frozen=True)
class ExecConfig:
    """How runs execute; none of it changes a run's identity."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool | None = None
    channels_last: bool | None = None
    compile: bool = False
    log_every: int = 10  # steps between per-step W&B points (and the NaN check on CUDA)
    threads: int | None = None  # torch intra-op threads on CPU (None: torch default)
    progress: bool = True


@dataclass(frozen=True)
class MeasureConfig:
    enabled: bool = True
    backends: tuple[str, ...] = ("cpu-eager-1t", "cpu-eager", "onnxruntime-cpu", "cuda", "coreml")
    force: bool = False


@dataclass(frozen=True)
class MatrixConfig:
    """runs.yaml: models x recipes x samplers x seeds under one budget and one data set."""

    name: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    models: tuple[str, ...] = ("mobilevit_xxs",)
    model_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    recipes: tuple[str, ...] = ("basic", "advanced")
    samplers: tuple[SamplerName, ...] = ("fixed", "multiscale")
    resolution: SamplerConfig = field(default_factory=SamplerConfig)
    seeds: tuple[int, ...] = (0,)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    output_dir: str = "out"
    store_dir: str = "leaderboard"
    wandb: WandbConfig = field(default_factory=WandbConfig)
    execution: ExecConfig = field(default_factory=ExecConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)

    def validate(self, source: str, path: str) -> None:
        from zoo.config.files import available_recipes
        from zoo.models import list_models

        known = list_models()
        for i, model in enumerate(self.models):
            if model not in known:
                raise ConfigError(f"{source}: models[{i}]: unknown model {model!r} (allowed: {', '.join(known)})")
        for model in self.model_kwargs:
            if model not in self.models:
                raise ConfigError(f"{source}: model_kwargs.{model}: not in models (allowed: {', '.join(self.models)})")
        available = available_recipes()
        for i, recipe in enumerate(self.recipes):
            if recipe not in available:
                raise ConfigError(
                    f"{source}: recipes[{i}]: unknown recipe {recipe!r} (allowed: {', '.join(available)})"
                )
        for key in ("models", "recipes", "samplers", "seeds"):
            if not getattr(self, key):
                raise ConfigError(f"{source}: {key}: must not be empty")
