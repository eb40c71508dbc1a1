"""The measurement store and `measure_models`: round trip, torn lines, reuse, force, retry, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch.nn as nn

import zoo.measure.suite as suite
from zoo.measure.__main__ import main
from zoo.measure.latency import TimedBackend, TimingConfig
from zoo.measure.machine import machine_info
from zoo.measure.store import MeasurementKey, MeasurementStore

FAST = TimingConfig(rounds=2, min_round_s=0.0, warmup_calls=0, min_samples_per_round=1)


def _record(model: str = "m", backend: str = "b", median_ms: float = 1.0, **extra) -> dict:
    return {"model": model, "resolution": 64, "backend": backend, "machine_id": "abc", "batch_size": 1,
            "num_classes": 10, "status": "ok", "median_ms": median_ms, **extra}


def test_round_trip_and_last_record_per_key_wins(tmp_path: Path) -> None:
    store = MeasurementStore(tmp_path / "sub" / "measurements.jsonl")
    assert store.records() == [] and store.latest() == {}
    first, other, second = _record(median_ms=1.0), _record(backend="c"), _record(median_ms=2.0)
    for record in (first, other, second):
        store.append(record)
    assert store.records() == [first, other, second]
    key = MeasurementKey("m", 64, "b", "abc", 1, 10)
    assert store.get(key) == second
    assert len(store.latest()) == 2


def test_torn_last_line_is_ignored_and_the_next_append_survives(tmp_path: Path) -> None:
    path = tmp_path / "measurements.jsonl"
    store = MeasurementStore(path)
    store.append(_record(model="whole"))
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"model": "torn", "resolution": 6')  # a writer killed mid-line
    assert [r["model"] for r in store] == ["whole"]
    store.append(_record(model="after"))
    assert [r["model"] for r in store] == ["whole", "after"]
    assert path.read_text().count("\n") == 3  # the fragment ended up on a line of its own


def test_append_refuses_records_without_key_or_with_unknown_status(tmp_path: Path) -> None:
    store = MeasurementStore(tmp_path / "m.jsonl")
    with pytest.raises(KeyError):
        store.append({"model": "m", "status": "ok"})
    with pytest.raises(ValueError, match="status"):
        store.append(_record(status="great"))
    assert not store.path.exists() or store.records() == []


class CountingBackend(TimedBackend):
    """Fake backend that counts how many models it prepares; 2 ms per call."""

    name = "counting"
    batch_sizes = (1,)
    prepared: list[str] = []

    def prepare(self, model: nn.Module, input_shape, workdir, config):
        CountingBackend.prepared.append(tuple(input_shape))

        class Runner:
            details = {"fake": True}

            def time_round(self, config: TimingConfig) -> list[float]:
                return [0.002, 0.002]

            def close(self) -> None:
                pass

        return Runner()


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> type[CountingBackend]:
    CountingBackend.prepared = []
    real_get_backend = suite.get_backend
    monkeypatch.setattr(suite, "get_backend", lambda name: CountingBackend() if name == "counting" else
                        real_get_backend(name))
    return CountingBackend


def _measure(store_path: Path, **kwargs) -> list[dict]:
    return suite.measure_models(["mobilevit_xxs"], 64, ["counting"], store_path, num_classes=10, timing=FAST,
                                **kwargs)


def test_measure_models_stores_a_full_record(tmp_path: Path, counting) -> None:
    (record,) = _measure(tmp_path / "m.jsonl")
    assert counting.prepared == [(1, 3, 64, 64)]
    assert record["status"] == "ok" and record["median_ms"] == pytest.approx(2.0) and record["unit"] == "ms"
    assert record["runs"] == 4 and record["rounds"] == 2 and record["iqr_ms"] == pytest.approx(0.0)
    assert record["params_1k"] == pytest.approx(1.272e6, rel=0.01) and record["params"] < record["params_1k"]
    assert 0.0 < record["gmacs"] < 0.41  # 64 px is far below the published 256 px
    assert record["machine_id"] == machine_info().machine_id == record["machine"]["machine_id"]
    assert record["versions"]["torch"] and record["timestamp"] and record["details"] == {"fake": True}
    assert MeasurementStore(tmp_path / "m.jsonl").records() == [record]


def test_stored_records_are_reused_unless_forced(tmp_path: Path, counting) -> None:
    path = tmp_path / "m.jsonl"
    first = _measure(path)
    again = _measure(path)
    assert len(counting.prepared) == 1 and again == first
    assert len(MeasurementStore(path).records()) == 1
    forced = _measure(path, force=True)
    assert len(counting.prepared) == 2 and forced[0]["timestamp"] >= first[0]["timestamp"]
    assert len(MeasurementStore(path).records()) == 2


def test_failed_or_stale_records_are_measured_again(tmp_path: Path, counting) -> None:
    path = tmp_path / "m.jsonl"
    (record,) = _measure(path)
    MeasurementStore(path).append({**record, "status": "failed", "reason": "exporter crashed"})
    _measure(path)
    assert len(counting.prepared) == 2  # failures are retried
    MeasurementStore(path).append({**record, "arch": "another-architecture"})
    _measure(path)
    assert len(counting.prepared) == 3  # the model changed since it was measured


def test_other_num_classes_is_another_key(tmp_path: Path, counting) -> None:
    path = tmp_path / "m.jsonl"
    _measure(path)
    suite.measure_models(["mobilevit_xxs"], 64, ["counting"], path, num_classes=1000, timing=FAST)
    assert len(counting.prepared) == 2


def test_cli_prints_a_table_and_rejects_unknown_names(tmp_path: Path, counting, capsys) -> None:
    store = tmp_path / "m.jsonl"
    argv = ["--models", "mobilevit_xxs", "--res", "64", "--backends", "counting", "--store", str(store),
            "--num-classes", "10", "--rounds", "2", "--round-seconds", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "mobilevit_xxs" in out and "counting" in out and "2.00" in out
    assert json.loads(store.read_text().splitlines()[0])["model"] == "mobilevit_xxs"
    assert main(["--models", "mobilevit_xxz", "--store", str(store), "--backends", "counting"]) == 2
    assert "Did you mean 'mobilevit_xxs'" in capsys.readouterr().err
