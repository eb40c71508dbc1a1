"""`make gpu-check` without a GPU: the real command runs the CPU path at a tiny size, end to end, and says so."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.config import REPO_ROOT


def section(text: str, title: str) -> list[str]:
    """The markdown table rows (header and separator left out) of the section starting `## <title>`."""
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    rows = [line for line in text[start:end if end > 0 else None].splitlines() if line.startswith("| ")]
    return rows[1:]


@pytest.mark.slow
def test_gpu_check_runs_the_cpu_path_end_to_end_and_says_no_gpu(tmp_path):
    out = tmp_path / "gpu-check"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the path of a machine without CUDA, wherever this runs
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", str(out)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "no CUDA GPU found: ran the CPU path at tiny size" in proc.stdout

    report = json.loads((out / "gpu-check.json").read_text())
    assert {"mode", "env", "profile", "matrix", "models", "compile", "ddp", "latency", "checks", "wall_s",
            "phases", "ok"} <= report.keys()
    assert report["mode"] == "cpu" and report["ok"] and all(report["checks"].values())
    assert report["env"]["torch"] and report["env"]["cuda_available"] is False
    models = report["profile"]["models"]
    matrix = report["matrix"]
    assert matrix["exit_code"] == 0 and matrix["expected"] == len(models) * 4 == len(matrix["runs"])
    assert all(run["status"] == "finished" for run in matrix["runs"])
    for run in matrix["runs"]:  # every cell learned something: the last epoch's mean loss is below the first's
        assert len(run["train_loss"]) == report["profile"]["epochs"] and run["train_loss"][-1] < run["train_loss"][0]
    assert Path(matrix["board"]).is_file() and all(m in Path(matrix["board"]).read_text() for m in models)

    assert set(report["models"]) == set(models)
    for row in report["models"].values():
        for key in ("train_img_per_s", "loader_img_per_s", "bare_img_per_s", "eval_img_per_s"):
            assert isinstance(row[key], float) and row[key] > 0, (key, row)
        assert 0 <= row["data_wait_share"] <= 1 and row["harness_over_limit"] > 0
    assert "skipped" in report["compile"] and "No CUDA GPU" in report["ddp"]["skipped"]
    # the latency step ran through zoo.run's measurement: each model's cuda backends recorded as skipped
    assert {(r["model"], r["backend"]) for r in report["latency"]} == {(m, b) for m in models
                                                                       for b in ("cuda", "cuda-bf16")}
    assert all(r["status"] == "skipped" and "no CUDA device" in r["reason"] for r in report["latency"])

    text = (out / "gpu-check.md").read_text()
    assert text in proc.stdout  # what is printed is what is written
    rows = section(text, "Throughput per model")
    assert [row.split("|")[1].strip() for row in rows] == models  # one row per model
    assert len(section(text, "Runs")) == len(models) * 4
    assert "no CUDA GPU found: ran the CPU path at tiny size" in text
