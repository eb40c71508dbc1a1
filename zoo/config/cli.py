"""The `zoo.train` command line (and a W&B agent's arguments) -> one run's typed config.

Every RunConfig field is settable as `--key=value`, nested ones with dotted keys (`--recipe.mixup=0.5`,
`--sampler.mode=v0.1`, `--model_kwargs.patch_size=[4,4,4]`). Values are parsed by the field's type and accept
Python `str()` spellings, which is what a W&B sweep agent passes (`--amp=False`).
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from zoo.config.files import load_matrix, run_config
from zoo.config.recipes import load_recipe
from zoo.config.schema import BudgetConfig, MatrixConfig, RunConfig
from zoo.config.typed import ConfigError, from_dict, parse_scalar_text, set_dotted, to_dict

# Short names users (and sweep files) reach for, mapped onto the real fields.
ALIASES = {
    "weight_decay": "recipe.weight_decay",
    "mixup": "recipe.mixup",
    "cutmix": "recipe.cutmix",
    "drop_path": "recipe.drop_path",
    "label_smoothing": "recipe.label_smoothing",
    "patch_size": "model_kwargs.patch_size",
}
# Keys that configure where/how the run executes rather than what it computes.
OUTER_KEYS = ("config", "output_dir", "store_dir", "wandb", "execution")
FREE_FORM = ("model_kwargs.", "data.options.")  # Any-typed values: parse Python literals here
ADAPTIVE_DEFAULTS = ("warmup_epochs", "min_lr")  # BudgetConfig.adapt_defaults may change these


def split_argv(argv: list[str]) -> dict[str, str]:
    """`--a.b=1 --c 2` -> {"a.b": "1", "c": "2"}; clear errors for anything else."""
    pairs: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"command line: {arg!r}: expected --key=value")
        key, sep, value = arg[2:].partition("=")
        if not sep:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise ConfigError(f"command line: --{key}: missing a value (use --{key}=VALUE)")
            value, i = argv[i + 1], i + 1
        pairs[ALIASES.get(key.replace("-", "_"), key.replace("-", "_"))] = value
        i += 1
    return pairs


def _matrix_defaults(config_path: str | None) -> tuple[MatrixConfig, str]:
    if config_path:
        return load_matrix(config_path), config_path
    if Path("runs.yaml").is_file():
        return load_matrix("runs.yaml"), "runs.yaml"
    return MatrixConfig(), "<defaults>"


def resolve(pairs: dict[str, str]) -> tuple[RunConfig, MatrixConfig]:
    """Command-line pairs -> the run's config and the matrix settings (paths, W&B, execution) it runs under."""
    matrix, source = _matrix_defaults(pairs.get("config"))
    source = "command line"
    outer = {k: v for k, v in pairs.items() if k.split(".")[0] in OUTER_KEYS and k != "config"}
    inner = {k: v for k, v in pairs.items() if k.split(".")[0] not in OUTER_KEYS}
    run_fields = {f.name for f in fields(RunConfig)}
    for key in inner:
        if key.split(".")[0] not in run_fields:
            allowed = sorted(run_fields | set(ALIASES) | set(OUTER_KEYS))
            raise ConfigError(f"{source}: --{key}: unknown key (allowed: {', '.join(allowed)})")

    model = inner.get("model", matrix.models[0])
    recipe_name = inner.get("recipe", matrix.recipes[0])
    recipe_overrides = {k.split(".", 1)[1]: v for k, v in inner.items() if k.startswith("recipe.")}
    recipe = load_recipe(recipe_name, {**matrix.recipe_overrides,  # the matrix's cell, then the command line
                                       **{k: parse_scalar_text(v) if k not in ("name", "source") else v
                                          for k, v in recipe_overrides.items()}}, overrides_at=(source, "recipe"))
    base = to_dict(run_config(matrix, model, recipe, inner.get("sampler", matrix.samplers[0]), matrix.seeds[0]))
    # A budget default the matrix left (or adapted) adapts again to the command line's values (`--epochs=1`).
    adapted = {note.key for note in matrix.adapted_defaults}
    for name in ADAPTIVE_DEFAULTS:
        if name not in inner and (getattr(matrix.budget, name) == getattr(BudgetConfig, name)
                                  or f"budget.{name}" in adapted):
            del base[name]
    base["model_kwargs"] = dict(matrix.model_kwargs.get(model, {}))
    for key, value in inner.items():
        if key in ("recipe", "sampler") or key.startswith("recipe."):
            continue
        set_dotted(base, key, parse_scalar_text(value) if key.startswith(FREE_FORM) else value)
    if "sampler" in inner:
        base["sampler"]["name"] = inner["sampler"]
    cfg = from_dict(RunConfig, base, source)

    matrix_dict = to_dict(matrix)
    for key, value in outer.items():
        set_dotted(matrix_dict, key, value)
    matrix_dict["models"] = [cfg.model]
    matrix_dict["model_kwargs"] = {}
    matrix_dict["recipes"] = [recipe_name]
    matrix_overrides = from_dict(MatrixConfig, matrix_dict, source)
    return cfg, matrix_overrides
