"""`python -m zoo.sweep --from-matrix runs.yaml`: a grid sweep whose agent command trains exactly one cell, claimed."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from test_matrix_e2e import tiny_matrix
from zoo.config import PlannedRun, load_matrix
from zoo.config.cli import resolve, split_argv
from zoo.results import ResultsStore
from zoo.runner.claims import ClaimStore
from zoo.runner.plan import build_plan
from zoo.training.distributed import planned_execution
from zoo.sweeps.local import agent_command, iterate_points, load_sweep, main as sweep_main
from zoo.train import main as train_main

ONE_CELL = dict(models=["mobilevit_xxs_aft", "deit_tiny"], recipes=["basic"], samplers=["fixed", "multiscale"],
                seeds=[0, 1], wandb={"mode": "disabled"})


def _records(store_dir: Path) -> list:
    return ResultsStore(store_dir).records()


def _run_id(args: list[str]) -> str:
    """The id `zoo.train args` records: its config resolved for this machine, as the plan resolves cells."""
    cfg, matrix = resolve(split_argv(args))
    return PlannedRun.plan(cfg, planned_execution(matrix.execution.device)).run_id


@pytest.fixture
def matrix_sweep(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_matrix(tmp_path, **ONE_CELL)
    assert sweep_main(["--from-matrix", "runs.yaml"]) == 0
    path = tmp_path / "sweeps" / "matrix_tiny.yaml"
    return config, path, load_sweep(path)


def test_grid_points_are_the_matrix_cells(matrix_sweep):
    config, path, spec = matrix_sweep
    assert spec.method == "grid" and spec.metric.name == "epoch/val_top1"
    plan = build_plan(load_matrix(config), ResultsStore(config.parent / "board"))
    points = list(iterate_points(spec))
    assert len(points) == len(plan) == 8
    ids = set()
    for point in points:
        command = agent_command(spec, point)
        assert command[:4] == ["/usr/bin/env", "python", "-m", "zoo.train"]
        assert set(command[4:]) == {f"--{k}={v}" for k, v in point.items()}
        ids.add(_run_id(command[4:]))
    assert ids == {s.run_id for s in plan}  # the agent trains the matrix's own cells, same run ids
    assert yaml.safe_load(path.read_text())["parameters"]["config"] == {"value": "runs.yaml"}


def test_only_narrows_the_grid_and_output_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny_matrix(tmp_path, **ONE_CELL)
    assert sweep_main(["--from-matrix", "runs.yaml", "--only", "model=deit_tiny", "-o", "x/s.yaml"]) == 0
    assert len(list(iterate_points(load_sweep(tmp_path / "x" / "s.yaml")))) == 4
    assert sweep_main(["--from-matrix", "missing.yaml"]) == 2


@pytest.mark.slow
def test_agent_command_trains_one_cell_and_respects_claims(matrix_sweep, capsys):
    config, _, spec = matrix_sweep
    board = config.parent / "board"
    point = next(iter(iterate_points(spec)))
    args = agent_command(spec, point, interpreter=sys.executable)[4:]
    run_id = _run_id(args)

    # held by a live worker (this test process): the agent's run says so and exits 0 without training
    claim = ClaimStore(board).try_claim(run_id)
    assert train_main(args) == 0 and _records(board) == []
    assert "claimed by" in capsys.readouterr().out
    claim.release()

    # released: the agent's run trains the cell (in this process: tests/test_sweep.py runs an agent's command line
    # as W&B's agent does, in a new process)
    assert train_main(args) == 0
    records = _records(board)
    assert [(r.run_id, r.status) for r in records] == [(run_id, "finished")]

    # done: a second agent on the same point trains nothing
    assert train_main(args) == 0 and len(_records(board)) == 1
    assert "already finished" in capsys.readouterr().out
