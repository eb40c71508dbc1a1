"""Detection and segmentation under DDP (gloo on CPU), over BatchNorm MobileNetV2 with EMA: the ranks end up
evaluating (and rank 0 saving) one model — the same weights and the same BatchNorm statistics —, every validation
image counts once (ranks started as torchrun describes them: tests/_ranks.py), and `zoo.run --gpus-per-run 2`, through
torchrun itself, writes one record per cell with its metric."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from _ranks import run_ranks

ROOT = Path(__file__).parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def assert_same(a: dict[str, float], b: dict[str, float], what: str) -> None:
    assert a.keys() == b.keys() and a, what
    differ = [name for name in a if a[name] != pytest.approx(b[name], rel=1e-6, abs=1e-6)]
    assert not differ, f"{what} differ between the ranks: {differ[:5]} ({len(differ)} of {len(a)})"


@pytest.fixture(scope="module")
def ranks_out(tmp_path_factory) -> Path:
    """One group of ranks for the three checks below."""
    out = tmp_path_factory.mktemp("dense_ddp")
    run_ranks("_ddp_dense_worker:main", 2, str(out), "detection", "segmentation", "map-gather",
              error_dir=out / "errors", timeout=400)
    return out


@pytest.mark.parametrize("task, metric", [("detection", "val_map"), ("segmentation", "val_miou")])
def test_ranks_evaluate_one_model_and_count_each_image_once(ranks_out, task, metric):
    a, b = (json.loads((ranks_out / f"{task}_rank{r}.json").read_text()) for r in (0, 1))
    assert a["updates"] == b["updates"] == 3  # 24 images / (batch 4 x 2 ranks)
    for which in ("raw", "ema"):
        assert_same(a[which]["params"], b[which]["params"], f"{task} {which} weights")
        assert any("running_var" in name for name in a[which]["buffers"])
        assert_same(a[which]["buffers"], b[which]["buffers"], f"{task} {which} BatchNorm statistics")
    rows = a["history"][-1], b["history"][-1]
    assert [row["val_images"] for row in rows] == [7, 7]  # an odd count: split 4 + 3, then summed
    assert rows[0][metric] == rows[1][metric] and 0.0 <= rows[0][metric] <= 1.0


def test_ranks_score_every_ranks_detections_as_one_process_would(ranks_out):
    """Rank 0 holds a hit, rank 1 a miss and an empty image: the gathered mAP is the single-process mAP of all
    three images (1/2 at .5, not rank 0's 1.0 or rank 1's 0.0), the same on both ranks."""
    a, b = (json.loads((ranks_out / f"map-gather_rank{r}.json").read_text()) for r in (0, 1))
    assert a == b
    assert a["gathered"] == pytest.approx(a["one_process"]) and 0.0 < a["gathered"]["map_50"] < 1.0


def test_zoo_run_on_two_ranks_records_each_dense_cell_once(tmp_path):
    matrix = {
        "name": "tiny-dense-ddp", "task": ["detection", "segmentation"],
        "data": {"kind": "scattered-digits", "options": {"train_size": 16, "val_size": 5}},
        "models": ["mobilenetv2_100"], "recipes": ["basic"], "recipe_overrides": {"hflip": 0.0},
        "samplers": ["fixed"], "resolution": {"base_resolution": 64, "resolutions": [64]},
        "budget": {"epochs": 1, "batch_size": 4, "lr_scaling": "none", "warmup_epochs": 0},
        "output_dir": str(tmp_path / "out"), "store_dir": str(tmp_path / "board"), "wandb": {"mode": "disabled"},
        "execution": {"progress": False, "threads": 1}, "measure": {"enabled": False},
    }
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump(matrix))
    cmd = [sys.executable, "-m", "zoo.run", str(path), "--gpus-per-run", "2", "--no-leaderboard"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=400, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "board" / "results.jsonl").read_text().splitlines()]
    finished = [r for r in lines if r["status"] == "finished"]
    assert sorted(r["config"]["task"] for r in finished) == ["detection", "segmentation"]  # once, not per rank
    for record in finished:
        assert record["config"]["world_size"] == 2
        assert record["history"][-1]["val_images"] == 5
        assert math.isfinite(record["metric"]) and 0.0 <= record["metric"] <= 1.0
