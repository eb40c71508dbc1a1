"""zoo.sweeps: W&B sweep files, their local grid/random search, and the exact commands a W&B agent would run."""
from __future__ import annotations

import importlib
import json
import math
import sys
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from zoo.sweeps.local import PointResult, agent_command, iterate_points, load_sweep, main, parse_sweep, run_local
from zoo.config.typed import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
SWEEP_FILES = sorted((REPO_ROOT / "sweeps").glob("*.yaml"))
# The names the training CLI uses today; a rename in zoo.train/zoo.config is a one-line change here.
METRIC_NAME = "epoch/val_top1"
TRAIN_MODULE = "zoo.train"
CLI_MODULE = "zoo.config.cli"  # where zoo.train parses its command line
NAME_FIELDS = {"recipe": "name", "sampler": "name"}  # `--recipe=basic` picks the recipe by name
TINY_RUN = {  # added to a sweep point so it trains in seconds on the bundled digits data
    "config": "runs.yaml",
    "model": "mobilevit_xxs",
    "sampler": "fixed",
    "epochs": 1,
    "warmup_epochs": 0,  # a warm-up must be shorter than the budget
    "batch_size": 128,
    "sampler.base_resolution": 32,
    "sampler.resolutions": [32],
    "execution.device": "cpu",
    "execution.threads": 1,  # pytest runs two workers on two cores
    "execution.progress": False,
    "wandb.mode": "offline",
    "recipe.ema": False,  # one evaluation per epoch instead of two
}


def _spec(data: dict[str, Any]):
    return parse_sweep({"program": "train.py", **data}, "test.yaml")


# ---------------------------------------------------------------------------------------------- the real files
def test_there_are_sweep_files() -> None:
    names = {p.stem for p in SWEEP_FILES}
    assert {"mobilevit_xs_basic_lr_wd", "advanced_mixup_cutmix", "mobilevit_patch_size"} <= names


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_sweep_file_parses_and_targets_zoo_train(path: Path) -> None:
    spec = load_sweep(path)
    assert spec.metric is not None and (spec.metric.name, spec.metric.goal) == (METRIC_NAME, "maximize")
    assert spec.program and (REPO_ROOT / spec.program).is_file()
    points = list(iterate_points(spec, count=5, seed=0))
    assert 1 <= len(points) <= 5
    command = agent_command(spec, points[0])
    assert command[:4] == ["/usr/bin/env", "python", "-m", TRAIN_MODULE]
    assert set(command[4:]) == {f"--{k}={v}" for k, v in points[0].items()}


def _config_value(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    if is_dataclass(node):
        node = getattr(node, NAME_FIELDS[key.split(".")[-1]])
    return node


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_every_parameter_reaches_a_real_config_field(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each point's agent command is parsed by the real training CLI, and every value lands where it should."""
    train = importlib.import_module(CLI_MODULE)
    from zoo.models import create

    monkeypatch.chdir(REPO_ROOT)  # sweep files name matrix files relative to the checkout, as the agent runs them
    spec = load_sweep(path)
    points = list(iterate_points(spec, count=12, seed=1))
    for point in points:
        argv = agent_command(spec, point)[4:]
        cfg, matrix = train.resolve(train.split_argv(argv))
        for key, value in point.items():
            if key == "config":
                assert Path(value).is_file(), f"{path.name}: config: {value} not found"
                continue
            if key.split(".")[0] in train.OUTER_KEYS:
                assert _config_value(matrix, key) == value, f"{path.name}: {key}"
                continue
            field = train.ALIASES.get(key, key)
            expected = tuple(value) if isinstance(value, list) and not field.startswith("model_kwargs.") else value
            assert _config_value(cfg, field) == expected, f"{path.name}: {key}"
    if any(key.startswith("model_kwargs.") for key in points[-1]):
        # Free-form model knobs are only checked by the model itself: build the last point's once and find each
        # knob in the built model (a knob this test does not know fails here until it is checked).
        cfg, _ = train.resolve(train.split_argv(agent_command(spec, points[-1])[4:]))
        _assert_knobs_reach_the_model(create(cfg.model, num_classes=10, **cfg.model_kwargs), cfg.model_kwargs)


def _assert_knobs_reach_the_model(model: Any, knobs: dict[str, Any]) -> None:
    from zoo.models.mobilevit_blocks import MobileViTBlock

    blocks = [m for m in model.modules() if isinstance(m, MobileViTBlock)]
    assert blocks and set(knobs) <= {"patch_size", "fusion"}, sorted(knobs)
    if "patch_size" in knobs:
        assert [tuple(b.patch) for b in blocks] == [(p, p) for p in knobs["patch_size"]]
    if "fusion" in knobs:
        assert [b.fuse is not None for b in blocks] == [bool(knobs["fusion"])] * len(blocks)


# ---------------------------------------------------------------------------------------------- search
def test_grid_is_the_sorted_cartesian_product_with_caps() -> None:
    spec = _spec({"method": "grid", "parameters": {"b": {"values": ["x", "y", "z"]}, "a": {"values": [1, 2]},
                                                   "c": {"value": True}}})
    points = list(iterate_points(spec))
    assert spec.grid_size() == 6 and len(points) == 6
    assert [(p["a"], p["b"]) for p in points] == [(1, "x"), (1, "y"), (1, "z"), (2, "x"), (2, "y"), (2, "z")]
    assert all(p["c"] is True for p in points)
    assert list(iterate_points(spec, count=2)) == points[:2]
    capped = _spec({"method": "grid", "run_cap": 4, "parameters": {"a": {"values": [1, 2, 3, 4, 5]}}})
    assert [p["a"] for p in iterate_points(capped, count=10)] == [1, 2, 3, 4]


def test_grid_expands_discrete_distributions_like_the_engine() -> None:
    spec = _spec({"method": "grid", "parameters": {
        "n": {"min": 2, "max": 4},  # int_uniform, both ends included
        "q": {"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25},  # numpy.arange: max excluded
        "group": {"parameters": {"x": {"values": [1, 2]}}},  # a nested group is one dict-valued parameter
    }})
    points = list(iterate_points(spec))
    assert len(points) == 3 * 4 * 2
    assert sorted({p["n"] for p in points}) == [2, 3, 4]
    assert sorted({p["q"] for p in points}) == [0.0, 0.25, 0.5, 0.75]
    assert [p["group"] for p in points[::12]] == [{"x": 1}, {"x": 2}]  # "group.x" sorts first: slowest
    assert spec.parameter_names == ["group.x", "n", "q"]


def test_random_search_is_seeded_and_respects_each_distribution() -> None:
    spec = _spec({"method": "random", "parameters": {
        "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
        "k": {"distribution": "int_uniform", "min": 1, "max": 3},
        "mix": {"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.5},
        "u": {"min": 0.0, "max": 2.0},
        "opt": {"values": ["adamw", "sgd"], "probabilities": [0.9, 0.1]},
        "fixed": {"value": "same"},
    }})
    draws = list(iterate_points(spec, count=600, seed=3))
    assert draws == list(iterate_points(spec, count=600, seed=3))
    assert draws != list(iterate_points(spec, count=600, seed=4))
    lrs = [d["lr"] for d in draws]
    assert all(1e-4 <= v <= 1e-2 for v in lrs)
    below_geometric_mean = sum(v < 1e-3 for v in lrs) / len(lrs)
    assert 0.4 < below_geometric_mean < 0.6  # log-uniform: half the mass below sqrt(min * max)
    assert {d["k"] for d in draws} == {1, 2, 3} and all(isinstance(d["k"], int) for d in draws)
    assert {d["mix"] for d in draws} == {0.0, 0.5, 1.0}
    assert all(0.0 <= d["u"] <= 2.0 for d in draws) and not all(float(d["u"]).is_integer() for d in draws)
    assert 0.8 < sum(d["opt"] == "adamw" for d in draws) / len(draws) < 0.97
    assert {d["fixed"] for d in draws} == {"same"}


def test_log_uniform_takes_log_bounds_and_values_variant_takes_values() -> None:
    spec = _spec({"method": "random", "parameters": {
        "a": {"distribution": "log_uniform", "min": 0.0, "max": 1.0},
        "b": {"distribution": "inv_log_uniform_values", "min": 0.1, "max": 10.0},
    }})
    draws = list(iterate_points(spec, count=200))
    assert all(1.0 <= d["a"] <= math.e for d in draws)
    assert all(0.1 <= d["b"] <= 10.0 for d in draws)


def test_random_needs_a_count_and_bayes_needs_the_server() -> None:
    spec = _spec({"method": "random", "parameters": {"a": {"min": 0.0, "max": 1.0}}})
    with pytest.raises(ConfigError, match="--count"):
        list(iterate_points(spec))
    bayes = _spec({"method": "bayes", "metric": {"name": METRIC_NAME, "goal": "maximize"},
                   "parameters": {"a": {"min": 0.0, "max": 1.0}}})
    with pytest.raises(ConfigError, match="W&B server"):
        list(iterate_points(bayes, count=3))


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"method": "grid", "parameters": {"a": {"values": [1]}}, "metrc": {}}, "metrc: unknown key"),
        ({"method": "annealing", "parameters": {"a": {"values": [1]}}}, "method: 'annealing' is not allowed"),
        ({"method": "grid", "parameters": {}}, "parameters: expected a non-empty mapping"),
        ({"method": "grid", "parameters": {"a": {"valuse": [1]}}}, "parameters.a.valuse: unknown key"),
        ({"method": "grid", "parameters": {"a": {"distribution": "gaussian", "min": 0, "max": 1}}}, "gaussian"),
        ({"method": "grid", "parameters": {"a": {"min": 0.0, "max": 1.0}}}, "uniform cannot be gridded"),
        ({"method": "random", "parameters": {"a": {"min": 1.0, "max": 1.0}}}, "not less than max"),
        ({"method": "random", "parameters": {"a": {"distribution": "log_uniform_values", "min": 0, "max": 1}}},
         "min > 0"),
        ({"method": "random", "parameters": {"a": {"values": [1, 2], "probabilities": [0.5, 0.6]}}}, "sum to 1"),
        ({"method": "bayes", "parameters": {"a": {"min": 0.0, "max": 1.0}}}, "metric: bayes search needs"),
        ({"method": "grid", "metric": {"name": "x", "goal": "up"}, "parameters": {"a": {"value": 1}}},
         "metric.goal: 'up'"),
    ],
)
def test_invalid_sweep_files_say_file_key_and_allowed(data: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        _spec(data)
    assert str(err.value).startswith("test.yaml: ") and needle in str(err.value)


def test_default_command_needs_a_program() -> None:
    with pytest.raises(ConfigError, match=r"program: required"):
        parse_sweep({"method": "grid", "parameters": {"a": {"value": 1}}}, "test.yaml")


# ---------------------------------------------------------------------------------------------- agent command
POINT = {"lr": 0.002, "amp": False, "ema": True, "recipe.mixup": 0.5, "model_kwargs.patch_size": [4, 4, 4]}


def test_default_command_is_env_interpreter_program_args() -> None:
    spec = _spec({"method": "grid", "parameters": {"a": {"value": 1}}})
    assert agent_command(spec, POINT) == [
        "/usr/bin/env", "python", "train.py",
        "--lr=0.002", "--amp=False", "--ema=True", "--recipe.mixup=0.5", "--model_kwargs.patch_size=[4, 4, 4]",
    ]


def _split_on(items: list[str], separator: str) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    for item in items:
        if item == separator:
            groups.append([])
        else:
            groups[-1].append(item)
    return groups


def test_every_documented_macro(tmp_path: Path) -> None:
    spec = _spec({"method": "grid", "parameters": {"a": {"value": 1}}, "command": [
        "${interpreter}", "${program}", "${args_no_hyphens}", "|", "${args_no_boolean_flags}", "|", "${args_json}",
        "|", "${args_json_file}", "|", "${no_such_macro}", "--out=${envvar:ZOO_OUT}", "--tag=${envvar:ZOO_UNSET}",
        "--literal=${args}",
    ]})
    command = agent_command(spec, POINT, interpreter="/venv/bin/python", env={"ZOO_OUT": "/data/out"},
                            args_json_file=tmp_path / "args.json")
    no_hyphens, no_booleans, as_json, json_file, rest = _split_on(command, "|")
    assert no_hyphens == ["/venv/bin/python", "train.py", "lr=0.002", "amp=False", "ema=True", "recipe.mixup=0.5",
                          "model_kwargs.patch_size=[4, 4, 4]"]
    # False booleans are dropped, true ones become bare flags.
    assert no_booleans == ["--lr=0.002", "--ema", "--recipe.mixup=0.5", "--model_kwargs.patch_size=[4, 4, 4]"]
    assert len(as_json) == 1 and json.loads(as_json[0]) == POINT
    assert json_file == [str(tmp_path / "args.json")]
    # Unknown macros vanish; env vars expand inside any element (unset: the agent leaves the name); ${args} inside
    # a longer element is not a macro.
    assert rest == ["--out=/data/out", "--tag=ZOO_UNSET", "--literal=${args}"]
    with pytest.raises(ValueError, match="args_json_file"):
        agent_command(spec, POINT)


# ---------------------------------------------------------------------------------------------- local runs
STUB = """import json, os, sys
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
sys.exit(int(os.environ.get("STUB_EXIT", "0")))
"""


def _stub_sweep(tmp_path: Path, command: list[str] | None = None) -> Path:
    (tmp_path / "stub.py").write_text(STUB)
    data: dict[str, Any] = {
        "program": str(tmp_path / "stub.py"),
        "method": "grid",
        "metric": {"name": METRIC_NAME, "goal": "maximize"},
        "parameters": {"lr": {"values": [0.001, 0.004]}, "amp": {"value": False}, "model": {"value": "mobilevit_xs"}},
    }
    if command:
        data["command"] = command
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_local_grid_runs_each_point_as_a_subprocess(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUB_LOG", str(tmp_path / "argv.jsonl"))
    results = run_local(_stub_sweep(tmp_path), log=lambda line: None)
    assert [r.returncode for r in results] == [0, 0]
    received = [json.loads(line) for line in (tmp_path / "argv.jsonl").read_text().splitlines()]
    assert received == [
        ["--amp=False", "--lr=0.001", "--model=mobilevit_xs"],
        ["--amp=False", "--lr=0.004", "--model=mobilevit_xs"],
    ]


def test_local_args_json_file_is_written_for_the_program(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUB_LOG", str(tmp_path / "argv.jsonl"))
    seen: list[dict[str, Any]] = []

    def runner(command: list[str]) -> int:
        seen.append(json.loads(Path(command[-1]).read_text()))
        return 0

    run_local(_stub_sweep(tmp_path, ["${interpreter}", "${program}", "${args_json_file}"]), runner=runner,
              log=lambda line: None)
    assert seen == [{"amp": False, "lr": 0.001, "model": "mobilevit_xs"},
                    {"amp": False, "lr": 0.004, "model": "mobilevit_xs"}]


def test_failed_points_are_recorded_and_a_broken_command_stops_early(tmp_path: Path) -> None:
    spec = {"program": "p.py", "method": "grid", "parameters": {"i": {"values": list(range(6))}}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    codes = iter([1, 0, 1, 0, 0, 0])
    results = run_local(path, runner=lambda command: next(codes), log=lambda line: None)
    assert [r.returncode for r in results] == [1, 0, 1, 0, 0, 0]  # one success: keep going
    calls: list[list[str]] = []
    results = run_local(path, runner=lambda command: calls.append(command) or 2, log=lambda line: None)
    assert len(calls) == 3 and [r.returncode for r in results] == [2, 2, 2, None, None, None]
    assert all(isinstance(r, PointResult) for r in results)


def test_cli_prints_server_instructions_dry_runs_and_rejects_bad_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = _stub_sweep(tmp_path)
    assert main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert f"wandb sweep {sweep}" in out and "wandb agent" in out and "--local" in out
    assert main([str(sweep), "--local", "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert err.count("[sweep ") == 2 and "--lr=0.004" in err
    assert not (tmp_path / "argv.jsonl").exists()  # dry run: nothing executed
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: grid\nprogram: x.py\nparameters: {lr: {vals: [1]}}\n")
    assert main([str(bad), "--local"]) == 2
    assert "parameters.lr.vals: unknown key" in capsys.readouterr().err


@pytest.mark.slow
def test_agent_command_for_a_real_sweep_point_trains_a_tiny_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real sweep file's first point, shrunk by TINY_RUN, run locally exactly as the agent would run it."""
    from zoo.results import ResultsStore
    from zoo.tracking.offline import find_offline_runs, read_offline_run

    spec = yaml.safe_load((REPO_ROOT / "sweeps" / "mobilevit_xs_basic_lr_wd.yaml").read_text())
    params = {k: v for k, v in spec["parameters"].items() if k not in TINY_RUN}
    params.update({k: {"value": v} for k, v in TINY_RUN.items()})
    params.update({"output_dir": {"value": str(tmp_path / "out")}, "store_dir": {"value": str(tmp_path / "store")}})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**spec, "parameters": params}))
    monkeypatch.chdir(REPO_ROOT)

    (result,) = run_local(path, count=1, interpreter=sys.executable, log=lambda line: None)
    assert result.returncode == 0
    lr, weight_decay = result.point["lr"], result.point["recipe.weight_decay"]
    (record,) = ResultsStore(tmp_path / "store").records()
    assert record.status == "finished"
    assert (record.config.lr, record.config.recipe.weight_decay) == (lr, weight_decay)
    (run,) = [read_offline_run(d) for d in find_offline_runs(tmp_path / "out")]
    assert (run.config["lr"], run.config["recipe"]["weight_decay"]) == (lr, weight_decay)
    assert METRIC_NAME in run.summary and run.finished
