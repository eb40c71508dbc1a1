"""Expand a matrix into runs, and tell which of them the results store already holds.

The run identity is taken here, once: every run is planned (`PlannedRun.plan`: its config resolved for the device
and processes it will train on, then hashed) and the `PlannedRun` travels on to the claims, the workspace,
`execute_run` and the engine. A single `zoo.train` run is planned by `plan_for`, for the processes it started in.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from zoo.config import MatrixConfig, PlannedRun, RunConfig, load_recipe, run_config
from zoo.results import TERMINAL, ResultsStore
from zoo.training.distributed import DistContext, planned_execution
from zoo.config.typed import ConfigError

FILTER_KEYS = ("model", "recipe", "sampler", "seed")


@dataclass(frozen=True)
class RunSpec:
    run: PlannedRun
    status: str  # "todo", or the status of its newest record in the store

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
    fields = {"model": cfg.model, "recipe": cfg.recipe.name, "sampler": cfg.sampler.name, "seed": str(cfg.seed)}
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
    plan = []
    for seed, model, recipe, sampler in itertools.product(matrix.seeds, matrix.models, matrix.recipes, matrix.samplers):
        cfg = run_config(matrix, model, recipes[recipe], sampler, seed)
        if not _keep(cfg, filters):
            continue
        run = PlannedRun.plan(cfg, execution)
        record = latest.get(run.run_id)
        plan.append(RunSpec(run, record.status if record else "todo"))
    return plan


def plan_for(cfg: RunConfig, ctx: DistContext) -> PlannedRun:
    """One run planned for the processes it was started in (`zoo.train`, a test): the id its record will carry."""
    return PlannedRun.plan(cfg, planned_execution(str(ctx.device), ctx.world_size))


def format_plan(plan: list[RunSpec]) -> str:
    from tabulate import tabulate

    rows = [
        (i + 1, s.config.model, s.config.recipe.name, s.config.sampler.name, s.config.seed, s.run_id, s.status)
        for i, s in enumerate(plan)
    ]
    todo = sum(not s.done for s in plan)
    table = tabulate(rows, headers=["#", "model", "recipe", "sampler", "seed", "run id", "status"])
    return f"{table}\n{len(plan)} runs, {len(plan) - todo} done, {todo} to train"
