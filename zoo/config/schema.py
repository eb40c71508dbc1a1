"""The config types: runs.yaml (the matrix), recipes/*.yaml (regularisation) and one run's resolved config.

A recipe never names a model and a model never names a recipe: the matrix crosses them. Everything that decides a
run's result lives in `RunConfig`, whose hash identifies the run in the results store.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from zoo.config.init import InitConfig
from zoo.config.recipes import RecipeConfig, available_recipes, load_recipe
from zoo.config.tasks import BUNDLED_KINDS, DatasetKind, Task, check_matrix_tasks, check_task_data
from zoo.config.typed import AdaptedDefault, Checker, ConfigError, to_dict

# The sampler names; the data kinds are `zoo.config.tasks.KINDS_BY_TASK`.
SamplerName = Literal["fixed", "multiscale"]


@dataclass(frozen=True)
class DataConfig:
    kind: DatasetKind = "digits"
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # kind-specific: typed in zoo.data.options
    workers: int = 0
    max_train_samples: int | None = None  # evenly spaced subset, for smoke tests and quick looks
    max_val_samples: int | None = None
    eval_crop_pct: float = 0.875  # resize to size / crop_pct, centre-crop size (paper: 288 -> 256 = 0.889)

    def validate(self, source: str, path: str) -> None:
        check = Checker(self, source, path)
        check.non_negative("workers")
        check.positive("max_train_samples", "max_val_samples")
        check.require(0 < self.eval_crop_pct <= 1, "eval_crop_pct", "within (0, 1]")
        check.require(self.kind in BUNDLED_KINDS or self.root is not None, "root",
                      f"a folder for data.kind {self.kind!r} (only {' and '.join(BUNDLED_KINDS)} are bundled)")
        # The edge asks the data stage to type the kind's options (upward: kept here, tests/test_layout.py).
        from zoo.data.datasets import parse_kind_options

        parse_kind_options(self.kind, self.options, source, f"{path}.options" if path else "options")


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

    def validate(self, source: str, path: str) -> None:
        check = Checker(self, source, path)
        check.positive("base_resolution", "eval_resolution")
        check.require(len(self.resolutions) > 0, "resolutions", "a non-empty list of sizes in pixels")
        check.require(min(self.resolutions, default=1) > 0, "resolutions", "positive sizes in pixels")
        check.unique("resolutions")


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
    # EMA time constants (1 / (1 - decay)) are multiplied by this: 1 keeps each recipe's decay as named; a budget
    # far shorter than ImageNet's may shrink them for every recipe alike (the board states it).
    ema_time_scale: float = 1.0

    @classmethod
    def adapt_defaults(cls, given: dict[str, Any]) -> dict[str, tuple[Any, str]]:
        """Defaults that cannot hold beside the values given adapt, and the plan says so (`AdaptedDefault`):
        `warmup_epochs` (1) becomes epochs / 2 in a run of 1 epoch or less, and `min_lr` (0.0002) becomes lr / 10
        (the defaults' own ratio) under an lr below it. Where the default holds it stays, so no run id moves."""
        adapted: dict[str, tuple[Any, str]] = {}
        epochs, lr = given.get("epochs", cls.epochs), given.get("lr", cls.lr)
        if "warmup_epochs" not in given and cls.warmup_epochs >= epochs:
            adapted["warmup_epochs"] = (epochs / 2, f"is not shorter than epochs ({epochs}): half the run warms up")
        if "min_lr" not in given and cls.min_lr > lr:
            adapted["min_lr"] = (lr / 10, f"is above lr ({lr}): the cosine ends at lr / 10")
        return adapted

    def validate(self, source: str, path: str) -> None:
        from timm.optim import list_optimizers

        check = Checker(self, source, path)
        check.positive("epochs", "batch_size", "accum_steps", "lr", "lr_reference_batch", "eps", "grad_clip",
                       "ema_time_scale")
        check.non_negative("min_lr", "warmup_lr", "warmup_epochs")
        check.require(self.batch_size % 2 == 0, "batch_size",
                      "even (Mixup/CutMix pair every image of a batch with another)")
        # A default that conflicts has adapted before this point (`adapt_defaults`): these values were set.
        check.require(self.warmup_epochs < self.epochs, "warmup_epochs",
                      f"shorter than epochs ({self.epochs}) (as set; left out, it is 1 epoch, or epochs / 2 in a "
                      f"run of 1 epoch or less)")
        check.require(self.min_lr <= self.lr, "min_lr",
                      f"<= lr ({self.lr}) (as set; left out, it is 0.0002, or lr / 10 under an lr below that)")
        check.require(all(0 <= b < 1 for b in self.betas), "betas", "within [0, 1)")
        known = list_optimizers()
        check.require(self.optimizer.lower() in known, "optimizer",
                      f"a timm optimizer name (e.g. adamw, sgd, lamb; all: {', '.join(known)})")


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
    task: Task = "classification"
    init: InitConfig = field(default_factory=InitConfig)  # where the weights start (zoo.config.init)
    # How the run executes, where it changes the numbers: resolved from the device before the run id is taken
    # (`zoo.config.resolve_execution`), so a 1-GPU result never stands in for an 8-GPU plan.
    world_size: int | None = None  # processes training the run (global batch = batch_size x world_size x accum)
    amp: bool | None = None  # None: autocast on CUDA only
    amp_dtype: Literal["auto", "bfloat16", "float16"] = "auto"  # auto: bf16 where the GPU has it, else fp16
    channels_last: bool | None = None  # None: on CUDA only

    def run_id(self) -> str:
        """Short stable hash of everything that decides the result (the config, seed included, as resolved)."""
        # The default task and init stay out of the hash: no classification (or scratch) run id moves.
        data = {k: v for k, v in to_dict(self).items() if (k != "task" or self.task != "classification")
                and (k != "init" or self.init.pretrained)}
        if self.init.pretrained:
            data["init"] = self.init.identity()  # the weights and knobs, not where a file lies
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def validate(self, source: str, path: str) -> None:
        super().validate(source, path)
        check = Checker(self, source, path)
        check.positive("world_size")
        check_task_data(self.task, self.data.kind, source, f"{path}.task" if path else "task")
        check_sampler_batches(check, self.batch_size, self.sampler, f"{path}.sampler" if path else "sampler")

    @property
    def label(self) -> str:
        base = f"{self.model}/{self.recipe.name}/{self.sampler.name}/s{self.seed}"
        return base if self.task == "classification" else f"{self.task}:{base}"

    def resolved(self, device_type: str, world_size: int, bf16: bool) -> "RunConfig":
        """The config as it will run on `world_size` processes of `device_type` (`bf16`: the GPU supports it)."""
        if self.world_size is not None and self.world_size != world_size:
            raise ConfigError(f"{self.label}: planned for {self.world_size} processes, started on {world_size}")
        amp = self.amp if self.amp is not None else device_type == "cuda"
        dtype = self.amp_dtype
        if amp and dtype == "auto":
            dtype = "bfloat16" if bf16 or device_type != "cuda" else "float16"
        channels_last = self.channels_last if self.channels_last is not None else device_type == "cuda"
        return replace(self, world_size=world_size, amp=amp, amp_dtype=dtype, channels_last=channels_last)

    @property
    def global_batch(self) -> int:
        return self.batch_size * (self.world_size or 1) * self.accum_steps

    @property
    def scaled_lr(self) -> float:
        ratio = self.global_batch / self.lr_reference_batch
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
    workers: int | None = None  # local worker processes when `zoo.run` is given no --workers (see docs/distributed.md)
    progress: bool = True

    def validate(self, source: str, path: str) -> None:
        import re

        check = Checker(self, source, path)
        check.require(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device) is not None, "device",
                      "one of auto, cpu, mps, cuda, cuda:N")
        check.positive("log_every", "threads", "workers")


@dataclass(frozen=True)
class MeasureConfig:
    """What `zoo.run` measures after training (see docs/latency.md and docs/boards.md)."""

    enabled: bool = True
    # At each model's deployment resolution (the paper's: 256 for MobileViT, 224 for the others), 1000 classes.
    # Default: the backends that declare themselves a matrix default (`zoo.measure.backends`).
    backends: tuple[str, ...] = field(default_factory=lambda: MeasureConfig.declared("matrix_default_backends"))
    deploy_resolutions: dict[str, int] = field(default_factory=dict)  # model -> px, overriding the paper's
    # At the matrix's evaluation resolution with the trained head (where the accuracy was measured).
    eval_backends: tuple[str, ...] = ("cpu-eager-1t",)
    calibration_images: int = 64  # training images for int8 calibration
    int8_accuracy: bool = True  # validation top-1 of each trained model's int8 export beside fp32
    int8_eval_images: int = 300
    # Default: the int8 runtimes among the default backends (as they declare them).
    int8_runtimes: tuple[str, ...] = field(default_factory=lambda: MeasureConfig.declared("default_int8_runtimes"))
    breakdown: bool = True  # latency by operator class (ONNX Runtime's profiler) beside GMACs by class
    rounds: int = 6  # interleaved timing rounds per backend
    force: bool = False
    # The architecture board's folder: a deployment-resolution record there (same model, resolution, backend,
    # machine; batch 1, 1000 classes; not failed) is copied into this matrix's store instead of timed again.
    reuse_board: str | None = None

    @staticmethod
    def declared(what: str) -> tuple[str, ...]:
        """A list the backends' declarations give (`zoo.measure.backends.<what>()`), e.g. "backend_names"."""
        from zoo.measure import backends  # the edge's one upward import, inside the function as for validation

        return tuple(getattr(backends, what)())

    def validate(self, source: str, path: str) -> None:
        check, names = Checker(self, source, path), self.declared("backend_names")
        for key in ("backends", "eval_backends"):
            unknown = sorted(set(getattr(self, key)) - set(names))
            check.require(not unknown, key, f"backend names ({', '.join(names)})", unknown)
        runtimes = self.declared("int8_accuracy_backends")
        unknown = sorted(set(self.int8_runtimes) - set(runtimes))
        check.require(not unknown, "int8_runtimes", f"int8 runtimes ({', '.join(runtimes)})", unknown)
        check.positive("calibration_images", "int8_eval_images", "rounds")
        from zoo.models import list_models, model_name

        known = list_models()
        for label, size in self.deploy_resolutions.items():
            check.require(model_name(label) in known, f"deploy_resolutions.{label}",
                          f"keyed by a model name (allowed: {', '.join(known)})", label)
            check.require(size > 0, f"deploy_resolutions.{label}", "a size in pixels > 0", size)


@dataclass(frozen=True)
class MatrixConfig:
    """runs.yaml: models x recipes x samplers x seeds under one budget and one data set."""

    name: str = "default"
    task: Task | tuple[Task, ...] = "classification"  # or a list, crossed with the models as the recipes are
    data: DataConfig = field(default_factory=DataConfig)
    models: tuple[str, ...] = ("mobilevit_xxs",)
    model_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    recipes: tuple[str, ...] = ("basic", "advanced")
    # Adaptations of every recipe alike to this data set (e.g. a milder crop for 8x8 digits); the board states them.
    recipe_overrides: dict[str, Any] = field(default_factory=dict)
    samplers: tuple[SamplerName, ...] = ("fixed", "multiscale")
    resolution: SamplerConfig = field(default_factory=SamplerConfig)
    seeds: tuple[int, ...] = (0,)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    output_dir: str = "out"
    store_dir: str = "leaderboard"
    classification_store: str | None = None  # a dense board's classification column when store_dir has none
    init: InitConfig = field(default_factory=InitConfig)  # every cell's initial weights (zoo.config.init)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    execution: ExecConfig = field(default_factory=ExecConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    # Defaults that could not hold beside the values this file sets, and what was used instead (set by from_dict,
    # never read from the file; `zoo.run` prints them with the plan).
    adapted_defaults: tuple[AdaptedDefault, ...] = field(default=(), init=False, compare=False)

    tasks = property(lambda self: (self.task,) if isinstance(self.task, str) else tuple(self.task))

    def validate(self, source: str, path: str) -> None:
        from zoo.models import list_models

        known = list_models()
        for i, model in enumerate(self.models):
            if model not in known:
                raise ConfigError(f"{source}: models[{i}]: unknown model {model!r} (allowed: {', '.join(known)})")
        for model in self.model_kwargs:
            if model not in self.models:
                raise ConfigError(f"{source}: model_kwargs.{model}: not in models (allowed: {', '.join(self.models)})")
            check_model_kwargs(model, self.model_kwargs[model], source, f"model_kwargs.{model}")
        available = available_recipes()
        for i, recipe in enumerate(self.recipes):
            if recipe not in available:
                raise ConfigError(
                    f"{source}: recipes[{i}]: unknown recipe {recipe!r} (allowed: {', '.join(available)})"
                )
            load_recipe(recipe)  # the recipe file alone: its own errors name it
            load_recipe(recipe, self.recipe_overrides, overrides_at=(source, "recipe_overrides"))
        check_matrix_tasks(self, source)
        check = Checker(self, source, path)
        for key in ("models", "recipes", "samplers", "seeds"):
            check.require(len(getattr(self, key)) > 0, key, "a non-empty list")
            check.unique(key)
        multiscale = replace(self.resolution, name="multiscale" if "multiscale" in self.samplers else "fixed")
        check_sampler_batches(Checker(self, source, "budget"), self.budget.batch_size, multiscale)


def check_model_kwargs(model: str, kwargs: dict[str, Any], source: str, key: str) -> None:
    """Build the model once with its knobs (a small head): a knob it does not take, or a value it refuses, is a
    config error naming the key now, not a failed run per cell later."""
    import re

    from zoo.models import create

    if not kwargs:
        return
    try:
        create(model, num_classes=2, **kwargs)
    except Exception as err:  # the factories raise TypeError, ValueError, AssertionError... for a bad knob
        unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(err))
        where = f"{key}.{unexpected.group(1)}" if unexpected else key
        raise ConfigError(f"{source}: {where}: {model} does not build with {kwargs!r} "
                          f"({type(err).__name__}: {err}); expected the knobs its factory takes") from None


def check_sampler_batches(check: Checker, batch_size: int, sampler: SamplerConfig,
                          sampler_key: str = "resolution") -> None:
    """Every resolution the sampler may draw must get an even batch of at least 2 images (Mixup pairs them)."""
    from zoo.data.multiscale import TRAIN_BATCH_MULTIPLE, resolution_batch_pairs

    sizes = sampler.resolutions if sampler.name == "multiscale" else (sampler.base_resolution,)
    pairs = resolution_batch_pairs(sizes, sampler.base_resolution, batch_size, sampler.mode,
                                   multiple=TRAIN_BATCH_MULTIPLE)
    smallest = min(pairs, key=lambda pair: pair[1])
    default = SamplerConfig()
    if smallest[1] < 2 and sampler.name == "multiscale" and sampler.resolutions == default.resolutions \
            and sampler.base_resolution != default.base_resolution:
        # the paper's set around 256 px left in place under another base: say it is the default, not the batch
        around = sorted({max(1, round(size * sampler.base_resolution / default.base_resolution))
                         for size in default.resolutions})
        raise ConfigError(
            f"{check.source}: {sampler_key}.resolutions: must be sizes around base_resolution "
            f"({sampler.base_resolution} px), got {list(sampler.resolutions)}, the default (the paper's set around "
            f"{default.base_resolution} px; at {smallest[0]} px a batch of {batch_size} scales to {smallest[1]}); "
            f"set {sampler_key}.resolutions, e.g. {around}")
    check.require(smallest[1] >= 2, "batch_size",
                  f"large enough for {TRAIN_BATCH_MULTIPLE}+ images at {smallest[0]} px (scaled batch there: "
                  f"{smallest[1]})", batch_size)
