"""Expand a matrix into runs, and tell which of them the results store already holds."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from zoo.config import MatrixConfig, RunConfig, load_recipe, run_config
from zoo.results import TERMINAL, ResultsStore
from zoo.training.distributed import planned_execution
from zoo.config.typed import ConfigError

FILTER_KEYS = ("model", "recipe", "sampler", "seed")


@dataclass(frozen=True)
class RunSpec:
    config: RunConfig
    status: str  # "todo", or the status of its newest record in the store

    @property
    def run_id(self) -> str:
        return self.config.run_id()

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
    fields = {"model": cfg.model, "recipe": cfg.recipe.name, "sampler": cfg.sampler.name, "seed": str(cfg.seed)}
    return all(fields[key] in allowed for key, allowed in filters.items())


def build_plan(matrix: MatrixConfig, store: ResultsStore, only: list[str] | None = None,
               world_size: int | None = None) -> list[RunSpec]:
    """Every cell of the matrix, ordered seed-major so a partial matrix is a complete comparison first.

    Each cell's config is resolved for the processes and device it will run on (`world_size`: processes per run,
    default: torchrun's WORLD_SIZE or 1), so its run id says what a stored result was trained with."""
    device_type, world, bf16 = planned_execution(matrix.execution.device, world_size)
    filters = parse_filters(only)
    recipes = {name: load_recipe(name, matrix.recipe_overrides) for name in matrix.recipes}
    latest = store.latest()
    plan = []
    for seed, model, recipe, sampler in itertools.product(matrix.seeds, matrix.models, matrix.recipes, matrix.samplers):
        cfg = run_config(matrix, model, recipes[recipe], sampler, seed).resolved(device_type, world, bf16)
        if not _keep(cfg, filters):
            continue
        record = latest.get(cfg.run_id())
        plan.append(RunSpec(cfg, record.status if record else "todo"))
    return plan


def format_plan(plan: list[RunSpec]) -> str:
    from tabulate import tabulate

    rows = [
        (i + 1, s.config.model, s.config.recipe.name, s.config.sampler.name, s.config.seed, s.run_id, s.status)
        for i, s in enumerate(plan)
    ]
    todo = sum(not s.done for s in plan)
    table = tabulate(rows, headers=["#", "model", "recipe", "sampler", "seed", "run id", "status"])
    return f"{table}\n{len(plan)} runs, {len(plan) - todo} done, {todo} to train"
