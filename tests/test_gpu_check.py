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
    # One model: the path end to end (matrix, throughput, latency, report) at half the CPU profile's cost.
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", str(out), "--models", "mobilevit_xxs"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
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


def gpu_report() -> dict:
    """A report as a 2-GPU machine would write it (no GPU here: the GPU branches of the page and the checks)."""
    models = ["mobilevit_xxs", "deit_tiny"]
    runs = [{"label": f"{m}/{r}/{s}/s0", "model": m, "recipe": r, "sampler": s, "status": "finished", "error": None,
             "train_loss": [2.2, 1.1], "loss_fell": True, "train_img_per_s": 2000.0, "peak_memory_mb": 9000.0,
             "top1": 0.9} for m in models for r in ("basic", "advanced") for s in ("fixed", "multiscale")]
    row = {"train_img_per_s": 2000.0, "loader_img_per_s": 2500.0, "data_wait_share": 0.4, "loader_bound": True,
           "bare_img_per_s": 5000.0, "harness_over_limit": 0.5, "peak_memory_mb": 9000.0, "eval_img_per_s": 9e3}
    latency = [{"model": m, "backend": b, "resolution": 256, "status": "ok", "reason": None, "batch1_ms": 3.0,
                "batch32_ms": 6.4, "batch32_per_image_ms": 0.2, "paper_v100_ms": 0.43 if m == "deit_tiny" else None}
               for m in models for b in ("cuda", "cuda-bf16")]
    return {
        "mode": "gpu", "cpu_reason": None,
        "env": {"gpu": "NVIDIA H100", "gpu_count": 2, "gpu_memory_gib": 79.1, "capability": "9.0", "bf16": True,
                "driver": "550.1", "cuda": "13.0", "cudnn": 92400, "torch": "2.14.1", "timm": "1.0.31"},
        "profile": {"models": models, "base_resolution": 256, "resolutions": [160, 320], "batch_size": 128,
                    "amp": True, "epochs": 2, "matrix_train_images": 2048, "classes": 10, "workers": 14,
                    "budget_s": 480.0},
        "matrix": {"config": "gpu-check.yaml", "exit_code": 0, "wall_s": 200.0, "train_s": 150.0, "expected": 8,
                   "finished": 8, "loss_fell": 8, "runs": runs, "board": "store/README.md", "board_rendered": True},
        "models": {m: dict(row) for m in models},
        "compile": {"model": "mobilevit_xxs", "eager_img_per_s": 5000.0, "compiled_img_per_s": 6000.0,
                    "speedup": 1.2, "compile_s": 50.0},
        "ddp": {"command": "python -m zoo.run gpu-check-ddp.yaml --gpus-per-run 2", "exit_code": 0,
                "status": "finished", "world_size": 2, "train_img_per_s": 3800.0, "single_img_per_s": 2000.0,
                "scaling": 0.95, "ok": True},
        "latency": latency, "phases": {"zoo.run": 200.0}, "wall_s": 400.0, "within_budget": True,
    }


def test_gpu_report_page_and_checks():
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from gpu_check import decide_checks
    from gpu_check_report import markdown

    report = gpu_report()
    report["checks"] = decide_checks(report, gpu=True)
    assert all(report["checks"].values()) and "DDP on 2 GPUs finished" in report["checks"]
    text = markdown(report)
    assert "GPU: NVIDIA H100" in text and "driver 550.1" in text and "CUDA 13.0" in text
    assert [row.split("|")[1].strip() for row in section(text, "Throughput per model")] == ["mobilevit_xxs",
                                                                                           "deit_tiny"]
    assert "40 % (loader-bound)" in text and "(1.20×)" in text and "scaling 0.95× of linear" in text
    latency = section(text, "Latency")
    assert len(latency) == 2 and latency[1].rstrip(" |").endswith("0.43 | 2.1×")  # paper, then paper / ours
    assert "arXiv 2110.02178" in text and "no CUDA GPU" not in text

    report["ddp"]["ok"] = False
    report["latency"][0]["status"] = "failed"
    checks = decide_checks(report, gpu=True)
    assert not checks["DDP on 2 GPUs finished"] and not checks["cuda and cuda-bf16 latency timed for every model"]
