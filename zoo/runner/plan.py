"""Expand a matrix into runs, and tell which of them the results store already holds.

The run identity is taken here, once: every run is planned (`PlannedRun.plan`: its config resolved for the device
and processes it will train on, then hashed) and the `PlannedRun` travels on to the claims, the workspace,
`execute_run` and the engine. A single `zoo.train` run is planned by `plan_for`, for the processes it started in.

The printed plan also says, once per recipe, when its EMA cannot average within the runs (`ema_warnings`): an EMA
whose time constant 1/(1 - decay) exceeds the run's optimiser updates reports a top-1 of mostly initial weights.
"""
from __future__ import annotations

import itertools
import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from zoo.config import DataConfig, MatrixConfig, PlannedRun, RunConfig, load_recipe, run_config, to_dict
from zoo.config.tasks import CIFAR_KINDS
from zoo.results import TERMINAL, ResultsStore
from zoo.runner.sources import InitSource, SourceResolver, init_lines
from zoo.config.typed import ConfigError
from zoo.data import build_datasets
from zoo.training.distributed import DistContext, planned_execution
from zoo.training.loaders import train_sampler

FILTER_KEYS = ("model", "recipe", "sampler", "seed", "task")


@dataclass(frozen=True)
class RunSpec:
    run: PlannedRun
    status: str  # "todo", or the status of its newest record in the store
    source: InitSource | None = None  # a pretrained cell's init source (`init:`), as resolved for this plan

    @property
    def config(self) -> RunConfig:
        return self.run.config

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


def parse_filters(only: list[str] | None) -> dict[str, set[str]]:
    """`--only model=mobilevit_xs --only recipe=basic,advanced` -> {"model": {...}, "recipe": {...}}."""
    filters: dict[str, set[str]] = {}
    for item in only or []:
        key, sep, values = item.partition("=")
        if not sep or key not in FILTER_KEYS or not values:
            raise ConfigError(f"--only {item!r}: expected KEY=VALUE[,VALUE] with KEY in {', '.join(FILTER_KEYS)}")
        filters.setdefault(key, set()).update(v.strip() for v in values.split(","))
    return filters


def _keep(cfg: RunConfig, filters: dict[str, set[str]]) -> bool:
    fields = {"model": cfg.model, "recipe": cfg.recipe.name, "sampler": cfg.sampler.name, "seed": str(cfg.seed),
              "task": cfg.task}
    return all(fields[key] in allowed for key, allowed in filters.items())


def build_plan(matrix: MatrixConfig, store: ResultsStore, only: list[str] | None = None,
               world_size: int | None = None) -> list[RunSpec]:
    """Every cell of the matrix, ordered seed-major so a partial matrix is a complete comparison first.

    Each cell's config is resolved for the processes and device it will run on (`world_size`: processes per run,
    default: torchrun's WORLD_SIZE or 1), so its run id says what a stored result was trained with."""
    execution = planned_execution(matrix.execution.device, world_size)
    filters = parse_filters(only)
    recipes = {name: load_recipe(name, matrix.recipe_overrides) for name in matrix.recipes}
    latest = store.latest()
    adapted = tuple(str(note) for note in matrix.adapted_defaults)
    resolver = SourceResolver(execution)
    plan = []
    cells = itertools.product(matrix.seeds, matrix.tasks, matrix.models, matrix.recipes, matrix.samplers)
    for seed, task, model, recipe, sampler in cells:
        cfg = run_config(matrix, model, recipes[recipe], sampler, seed, task)
        if not _keep(cfg, filters):
            continue
        source = None
        if cfg.init.pretrained:  # its source's identity goes into the run id: resolved before planning
            cfg, source = resolver.resolve(cfg)
        run = PlannedRun.plan(cfg, execution, adapted)
        record = latest.get(run.run_id)
        plan.append(RunSpec(run, record.status if record else "todo", source))
    return plan


def plan_for(cfg: RunConfig, ctx: DistContext) -> PlannedRun:
    """One run planned for the processes it was started in (`zoo.train`, a test): the id its record will carry
    (a pretrained init's source resolved and checked first, as the matrix's plan does)."""
    execution = planned_execution(str(ctx.device), ctx.world_size)
    if cfg.init.pretrained and not cfg.init.source:
        cfg, source = SourceResolver(execution).resolve(cfg)
        if source.blocked:
            raise ConfigError(f"{cfg.label}: {source.blocked.removeprefix('not run: ')}: train it first "
                              f"(python -m zoo.run {source.matrix} --only model={cfg.model} --only "
                              f"recipe={cfg.recipe.name} --only sampler={cfg.sampler.name} --only seed={cfg.seed})")
    return PlannedRun.plan(cfg, execution)


def format_plan(plan: list[RunSpec]) -> str:
    from tabulate import tabulate

    # A task column only where a dense task is planned: classification plans print as they always did.
    tasks = any(s.config.task != "classification" for s in plan)
    # An init column only where a cell is pretrained: its source (run id and that run's status, file hash, tag).
    inits = any(s.source is not None for s in plan)
    rows = [
        (i + 1, *((s.config.task,) if tasks else ()), s.config.model, s.config.recipe.name, s.config.sampler.name,
         s.config.seed, *((_init_cell(s),) if inits else ()), s.run_id, s.status)
        for i, s in enumerate(plan)
    ]
    todo = sum(not s.done for s in plan)
    headers = ["#", *(["task"] if tasks else []), "model", "recipe", "sampler", "seed", *(["init"] if inits else []),
               "run id", "status"]
    table = tabulate(rows, headers=headers)
    return "\n".join([f"{table}\n{len(plan)} runs, {len(plan) - todo} done, {todo} to train", *init_lines(plan),
                      *ema_warnings(plan)])


def _init_cell(spec: RunSpec) -> str:
    source = spec.source
    if source is None:
        return "scratch"
    if source.matrix is None:
        return source.shown
    after = " (trained first)" if source.pending and not spec.done else ""
    return f"{source.shown} {source.status}{after}"


# ------------------------------------------------------------------------------------------------- EMA horizon
CIFAR_TRAIN_IMAGES = 50_000  # both releases: fixed sizes, known without unpickling them
SUGGESTED_HORIZON_SHARE = 0.1  # the scale suggested makes the EMA average over this share of the shortest run


def ema_horizon_updates(cfg: RunConfig) -> float | None:
    """The updates the EMA averages over, 1/(1 - decay) at the decay in force (`zoo.training.components.ema_decay`:
    the recipe's time constant times the budget's ema_time_scale, at least one update); None without EMA. A run
    with fewer updates reports an EMA still weighted towards the initial weights (e^-1 of them at exactly one
    horizon); a warm-up ramp does not shorten it. Computed here from the config rather than through ema_decay,
    whose module imports torchmetrics: seconds on every dry run (tests/test_ema_horizon.py checks they agree)."""
    return ema_horizon_updates_of(cfg.recipe.ema_decay, cfg.ema_time_scale) if cfg.recipe.ema else None


def ema_horizon_updates_of(decay: float, time_scale: float) -> float:
    # rounded: 2000, not 2000.0000000000002, so that a run of exactly 2,000 updates is not short
    return round(max(1.0, time_scale / (1 - decay)), 6)


def train_images(data: DataConfig, enough: int) -> int | None:
    """Training images a run of `data` sees (after max_train_samples), counted no further than `enough` where
    counting costs (an image folder is listed, not opened); None when the data cannot be read here (the run's own
    data check reports that)."""
    cap = min(enough, data.max_train_samples or enough)
    try:
        if data.kind in CIFAR_KINDS:
            return min(cap, CIFAR_TRAIN_IMAGES)
        if data.kind == "imagefolder":
            folder = Path(data.root or ".").expanduser() / str(data.options.get("train_dir", "train"))
            return _count_files(folder, cap)
        splits = build_datasets(data.kind, root=data.root, options=dict(data.options))
        return min(cap, len(splits.train))
    except Exception:  # a dry run must not fail on data it does not need; the run checks its data itself
        return None


def _count_files(folder: Path, limit: int) -> int:
    count = 0
    for class_dir in sorted(os.scandir(folder), key=lambda e: e.name):
        if class_dir.is_dir() and not class_dir.name.startswith("."):
            count += sum(1 for entry in os.scandir(class_dir.path) if entry.is_file() and entry.name[0] != ".")
            if count >= limit:
                return limit
    return count


def _enough_images(cfg: RunConfig, horizon: float) -> int:
    """Images beyond which a run takes at least `horizon` updates whatever resolutions the sampler draws (every
    epoch has at least images-per-rank // largest batch batches): counting further cannot change the verdict."""
    largest = max(batch for _, batch in train_sampler(cfg, 0, DistContext()).pairs)
    batches_per_epoch = math.ceil(horizon * cfg.accum_steps / cfg.epochs) + 1
    return largest * batches_per_epoch * (cfg.world_size or 1)


def planned_updates(cfg: RunConfig, images: int) -> int:
    """Optimiser updates of the whole run, from the very sampler training builds (rank 0 of its world)."""
    world = cfg.world_size or 1
    return train_sampler(cfg, images, DistContext(0, world)).total_updates(cfg.epochs, accum_steps=cfg.accum_steps)


def _updates_of(cfg: RunConfig, images: int, counted: dict[str, int]) -> int:
    """`planned_updates`, once per sampler setting (models and recipes of a matrix share them)."""
    key = json.dumps([images, to_dict(cfg.sampler), cfg.seed, cfg.world_size, cfg.batch_size, cfg.accum_steps,
                      cfg.epochs])
    if key not in counted:
        counted[key] = planned_updates(cfg, images)
    return counted[key]


@dataclass(frozen=True)
class ShortEma:
    """A recipe whose EMA time constant exceeds some of its runs' updates."""

    recipe: str
    decay: float  # recipe's named decay
    time_scale: float
    horizon: float  # updates, after the scale
    updates: tuple[int, ...]  # of the short runs
    runs: int  # runs of the recipe in the plan

    def warning(self) -> str:
        lo, hi = min(self.updates), max(self.updates)
        span = f"{lo:,}" if lo == hi else f"{lo:,}-{hi:,}"
        fit = SUGGESTED_HORIZON_SHARE * lo * (1 - self.decay)
        return (f"warning: recipe {self.recipe}: its EMA (decay {self.decay:g}, ema_time_scale {self.time_scale:g}) "
                f"averages over about {self.horizon:,.0f} updates, but {len(self.updates)} of its {self.runs} runs "
                f"take {span} updates: their EMA top-1 is mostly the initial weights (the board marks them † and "
                f"ranks them by the raw weights' top-1). Set budget.ema_time_scale: {fit:.2g} to average over "
                f"{SUGGESTED_HORIZON_SHARE:.0%} of the shortest run.")


def short_emas(plan: list[RunSpec]) -> list[ShortEma]:
    """Per recipe (and EMA setting, should a sweep vary it), the planned runs shorter than their EMA's horizon,
    their updates counted from the data's size: one count per data set, as far as the longest horizon needs."""
    cells = [(spec.config, horizon, json.dumps(to_dict(spec.config.data), sort_keys=True))
             for spec in plan if (horizon := ema_horizon_updates(spec.config)) is not None and horizon > 1]
    needed: dict[str, tuple[DataConfig, int]] = {}
    for cfg, horizon, data_key in cells:
        enough = max(needed[data_key][1] if data_key in needed else 0, _enough_images(cfg, horizon))
        needed[data_key] = (cfg.data, enough)
    sizes = {data_key: train_images(data, enough) for data_key, (data, enough) in needed.items()}
    groups: dict[tuple[str, float, float], list[int | None]] = defaultdict(list)
    counted: dict[str, int] = {}
    for cfg, _, data_key in cells:
        images = sizes[data_key]
        groups[(cfg.recipe.name, cfg.recipe.ema_decay, cfg.ema_time_scale)].append(
            None if images is None else _updates_of(cfg, images, counted))
    found = []
    for (recipe, decay, scale), updates in sorted(groups.items()):
        horizon = ema_horizon_updates_of(decay, scale)
        short = tuple(sorted(u for u in updates if u is not None and u < horizon))
        if short:
            found.append(ShortEma(recipe, decay, scale, horizon, short, len(updates)))
    return found


def ema_warnings(plan: list[RunSpec]) -> list[str]:
    return [short.warning() for short in short_emas(plan)]
