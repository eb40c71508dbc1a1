"""Reading config files into the types of `zoo.config.schema`: runs.yaml, recipes, and one matrix cell's config."""
from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import yaml

from zoo.config.schema import BudgetConfig, MatrixConfig, RecipeConfig, RunConfig
from zoo.config.typed import ConfigError, from_dict

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPES_DIR = REPO_ROOT / "recipes"


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
        amp=matrix.execution.amp,
        channels_last=matrix.execution.channels_last,
        **{f.name: getattr(matrix.budget, f.name) for f in fields(BudgetConfig)},
    )
