"""1 worker vs N workers on a slice of the default matrix, side by side: wall time, cells per minute, ratio.

    python benchmarks/bench_workers.py [--config runs.yaml] [--epochs 2] [--workers 2]
        [--only model=mobilevit_xxs,deit_tiny --only recipe=basic]

Both variants run `python -m zoo.run <slice> --workers K` in fresh stores (so each trains every cell of the slice),
with measurement, the leaderboard and W&B off (they are the same work either way). 1 worker gets every core's
threads, K workers cores/K each. Target on a 2-core machine: >= 1.4x with 2 workers. The load average before and
after is printed: figures taken while other processes use the CPU are not comparable.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ONLY = ["model=mobilevit_xxs,deit_tiny", "recipe=basic"]


def write_slice(config: Path, root: Path, epochs: int) -> Path:
    data = yaml.safe_load(config.read_text())
    budget = data.get("budget", {})
    warmup = min(budget.get("warmup_epochs", 0), epochs - 1)  # the config requires warmup < epochs
    data["budget"] = {**budget, "epochs": epochs, "warmup_epochs": warmup}
    data["output_dir"] = str(root / "out")
    data["store_dir"] = str(root / "board")
    data["wandb"] = {**data.get("wandb", {}), "mode": "disabled"}
    data["measure"] = {**data.get("measure", {}), "enabled": False}
    data["execution"] = {**data.get("execution", {}), "progress": False}
    path = root / "runs.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_variant(config: Path, workers: int, only: list[str], scratch: Path, epochs: int) -> dict:
    root = scratch / f"workers{workers}"
    root.mkdir()
    path = write_slice(config, root, epochs)
    command = [sys.executable, "-m", "zoo.run", str(path), "--workers", str(workers), "--no-leaderboard"]
    for item in only:
        command += ["--only", item]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=root, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    records = [json.loads(line) for line in (root / "board" / "results.jsonl").read_text().splitlines() if line]
    img_s = sum(r.get("train_img_per_s") or 0 for r in records)
    return {"workers": workers, "wall_s": wall, "cells": len(records), "ids": sorted(r["run_id"] for r in records),
            "train_s": sum(r.get("train_time_s") or 0 for r in records), "img_s_sum": img_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "runs.yaml")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", action="append", default=None)
    args = parser.parse_args()
    only = args.only or DEFAULT_ONLY
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as scratch:
        one = run_variant(args.config, 1, only, Path(scratch), args.epochs)
        many = run_variant(args.config, args.workers, only, Path(scratch), args.epochs)
    load_after = os.getloadavg()
    assert one["ids"] == many["ids"], "the two variants trained different cells"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"slice: {' '.join('--only ' + o for o in only)}, {one['cells']} cells x {args.epochs} epoch(s), "
          f"{cores} cores")
    print(f"{'workers':>8} {'wall s':>8} {'cells/min':>10} {'train img/s (per cell, summed)':>32}")
    for v in (one, many):
        print(f"{v['workers']:>8} {v['wall_s']:>8.1f} {60 * v['cells'] / v['wall_s']:>10.2f} {v['img_s_sum']:>32.0f}")
    print(f"{args.workers} workers vs 1: {one['wall_s'] / many['wall_s']:.2f}x faster (wall time); "
          "target >= 1.4x on 2 cores")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}"
          + ("  <- others were using the CPU before we started: figures disturbed" if load_before[0] > 0.5 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
