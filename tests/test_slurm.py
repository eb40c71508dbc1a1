"""The SLURM launcher through submitit, run here with submitit's LocalExecutor (there is no SLURM on CI)."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from test_matrix_e2e import tiny_matrix
from zoo.results import ResultsStore
from zoo.run import main as zoo_run_main
from zoo.runner.matrix import WorkerSpec
from zoo.runner.slurm import MatrixWorker, make_executor


def _records(store_dir: Path) -> list[dict]:
    return [vars(r) for r in ResultsStore(store_dir).records()]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_submitit_local_array_trains_every_cell_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tiny_matrix(tmp_path, models=["mobilevit_xxs_aft"], model_kwargs={}, recipes=["basic"],
                       wandb={"mode": "disabled"})
    code = zoo_run_main([str(path), "--launcher", "submitit-local", "--array-parallelism", "2",
                         "--slurm-dir", str(tmp_path / "slurm"), "--time", "10", "--no-leaderboard"])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert "submitted 2 workers" in out and "2 finished, 0 diverged, 0 failed in this submission" in out
    records = _records(tmp_path / "board")
    assert len(records) == 2 and {r["status"] for r in records} == {"finished"}
    assert len({r["run_id"] for r in records}) == 2


def test_slurm_without_sbatch_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # no sbatch on this PATH
    path = tiny_matrix(tmp_path, models=["mobilevit_xxs_aft"], model_kwargs={}, recipes=["basic"],
                       samplers=["fixed"])
    assert zoo_run_main([str(path), "--launcher", "slurm", "--partition", "gpu"]) == 2
    assert "sbatch" in capsys.readouterr().err
    assert not (tmp_path / "board" / "results.jsonl").exists()


def test_slurm_executor_parameters(tmp_path, monkeypatch):
    from submitit.slurm.slurm import SlurmExecutor

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # pretend srun exists
    executor = make_executor("slurm", tmp_path, name="zoo-x", time_min=90, gpus_per_run=4, array=6,
                             partition="gpu")
    params = executor._executor.parameters
    assert params["partition"] == "gpu" and params["time"] == 90 and params["gpus_per_node"] == 4
    assert params["ntasks_per_node"] == 4 and params["array_parallelism"] == 6
    sbatch = executor._executor._make_submission_file_text("python -m submitit.core._submit X", "uid")
    assert "#SBATCH --partition=gpu" in sbatch and "#SBATCH --signal=USR2@120" in sbatch
    assert "#SBATCH --gpus-per-node=4" in sbatch and "#SBATCH --ntasks-per-node=4" in sbatch


@pytest.mark.slow
def test_preempted_worker_records_interrupted_requeues_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tiny_matrix(tmp_path, models=["mobilevit_xxs_aft"], model_kwargs={}, recipes=["basic"],
                       samplers=["fixed"], wandb={"mode": "disabled"},
                       budget={"epochs": 3, "batch_size": 16, "lr_scaling": "none", "warmup_epochs": 0})
    executor = make_executor("submitit-local", tmp_path / "slurm", name="zoo-tiny", time_min=10, gpus_per_run=1,
                             array=1, partition=None)
    job = executor.submit(MatrixWorker(str(tmp_path), WorkerSpec(str(path), since_offset=0)))
    claims = tmp_path / "board" / "claims"
    holder, deadline = None, time.time() + 180
    while holder is None and time.time() < deadline:
        assert not job.done(), job.stderr()
        if list((tmp_path / "out").rglob("checkpoint.pt")):
            holder = next((json.loads(p.read_text()) for p in claims.glob("*.json")), None)
        time.sleep(0.05)
    assert holder is not None, "no checkpoint appeared"
    os.kill(holder["pid"], signal.SIGUSR2)  # what SLURM sends (via submitit's --signal) before the limit
    assert job.result() == 0  # the requeued task finished the matrix
    statuses = [r["status"] for r in _records(tmp_path / "board")]
    assert statuses == ["interrupted", "finished"], statuses
    final = _records(tmp_path / "board")[-1]
    assert final["resumed_from_epoch"] >= 1 and final["epochs_done"] == 3
    assert "pre-empted" in job.stderr()
    assert not list(claims.glob("*.json"))
