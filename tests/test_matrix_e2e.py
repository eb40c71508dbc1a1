"""`python -m zoo.run` on a tiny matrix: trains 2 models x 2 recipes x 2 samplers, reruns skip, a kill resumes."""
import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from _cli import Forked, run_command
from zoo.results import ResultsStore


def tiny_matrix(tmp_path: Path, **extra) -> Path:
    data = {
        "name": "tiny",
        "data": {"kind": "digits", "options": {"source_size": 16}, "max_train_samples": 64, "max_val_samples": 40,
                 "eval_crop_pct": 1.0},
        "models": ["mobilevit_xxs_aft", "deit_tiny"],
        "model_kwargs": {"deit_tiny": {"depth": 2}},
        "recipes": ["basic", "advanced"],
        "samplers": ["fixed", "multiscale"],
        "resolution": {"base_resolution": 32, "resolutions": [24, 32, 40]},
        "budget": {"epochs": 1, "batch_size": 16, "lr_scaling": "none", "warmup_epochs": 0},
        "output_dir": str(tmp_path / "out"),
        "store_dir": str(tmp_path / "board"),
        "wandb": {"mode": "offline"},
        "execution": {"progress": False, "threads": 1},
        "measure": {"enabled": False},
        **extra,
    }
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def zoo_run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo.run", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def zoo_run_here(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`zoo.run`'s main in this process, from `cwd`, its output captured. For the reruns after a test's first run
    (that one goes through the real command): a new interpreter costs 6-7 CPU-seconds of imports on 2 cores."""
    from zoo.run import main

    out, err, here, handler = io.StringIO(), io.StringIO(), os.getcwd(), signal.getsignal(signal.SIGTERM)
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(here)
        signal.signal(signal.SIGTERM, handler)
    return subprocess.CompletedProcess(["zoo.run", *args], code, out.getvalue(), err.getvalue())


@pytest.mark.slow
def test_tiny_matrix_trains_reruns_nothing_and_writes_leaderboard(tmp_path):
    path = tiny_matrix(tmp_path)
    proc = zoo_run(str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = ResultsStore(tmp_path / "board").latest()
    assert len(records) == 8 and {r.status for r in records.values()} == {"finished"}
    cells = {(r.model, r.recipe, r.sampler) for r in records.values()}
    assert len(cells) == 8
    board = (tmp_path / "board" / "README.md").read_text()
    assert "basic recipe, multiscale sampler" in board and "deit_tiny" in board

    again = zoo_run_here(str(path), cwd=tmp_path)
    assert again.returncode == 0 and "8 runs, 8 done, 0 to train" in again.stdout
    assert len(ResultsStore(tmp_path / "board").records()) == 8  # nothing retrained

    dry = zoo_run_here(str(path), "--dry-run", "--only", "model=deit_tiny", "--only", "sampler=fixed",
                       cwd=tmp_path)
    assert dry.returncode == 0 and "2 runs, 2 done" in dry.stdout and "mobilevit" not in dry.stdout


@pytest.mark.slow
def test_kill_9_mid_matrix_then_rerun_finishes_the_work(tmp_path):
    path = tiny_matrix(tmp_path, budget={"epochs": 2, "batch_size": 16, "lr_scaling": "none", "warmup_epochs": 0},
                       models=["mobilevit_xxs_aft"], model_kwargs={}, recipes=["basic"])
    proc = Forked("zoo.run", [str(path)], cwd=tmp_path)  # a real process to kill, without a new interpreter
    deadline = time.time() + 300
    checkpoints = []
    while time.time() < deadline and not checkpoints:  # kill once the first epoch's checkpoint exists
        assert proc.poll() is None, proc.output()[1][-3000:]
        checkpoints = list((tmp_path / "out").rglob("checkpoint.pt"))
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checkpoints, "no checkpoint appeared"
    before = ResultsStore(tmp_path / "board").records()
    assert len(before) < 2
    rerun = run_command("zoo.run", str(path), cwd=tmp_path)  # a new process, as after a real kill (W&B included)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    latest = ResultsStore(tmp_path / "board").latest()
    assert len(latest) == 2 and all(r.status == "finished" and r.epochs_done == 2 for r in latest.values())
    assert any(r.resumed_from_epoch == 1 for r in latest.values())
