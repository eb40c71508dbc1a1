"""A backend is its declaration (issue 28): a fake runtime declared the way every backend file declares itself, and
registered with one line, shows up everywhere zoo asks about backends (names, table order, int8 pairs, the
matrix's int8 runtimes, the architecture board's columns and conclusions, the trained leaderboard's columns)."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from test_leaderboard import make_store, row_of
from zoo.config import MeasureConfig
from zoo.config.typed import ConfigError, from_dict
from zoo.measure.backends import (architecture_board_backends, backend_names, display_order, int8_accuracy_backends,
                                  int8_pairs, phone_backends, registered, spec_of)
from zoo.measure.backends.common import Exported, ExportedBackend
from zoo.measure.backends.spec import per_thread_count
from zoo.measure.latency import TimingConfig
from zoo.measure.store import Int8Record, Int8Store, Measurement, MeasurementStore
from zoo.measure.suite import protocol_of
from zoo.report.architectures import GROUP_SIZE, run_board
from zoo.report.leaderboard import write_leaderboard

FAST = TimingConfig(rounds=2, min_round_s=0.0, warmup_calls=1, min_samples_per_round=2, runs_per_round=3,
                    max_round_s=0.05)


# --- the fake backend's "file": its class and its declaration ------------------------------------------------------

class FakeRuntime(ExportedBackend):
    """'fakert': the export is the prepared model itself; a call sleeps 2 ms (fp32) or 1 ms (int8)."""

    def write_export(self, source, folder: Path, calibration) -> dict:
        (folder / "model.fake").write_bytes(b"f" * 100)
        return {"exporter": "fake", "file": "model.fake"}

    def open_export(self, source, folder: Path, details: dict) -> Exported:
        model, pause = source.exportable, 0.001 if self.int8 else 0.002

        def run(array: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(array)).numpy()

        return Exported(run=run, call=lambda: time.sleep(pause), details={"threads": source.threads, **details})


# Between LiteRT (order 20, 21) and ONNX Runtime (30, 31) in every table; its int8 pairs with its fp32 backend.
DECLARED = (
    *per_thread_count("fakert", make=FakeRuntime, runtime="fakert", order=25, phone=True, architecture_board=True),
    *per_thread_count("fakert-int8", make=FakeRuntime, runtime="fakert", dtype="int8", fp32_partner="fakert",
                      order=26, phone=True, architecture_board=True),
)


@pytest.fixture
def fakert() -> Iterator[None]:
    with registered(*DECLARED):  # the one registration line
        yield


# --- derived facts -----------------------------------------------------------------------------------------------

def test_a_declared_backend_joins_every_derived_list(fakert) -> None:
    assert {"fakert-1t", "fakert", "fakert-int8-1t", "fakert-int8"} <= set(backend_names())
    order = display_order(backend_names())
    assert order[order.index("litert-int8-1t") + 1:order.index("onnxruntime-cpu-1t")] == ["fakert-1t", "fakert-int8-1t"]
    assert ("fakert-1t", "fakert-int8-1t") in int8_pairs() and ("fakert", "fakert-int8") in int8_pairs()
    assert int8_accuracy_backends()["fakert"] == "fakert-int8"
    assert "fakert-1t" in architecture_board_backends() and "fakert-int8" in phone_backends()
    assert spec_of("fakert-int8-1t").export_kind == spec_of("fakert-int8").export_kind == "fakert-int8"
    # runs.yaml may name it, and its int8 runtime, once declared
    config = from_dict(MeasureConfig, {"backends": ["fakert-1t"], "int8_runtimes": ["fakert"]}, "runs.yaml", "measure")
    assert config.int8_runtimes == ("fakert",)


def test_an_undeclared_backend_is_refused_at_the_edge() -> None:
    assert "fakert-1t" not in backend_names()  # the fixture's registration is undone
    with pytest.raises(ConfigError, match="int8 runtimes"):
        from_dict(MeasureConfig, {"int8_runtimes": ["fakert"]}, "runs.yaml", "measure")


def test_a_backend_is_declared_once() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        with registered(*DECLARED, DECLARED[0]):
            pass
    assert "fakert-1t" not in backend_names()


# --- both boards -------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_fake_backend_is_on_the_architecture_board_with_its_int8_pair(tmp_path: Path, fakert) -> None:
    names = ["fakert-1t", "fakert-int8-1t"]
    records = run_board(tmp_path / "board", models=["mobilevit_xxs", "mobilenetv2_100"], resolutions=[64],
                        backends=names, timing=FAST, export_jobs=0, breakdown=False).records
    assert {r.backend for r in records} == set(names) and all(r.status == "ok" for r in records)
    # every record keeps the protocol it was timed under, and the README states that one
    assert all(r.protocol == protocol_of(FAST, GROUP_SIZE, None) for r in records)
    text = (tmp_path / "board" / "README.md").read_text()
    assert "## fakert-1t (fp32)" in text and "## fakert-int8-1t (int8)" in text
    assert "- fakert-int8-1t vs fakert-1t: int8 is " in text  # the int8 conclusion, from the declared pair
    assert "1 warm-up calls, then 2 rounds of at least 3 runs and 0.0 s (a slow model's round stops after 0.05 s" in text
    assert "Settings:" not in text  # every record carries its own


def test_the_fake_backend_is_on_the_trained_leaderboard_beside_its_pair(tmp_path: Path, fakert) -> None:
    store = make_store(tmp_path / "board")
    measurements = MeasurementStore(store / "measurements.jsonl")
    for model, resolution in (("deit_tiny", 224), ("mobilenetv2_100", 224)):
        for backend, ms in (("fakert-1t", 3.0), ("fakert-int8-1t", 1.5)):
            measurements.append(Measurement(model=model, resolution=resolution, backend=backend,
                                            machine_id="0123456789ab", status="ok", median_ms=ms, iqr_ms=0.1, runs=30,
                                            gmacs=0.02, deployed=True))
    Int8Store(store).append(Int8Record(model="deit_tiny", run_id="deit_tiny-basic-fixed-0", runtime="fakert",
                                       fp32_top1=80.0, int8_top1=79.0, drop=1.0))
    text = write_leaderboard(store).read_text()
    header = next(line for line in text.split("## 6.", 1)[1].splitlines() if line.startswith("| model"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    # declared order: the fake 1-thread pair before eager's 1-thread column, all-thread columns after
    assert columns[3:] == ["fakert-1t ms", "fakert-int8-1t ms", "cpu-eager-1t ms", "onnxruntime-cpu ms"]
    assert row_of(text, "## 6.", "deit_tiny")[3:5] == ["3.0", "1.5"]
    assert row_of(text, "## 8. int8", "deit_tiny", "fakert")[2:5] == ["80.00", "79.00", "+1.00"]
    assert json.loads((store / "int8_accuracy.jsonl").read_text().splitlines()[-1])["runtime"] == "fakert"
