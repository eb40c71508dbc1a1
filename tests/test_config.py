"""runs.yaml and recipe validation: one clear error naming file, key path and allowed values; exit 2; nothing written."""
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from zoo.config import RunConfig, load_matrix, load_recipe
from zoo.config.typed import ConfigError

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def minimal(**extra) -> dict:
    return {"models": ["mobilenetv2_100"], "recipes": ["basic"], "samplers": ["fixed"], **extra}


def test_default_runs_yaml_and_bigger_configs_parse():
    expected = {"runs.yaml": ("digits-default", "digits", 8),
                "runs/digits-long.yaml": ("digits-long", "digits", 24),
                "runs/cifar.yaml": ("cifar10", "cifar10", 100),
                "runs/imagenet.yaml": ("imagenet1k-300ep", "imagefolder", 300)}
    for name, (title, kind, epochs) in expected.items():
        matrix = load_matrix(REPO / name)
        assert (matrix.name, matrix.data.kind, matrix.budget.epochs) == (title, kind, epochs), name
        assert (matrix.recipes, matrix.samplers) == (("basic", "advanced"), ("fixed", "multiscale")), name


def test_the_long_digits_matrix_is_the_default_at_three_times_the_budget():
    default, long = load_matrix(REPO / "runs.yaml"), load_matrix(REPO / "runs/digits-long.yaml")
    assert (long.budget.epochs, long.budget.ema_time_scale) == (3 * default.budget.epochs,
                                                                pytest.approx(3 * default.budget.ema_time_scale))
    same_budget = replace(long.budget, epochs=default.budget.epochs, ema_time_scale=default.budget.ema_time_scale)
    assert same_budget == default.budget
    assert replace(long, budget=default.budget, name=default.name, output_dir=default.output_dir,
                   store_dir=default.store_dir) == default


def test_recipes_differ_in_regularisation_only():
    basic, advanced = load_recipe("basic"), load_recipe("advanced")
    assert basic.auto_augment is None and advanced.auto_augment == "rand-m9-mstd0.5-inc1"
    assert (basic.mixup, advanced.mixup, advanced.cutmix) == (0.0, 0.8, 1.0)
    assert (basic.weight_decay, advanced.weight_decay) == (0.01, 0.05)
    assert (basic.re_prob, advanced.re_prob, advanced.drop_path) == (0.0, 0.25, 0.1)
    assert basic.ema_decay == pytest.approx(1 - 0.0005) and advanced.ema_decay == 0.99996
    assert basic.label_smoothing == advanced.label_smoothing == 0.1


@pytest.mark.parametrize(
    "data, key, needle",
    [
        (minimal(budget={"epochz": 3}), "budget.epochz", "allowed: accum_steps"),
        (minimal(budget={"epochs": "three"}), "budget.epochs", "expected a number"),
        (minimal(models=["mobilevit_xss"]), "models[0]", "mobilevit_xxs"),
        (minimal(recipes=["fancy"]), "recipes[0]", "allowed: advanced, basic"),
        (minimal(samplers=["random"]), "samplers[0]", "'fixed', 'multiscale'"),
        (minimal(data={"kind": "mnist"}), "data.kind", "'digits'"),
        (minimal(resolution={"mode": "v2"}), "resolution.mode", "'scaled', 'v0.1'"),
        ({**minimal(), "colour": 1}, "colour", "allowed:"),
    ],
)
def test_bad_config_names_file_key_and_allowed(tmp_path, data, key, needle):
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_matrix(path)
    message = str(err.value)
    assert str(path) in message and key in message and needle in message


def test_recipe_overrides_are_typed():
    assert load_recipe("advanced", {"mixup": "0.5"}).mixup == 0.5
    with pytest.raises(ConfigError, match="mixup_prob"):
        load_recipe("basic", {"mixup_prob": 2.0})


def test_zoo_run_main_returns_2_on_a_bad_config_and_writes_nothing(tmp_path, monkeypatch, capsys):
    """In-process (zoo.run's main); the one `python -m zoo.run` subprocess for exit 2 is in test_bad_input.py."""
    from zoo.run import main

    out = tmp_path / "out"
    path = write(tmp_path, minimal(models=["nope"], output_dir=str(out), store_dir=str(out / "board")))
    monkeypatch.chdir(tmp_path)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: models[0]") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.yaml"]


def test_run_id_is_stable_and_tracks_every_result_field():
    recipe = load_recipe("basic")
    from zoo.config import SamplerConfig

    a = RunConfig(model="deit_tiny", recipe=recipe, sampler=SamplerConfig())
    b = RunConfig(model="deit_tiny", recipe=recipe, sampler=SamplerConfig())
    assert a.run_id() == b.run_id()
    assert RunConfig(model="deit_tiny", recipe=recipe, sampler=SamplerConfig(), lr=0.001).run_id() != a.run_id()
    assert RunConfig(model="deit_tiny", recipe=load_recipe("basic", {"mixup": 0.1}),
                     sampler=SamplerConfig()).run_id() != a.run_id()


@pytest.mark.parametrize(
    "data, key, needle",
    [
        (minimal(budget={"epochs": -1}), "budget.epochs", "must be > 0, got -1"),
        (minimal(budget={"batch_size": 0}), "budget.batch_size", "must be > 0"),
        (minimal(budget={"batch_size": 33}), "budget.batch_size", "must be even"),
        (minimal(budget={"accum_steps": 0}), "budget.accum_steps", "must be > 0"),
        (minimal(budget={"lr": -0.1}), "budget.lr", "must be > 0"),
        (minimal(budget={"optimizer": "adamz"}), "budget.optimizer", "a timm optimizer name"),
        (minimal(budget={"epochs": 3, "warmup_epochs": 3}), "budget.warmup_epochs", "shorter than epochs (3)"),
        (minimal(budget={"ema_time_scale": 0}), "budget.ema_time_scale", "must be > 0"),
        (minimal(resolution={"resolutions": []}), "resolution.resolutions", "non-empty"),
        (minimal(resolution={"resolutions": [0, 32]}), "resolution.resolutions", "positive sizes"),
        (minimal(resolution={"resolutions": [32, 32]}), "resolution.resolutions", "free of duplicates"),
        (minimal(resolution={"base_resolution": -8}), "resolution.base_resolution", "must be > 0"),
        (minimal(samplers=["fixed", "fixed"]), "samplers", "free of duplicates"),
        (minimal(models=["deit_tiny", "deit_tiny"]), "models", "free of duplicates"),
        (minimal(seeds=[0, 1, 0]), "seeds", "free of duplicates"),
        (minimal(data={"workers": -1}), "data.workers", "must be >= 0"),
        (minimal(data={"kind": "imagefolder"}), "data.root", "a folder for data.kind 'imagefolder'"),
        (minimal(data={"eval_crop_pct": 1.5}), "data.eval_crop_pct", "within (0, 1]"),
        (minimal(samplers=["multiscale"], budget={"batch_size": 2},
                 resolution={"base_resolution": 32, "resolutions": [32, 64]}), "budget.batch_size", "at 64 px"),
    ],
)
def test_out_of_range_values_name_file_key_and_what_is_allowed(tmp_path, data, key, needle):
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_matrix(path)
    message = str(err.value)
    assert str(path) in message and f"{key}:" in message and needle in message, message


def test_recipe_values_are_checked_with_their_key(tmp_path):
    for override, needle in [({"scale": [0.9, 0.1]}, "scale: need 0 < min <= max <= 1"),
                             ({"ema_decay": 1.5}, "ema_decay: must be within (0, 1)"),
                             ({"mixup": -1}, "mixup: must be >= 0"), ({"re_prob": 2}, "re_prob: must be within")]:
        with pytest.raises(ConfigError, match=None) as err:
            load_recipe("advanced", override)
        assert needle in str(err.value) and "advanced.yaml" in str(err.value)


def test_recipe_overrides_adapt_every_recipe_alike_and_are_checked(tmp_path):
    from zoo.results import ResultsStore
    from zoo.runner.plan import build_plan

    matrix = load_matrix(write(tmp_path, minimal(recipes=["basic", "advanced"], recipe_overrides={"hflip": 0.0})))
    plan = build_plan(matrix, ResultsStore(tmp_path / "store"))
    assert {spec.config.recipe.hflip for spec in plan} == {0.0}
    assert {spec.config.recipe.name for spec in plan} == {"basic", "advanced"}
    with pytest.raises(ConfigError, match=r"runs.yaml: recipe_overrides.hflip: must be within \[0, 1\], got 3"):
        load_matrix(write(tmp_path, minimal(recipe_overrides={"hflip": 3})))
