"""Stage 1 of the flow: runs.yaml, recipes and command lines parsed once, at the edge, into typed dataclasses.

Everything after this package receives these types, never dicts; user errors are `ConfigError` (exit code 2).
"""
from zoo.config.files import load_matrix, run_config
from zoo.config.recipes import RECIPES_DIR, REPO_ROOT, RecipeConfig, available_recipes, load_recipe, load_yaml
from zoo.config.schema import (
    BudgetConfig,
    DataConfig,
    DatasetKind,
    ExecConfig,
    MatrixConfig,
    MeasureConfig,
    RunConfig,
    SamplerConfig,
    SamplerName,
    WandbConfig,
)
from zoo.config.typed import ConfigError, from_dict, to_dict
from zoo.config.planned import Execution, PlannedRun

__all__ = [
    "RECIPES_DIR", "REPO_ROOT", "BudgetConfig", "ConfigError", "DataConfig", "DatasetKind", "ExecConfig",
    "Execution", "MatrixConfig", "MeasureConfig", "PlannedRun", "RecipeConfig", "RunConfig", "SamplerConfig",
    "SamplerName", "WandbConfig",
    "available_recipes", "from_dict", "load_matrix", "load_recipe", "load_yaml", "run_config", "to_dict",
]
