"""zoo.tracking.wandb_sink.WandbSink: offline runs read back with zoo.tracking.offline, failures that never stop training."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import wandb
from wandb.sdk.lib.config_util import save_config_file_from_dict

from zoo.tracking.wandb_sink import WandbSink, effective_mode, sweep_params
from zoo.tracking.offline import find_offline_runs, read_offline_run

CONFIG = {"model": "mobilevit_xs", "lr": 0.002, "recipe": {"name": "basic", "mixup": 0.0}, "amp": None}


def _open(root: Path, name: str = "cell", mode: str = "offline", **extra: Any) -> WandbSink:
    return WandbSink.open(
        project="zoo-test",
        entity=None,
        group="matrix",
        name=name,
        tags=["mobilevit_xs", "basic", "fixed"],
        config=CONFIG,
        mode=mode,
        dir=str(root),
        **extra,
    )


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc key either
    return tmp_path


def test_offline_run_round_trips_through_the_reader(root: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a healthy offline run warns about nothing
        sink = _open(root, job_type="train")
    assert sink.active and sink.mode == "offline"
    for step, loss in ((10, 2.0), (20, 1.5), (30, 1.25)):
        sink.log({"train/loss": loss, "train/lr": 0.001 * step}, step=step)
    sink.summary({"top1": 71.5, "status": "finished"})
    sink.log_table("per_class", ["class", "top1"], [["0", 90.0], ["1", 80.0]])
    run_dir, run_id = sink.run_dir, sink.run_id
    sink.finish(exit_code=0)
    sink.finish(exit_code=0)  # idempotent
    assert not sink.active and sink.run_id is None

    assert find_offline_runs(root) == [run_dir]
    run = read_offline_run(run_dir)
    assert run.run_id == run_id
    assert (run.name, run.project, run.group, run.job_type) == ("cell", "zoo-test", "matrix", "train")
    assert run.tags == ["mobilevit_xs", "basic", "fixed"]
    assert run.config == CONFIG
    logged = [(row["_step"], row["train/loss"]) for row in run.history if "train/loss" in row]
    assert logged == [(10, 2.0), (20, 1.5), (30, 1.25)]
    assert run.summary["top1"] == 71.5 and run.summary["status"] == "finished"
    assert run.table("per_class") == (["class", "top1"], [["0", 90.0], ["1", 80.0]])
    assert run.exit_code == 0


def test_failed_run_is_marked_and_context_manager_finishes(root: Path) -> None:
    with pytest.raises(RuntimeError), _open(root) as sink:
        sink.log({"x": 1}, step=1)
        run_dir = sink.run_dir
        raise RuntimeError("training blew up")
    assert not sink.active
    assert read_offline_run(run_dir).exit_code == 1


def test_init_failure_warns_and_sink_is_a_noop(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_init(*args: Any, **kwargs: Any) -> None:
        raise wandb.errors.CommError("network unreachable")

    monkeypatch.setattr(wandb, "init", broken_init)
    with pytest.warns(RuntimeWarning, match="could not start a run.*network unreachable"):
        sink = _open(root)
    assert not sink.active and sink.run_id is None and sink.run_dir is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the no-op sink is silent from here on
        sink.log({"train/loss": 1.0}, step=1)
        sink.summary({"top1": 1.0})
        sink.log_table("t", ["a"], [[1]])
        sink.log_image("img", root / "missing.png")
        sink.finish(exit_code=0)
    assert find_offline_runs(root) == []


def test_failure_while_logging_warns_once_then_stops_calling_wandb(root: Path) -> None:
    sink = _open(root)
    run = sink._run
    calls = []

    def broken_log(*args: Any, **kwargs: Any) -> None:
        calls.append(args)
        raise OSError("disk full")

    run.log = broken_log
    with pytest.warns(RuntimeWarning, match="disk full") as caught:
        for step in range(5):
            sink.log({"x": step}, step=step)
        sink.summary({"top1": 3.0})
    assert len(calls) == 1 and len(caught) == 1
    assert not sink.active
    sink.finish()


def test_disabled_mode_writes_nothing(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_run(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("wandb.init called in disabled mode")

    monkeypatch.setattr(wandb, "init", must_not_run)
    sink = _open(root, mode="disabled")
    sink.log({"x": 1}, step=1)
    sink.summary({"top1": 1.0})
    sink.finish()
    assert not sink.active and sink.run_id is None
    assert list(root.iterdir()) == []


def test_two_sinks_in_one_process_make_two_runs(root: Path) -> None:
    ids = []
    for index in range(2):
        sink = _open(root, name=f"cell-{index}")
        sink.log({"index": index}, step=0)
        ids.append(sink.run_id)
        sink.finish()
    assert len(set(ids)) == 2
    # Both may start within the same second, so the folder order (by start time) can tie: key by run id.
    runs = {r.run_id: r for r in map(read_offline_run, find_offline_runs(root))}
    assert sorted(runs) == sorted(ids)
    assert [runs[run_id].name for run_id in ids] == ["cell-0", "cell-1"]
    assert [runs[run_id].history[0]["index"] for run_id in ids] == [0, 1]


def test_mode_resolution(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE")
    with pytest.warns(RuntimeWarning, match="no API key"):
        assert effective_mode("online") == "offline"  # never an interactive login prompt
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert effective_mode("online") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the environment can lower the mode ...
    assert effective_mode("online") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "online")  # ... but not raise it
    assert effective_mode("offline") == "offline"
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")  # a sweep agent's run must reach its server
    assert effective_mode("offline") == "online"
    assert effective_mode("disabled") == "disabled"
    with pytest.raises(ValueError, match="allowed"):
        effective_mode("cloud")


def test_sweep_params_from_the_agent_param_file(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sweep_params() == {}
    param_file = root / "sweep-abc123" / "config-run1.yaml"
    # What `wandb agent` writes before starting the program, with the agent's own writer.
    save_config_file_from_dict(str(param_file), {"lr": {"value": 0.004}, "recipe.mixup": {"value": 0.5},
                                                 "amp": {"value": False}})
    assert param_file.read_text().startswith("wandb_version: 1")
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(param_file))
    assert sweep_params() == {}  # not under an agent: ignore stale files
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    assert sweep_params() == {"lr": 0.004, "recipe.mixup": 0.5, "amp": False}
