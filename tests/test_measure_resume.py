"""`zoo.measure` killed with SIGKILL mid-way loses no finished record, and a rerun finishes only what is left."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _cli import run_command
from zoo.measure.store import MeasurementStore

REPO = Path(__file__).resolve().parents[1]


def _measure(store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "zoo.measure", "--models", "mobilenetv2_100", "mobilevit_xxs", "--res", "64",
            "--backends", "cpu-eager-1t", "cpu-eager", "--store", str(store), "--rounds", "2",
            "--round-seconds", "0.2", *extra]


@pytest.mark.slow
def test_a_killed_measurement_keeps_its_finished_records_and_a_rerun_completes_it(tmp_path):
    store = tmp_path / "measurements.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(_measure(store), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    # The first backend's two records land together, after its interleaved rounds; kill during the second's.
    while time.monotonic() < deadline and len(MeasurementStore(store).records()) < 2:
        assert child.poll() is None, "the measurement ended before it could be killed"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    first = {(m.model, m.backend): m for m in MeasurementStore(store).records()}
    assert {backend for _, backend in first} == {"cpu-eager-1t"} and len(first) == 2
    assert all(m.status == "ok" and m.median_ms > 0 for m in first.values())

    rerun = run_command("zoo.measure.__main__", *_measure(store)[3:], cwd=tmp_path)  # forked: tests/_cli.py
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    records = MeasurementStore(store).records()
    latest = {(m.model, m.backend): m for m in MeasurementStore(store).latest().values()}
    assert set(latest) == {(model, backend) for model in ("mobilenetv2_100", "mobilevit_xxs")
                           for backend in ("cpu-eager-1t", "cpu-eager")}
    # The finished records were reused, not timed again: same lines, and only the missing cells were appended.
    assert len(records) == 4 and all(latest[key].timestamp == first[key].timestamp for key in first)
