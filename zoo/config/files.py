"""Reading runs.yaml into `zoo.config.schema.MatrixConfig`, and one matrix cell's config (recipes: `recipes.py`)."""
from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

from zoo.config.recipes import RecipeConfig, load_yaml
from zoo.config.schema import BudgetConfig, MatrixConfig, RunConfig
from zoo.config.typed import from_dict


def load_matrix(path: str | Path) -> MatrixConfig:
    """runs.yaml as a MatrixConfig; the defaults that adapted to its values are in `adapted_defaults`."""
    path = Path(path)
    return from_dict(MatrixConfig, load_yaml(path), str(path))


def run_config(matrix: MatrixConfig, model: str, recipe: RecipeConfig, sampler: str, seed: int,
               task: str | None = None) -> RunConfig:
    """The resolved config of one matrix cell (`task`: one of the matrix's tasks, default its first)."""
    return RunConfig(
        task=task or matrix.tasks[0],
        model=model,
        recipe=recipe,
        sampler=replace(matrix.resolution, name=sampler),
        data=matrix.data,
        model_kwargs=dict(matrix.model_kwargs.get(model, {})),
        seed=seed,
        init=matrix.init,
        amp=matrix.execution.amp,
        channels_last=matrix.execution.channels_last,
        **{f.name: getattr(matrix.budget, f.name) for f in fields(BudgetConfig)},
    )
