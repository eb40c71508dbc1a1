"""The measurement stores and `measure_models`: typed records, old lines, one "latest" rule, torn lines, reuse,
force, retry, the deployed flag, a backend's device identity, CLI."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch.nn as nn

import zoo.measure.suite as suite
from zoo.measure.__main__ import main
from zoo.measure.flops import count_macs
from zoo.measure.latency import TimedBackend, TimingConfig
from zoo.measure.machine import machine_info
from zoo.measure.store import (Breakdown, BreakdownStore, Int8Record, Int8Store, Measurement, MeasurementKey,
                               MeasurementStore, one_machine_per_backend)
from zoo.models import create

FAST = TimingConfig(rounds=2, min_round_s=0.0, warmup_calls=0, min_samples_per_round=1)
# A line exactly as the previous version's `measure_models` wrote it (no `deployed` flag).
OLD_LINE = (
    '{"model": "deit_tiny", "resolution": 224, "backend": "cpu-eager-1t", "machine_id": "8f2e0c1d9a7b", '
    '"batch_size": 1, "num_classes": 1000, "arch": "0d1e2f3a4b5c", "params": 5717416, "params_1k": 5717416, '
    '"gmacs": 1.254, "status": "ok", "reason": "", "unit": "ms", "median_ms": 27.01, "iqr_ms": 0.9, "min_ms": 25.8, '
    '"max_ms": 31.2, "runs": 60, "rounds": 6, "round_medians_ms": [27.0, 27.1, 26.9, 27.0, 27.2, 27.0], '
    '"details": {"threads": 1}, "machine": {"cpu_model": "Intel(R) Xeon(R) Processor", "cpus": 2, '
    '"machine_id": "8f2e0c1d9a7b"}, "versions": {"torch": "2.14.1"}, "timestamp": "2026-11-20T10:00:01+00:00"}'
)
# A params/GMACs line of the previous version's `paper_costs`: far fewer fields.
OLD_FLOPS_LINE = ('{"model": "pit_ti", "resolution": 224, "backend": "flops", "machine_id": "any", "batch_size": 1, '
                  '"num_classes": 1000, "arch": "abc", "status": "ok", "params": 4859236, "gmacs": 0.699, '
                  '"versions": {"torch": "2.14.1"}}')


def _record(model: str = "m", backend: str = "b", median_ms: float = 1.0, **extra) -> Measurement:
    return Measurement(model=model, resolution=64, backend=backend, machine_id="abc", batch_size=1, num_classes=10,
                       status=extra.pop("status", "ok"), median_ms=median_ms, **extra)


def test_round_trip_and_last_record_per_key_wins(tmp_path: Path) -> None:
    store = MeasurementStore(tmp_path / "sub" / "measurements.jsonl")
    assert store.records() == [] and store.latest() == {}
    first, other, second = _record(median_ms=1.0), _record(backend="c"), _record(median_ms=2.0)
    for record in (first, other, second):
        store.append(record)
    assert store.records() == [first, other, second]
    assert [r.position for r in store.records()] == [0, 1, 2]
    key = MeasurementKey("m", 64, "b", "abc", 1, 10)
    assert store.get(key) == second and store.get(key).median_ms == 2.0
    assert list(store.latest()) == [key, MeasurementKey("m", 64, "c", "abc", 1, 10)]  # first-seen key order


def test_another_machine_is_another_key(tmp_path: Path) -> None:
    store = MeasurementStore(tmp_path / "m.jsonl")
    store.append(_record(median_ms=1.0))
    store.append(dataclasses.replace(_record(median_ms=5.0), machine_id="phone-serial"))
    assert {k.machine_id: r.median_ms for k, r in store.latest().items()} == {"abc": 1.0, "phone-serial": 5.0}


def test_a_line_of_the_previous_version_loads_and_writes_back_the_same_fields(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(OLD_LINE + "\n" + OLD_FLOPS_LINE + "\n")
    timed, flops = MeasurementStore(path).records()
    assert timed.key == MeasurementKey("deit_tiny", 224, "cpu-eager-1t", "8f2e0c1d9a7b", 1, 1000)
    assert (timed.median_ms, timed.iqr_ms, timed.runs, timed.params_1k, timed.gmacs) == (27.01, 0.9, 60, 5717416, 1.254)
    assert timed.round_medians_ms == (27.0, 27.1, 26.9, 27.0, 27.2, 27.0) and timed.timed
    assert timed.machine["cpu_model"] == "Intel(R) Xeon(R) Processor" and timed.deployed is False
    assert timed.to_dict() == {**json.loads(OLD_LINE), "deployed": False}  # same names, same order, one flag more
    assert list(timed.to_dict())[:6] == ["model", "resolution", "backend", "machine_id", "batch_size", "num_classes"]
    assert (flops.backend, flops.params, flops.gmacs, flops.median_ms, flops.details) == ("flops", 4859236, 0.699,
                                                                                          None, {})
    assert not flops.timed


def test_fields_of_another_version_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({**json.loads(OLD_LINE), "energy_mj": 3.5}) + "\n")
    (record,) = MeasurementStore(path).records()
    assert record.extra == {"energy_mj": 3.5}
    MeasurementStore(path).append(record)
    assert json.loads(path.read_text().splitlines()[1])["energy_mj"] == 3.5


def test_torn_last_line_is_ignored_and_the_next_append_survives(tmp_path: Path) -> None:
    path = tmp_path / "measurements.jsonl"
    store = MeasurementStore(path)
    store.append(_record(model="whole"))
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"model": "torn", "resolution": 6')  # a writer killed mid-line
    assert [r.model for r in store] == ["whole"]
    store.append(_record(model="after"))
    assert [r.model for r in store] == ["whole", "after"]
    assert path.read_text().count("\n") == 3  # the fragment ended up on a line of its own


def test_append_refuses_an_unknown_status_and_reading_skips_lines_without_a_key(tmp_path: Path) -> None:
    store = MeasurementStore(tmp_path / "m.jsonl")
    with pytest.raises(ValueError, match="status"):
        store.append(_record(status="great"))
    assert not store.path.exists()
    store.path.write_text('{"model": "m", "status": "ok"}\n[1, 2]\n' + OLD_LINE + "\n")
    assert [r.model for r in store] == ["deit_tiny"]


def test_int8_and_breakdown_stores_are_typed_with_one_latest_rule(tmp_path: Path) -> None:
    int8 = Int8Store(tmp_path)
    int8.append(Int8Record(model="m", run_id="r1", runtime="onnxruntime", status="ok", fp32_top1=90.0))
    int8.append(Int8Record(model="m", run_id="r1", runtime="executorch-xnnpack", status="failed"))
    int8.append(Int8Record(model="m", run_id="r2", status="skipped", reason="no checkpoint: x.pt"))
    assert int8.evaluated() == {("r1", "onnxruntime")}
    assert [row.status for row in int8.latest()] == ["ok", "failed", "skipped"]
    # a forced re-evaluation replaces its row (the last line of a key wins), in the row's first place
    int8.append(Int8Record(model="m", run_id="r1", runtime="onnxruntime", status="ok", fp32_top1=91.0))
    assert [(r.runtime, r.fp32_top1) for r in int8.latest()][0] == ("onnxruntime", 91.0)
    assert len(int8.records()) == 4 and len(int8.latest()) == 3
    breakdown = BreakdownStore(tmp_path)
    breakdown.append(Breakdown(model="m", resolution=224, ms_by_class={"convolution": 1.0}))
    breakdown.append(Breakdown(model="n", resolution=224, status="failed", reason="profiler"))
    assert breakdown.measured() == {("m", 224), ("n", 224)}
    assert [row.model for row in breakdown.profiled()] == ["m"]
    breakdown.append(Breakdown(model="m", resolution=224, ms_by_class={"convolution": 2.0}))  # re-profiled
    assert [row.ms_by_class for row in breakdown.profiled()] == [{"convolution": 2.0}]
    assert int8.path.name == "int8_accuracy.jsonl" and breakdown.path.name == "breakdown.jsonl"
    # lines as the stores have always written them read back typed, unknown fields kept
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "breakdown.jsonl").write_text(json.dumps(
        {"model": "m", "resolution": 64, "runtime": "onnxruntime-cpu-1t (profiler)", "ms_by_class": {"other": 1.0},
         "total_kernel_ms": 1.0, "gmacs_by_class": {}, "new_field": 1}) + "\n")
    (old,) = BreakdownStore(tmp_path / "old").records()
    assert old.total_kernel_ms == 1.0 and old.extra == {"new_field": 1} and old.to_dict()["new_field"] == 1


def test_one_machine_per_backend_keeps_the_machine_of_each_backends_newest_record() -> None:
    a, b = (dataclasses.replace(_record(), machine_id=m, position=i) for i, m in enumerate(["old", "new"]))
    other = dataclasses.replace(_record(), backend="litert-1t", machine_id="old", position=2)
    assert one_machine_per_backend([a, b, other]) == [b, other]


class CountingBackend(TimedBackend):
    """Fake backend that counts how many models it prepares; 2 ms per call."""

    name = "counting"
    batch_sizes = (1,)
    prepared: list[tuple] = []
    device_id: str | None = None

    def prepare(self, model: nn.Module, input_shape, workdir, config):
        CountingBackend.prepared.append(tuple(input_shape))

        class Runner:
            details = {"fake": True}

            def time_round(self, config: TimingConfig) -> list[float]:
                return [0.002, 0.002]

            def close(self) -> None:
                pass

        return Runner()


class PhoneBackend(CountingBackend):
    """The same fake timing on a device of its own, behind this host (as an adb-connected phone would be)."""

    def __init__(self, serial: str) -> None:
        self.device_id = serial


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> type[CountingBackend]:
    CountingBackend.prepared = []
    phones = {"phone-a": PhoneBackend("SERIAL-A"), "phone-b": PhoneBackend("SERIAL-B")}
    real_get_backend = suite.get_backend

    def get_backend(name: str, **kwargs):
        if name == "counting":
            return CountingBackend()
        return phones[name] if name in phones else real_get_backend(name, **kwargs)

    monkeypatch.setattr(suite, "get_backend", get_backend)
    return CountingBackend


def _measure(store_path: Path, backend: str = "counting", **kwargs) -> list[Measurement]:
    return suite.measure_models(["mobilevit_xxs"], 64, [backend], store_path, num_classes=10, timing=FAST,
                                **kwargs)


def test_measure_models_stores_a_full_record(tmp_path: Path, counting) -> None:
    (record,) = _measure(tmp_path / "m.jsonl")
    assert counting.prepared == [(1, 3, 64, 64)]
    assert record.status == "ok" and record.median_ms == pytest.approx(2.0) and record.unit == "ms"
    assert record.runs == 4 and record.rounds == 2 and record.iqr_ms == pytest.approx(0.0)
    assert record.round_medians_ms == pytest.approx((2.0, 2.0))
    assert record.params_1k == pytest.approx(1.272e6, rel=0.01) and record.params < record.params_1k
    model = create("mobilevit_xxs", num_classes=10)
    assert record.gmacs == round(count_macs(model, 64).gmacs, 6) < 0.41  # at its own resolution and head
    assert record.arch == suite.architecture_fingerprint(model)
    assert record.machine_id == machine_info().machine_id == record.machine["machine_id"]
    assert record.versions["torch"] and record.timestamp.endswith("+00:00") and record.details == {"fake": True}
    assert record.deployed is False
    assert MeasurementStore(tmp_path / "m.jsonl").records() == [record]


def test_a_backend_with_a_device_keys_its_records_by_the_device(tmp_path: Path, counting) -> None:
    path = tmp_path / "m.jsonl"
    (a,) = _measure(path, backend="phone-a")
    assert a.machine_id == "SERIAL-A" and a.machine["machine_id"] == machine_info().machine_id  # host kept too
    _measure(path, backend="phone-a")
    assert len(counting.prepared) == 1  # the same device: reused
    suite.get_backend("phone-a").device_id = "SERIAL-B"  # another phone plugged in under the same backend
    (b,) = _measure(path, backend="phone-a")
    assert len(counting.prepared) == 2 and b.machine_id == "SERIAL-B"
    assert sorted(k.machine_id for k in MeasurementStore(path).latest()) == ["SERIAL-A", "SERIAL-B"]


def test_stored_records_are_reused_unless_forced(tmp_path: Path, counting) -> None:
    path = tmp_path / "m.jsonl"
    first = _measure(path)
    again = _measure(path)
    assert len(counting.prepared) == 1 and again == first
    assert len(MeasurementStore(path).records()) == 1
    forced = _measure(path, force=True)
    assert len(counting.prepared) == 2 and forced[0].timestamp >= first[0].timestamp
    assert len(MeasurementStore(path).records()) == 2


def test_a_deploy_pass_flags_its_records_and_a_reused_record_without_timing_it(tmp_path: Path, counting) -> None:
    path = tmp_path / "m.jsonl"
    (plain,) = _measure(path)  # e.g. `python -m zoo.measure`: not the matrix's deployment choice
    (flagged,) = _measure(path, deployed=True)
    assert len(counting.prepared) == 1  # reused, not timed again
    assert flagged.deployed and dataclasses.replace(flagged, deployed=False) == plain
    assert [r.deployed for r in MeasurementStore(path)] == [False, True]
    (again,) = _measure(path)  # another pass at the same key keeps the flag, and writes nothing
    assert again.deployed and len(MeasurementStore(path).records()) == 2
    (fresh,) = _measure(tmp_path / "other.jsonl", deployed=True)
    assert fresh.deployed and MeasurementStore(tmp_path / "other.jsonl").records()[0].deployed


def test_choosing_a_resolution_again_makes_it_the_newest_deployed_record(tmp_path: Path, counting) -> None:
    path = tmp_path / "m.jsonl"

    def deploy_at(resolution: int) -> None:
        suite.measure_models(["mobilevit_xxs"], resolution, ["counting"], path, timing=FAST, deployed=True)

    deploy_at(64)
    deploy_at(96)  # e.g. `measure.deploy_resolutions` changed
    deploy_at(64)  # and changed back: reused, not timed, but written again as the newest choice
    assert len(counting.prepared) == 2
    records = MeasurementStore(path).records()
    assert [(r.resolution, r.deployed) for r in records] == [(64, True), (96, True), (64, True)]
    deploy_at(64)  # already the newest choice: nothing written
    assert len(MeasurementStore(path).records()) == 3


def test_failed_or_stale_records_are_measured_again(tmp_path: Path, counting) -> None:
    path = tmp_path / "m.jsonl"
    (record,) = _measure(path)
    MeasurementStore(path).append(dataclasses.replace(record, status="failed", reason="exporter crashed"))
    _measure(path)
    assert len(counting.prepared) == 2  # failures are retried
    MeasurementStore(path).append(dataclasses.replace(record, arch="another-architecture"))
    _measure(path)
    assert len(counting.prepared) == 3  # the model changed since it was measured


def test_other_num_classes_is_another_key(tmp_path: Path, counting) -> None:
    path = tmp_path / "m.jsonl"
    _measure(path)
    suite.measure_models(["mobilevit_xxs"], 64, ["counting"], path, num_classes=1000, timing=FAST)
    assert len(counting.prepared) == 2


def test_resolutions_default_to_each_models_deployment_resolution() -> None:
    assert suite.resolve_resolutions(["mobilevit_xxs", "deit_tiny"], None) == {"mobilevit_xxs": 256, "deit_tiny": 224}
    assert suite.resolve_resolutions(["mobilevit_xxs", "deit_tiny"], {"mobilevit_xxs": 64}) == {
        "mobilevit_xxs": 64, "deit_tiny": 224}
    assert suite.resolve_resolutions(["deit_tiny"], 96) == {"deit_tiny": 96}


def test_cli_prints_a_table_and_rejects_unknown_names(tmp_path: Path, counting, capsys) -> None:
    store = tmp_path / "m.jsonl"
    argv = ["--models", "mobilevit_xxs", "--res", "64", "--backends", "counting", "--store", str(store),
            "--num-classes", "10", "--rounds", "2", "--round-seconds", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    row = next(line.split() for line in out.splitlines() if line.startswith("mobilevit_xxs"))
    assert row[:4] == ["mobilevit_xxs", "64", "counting", "1"] and row[7:9] == ["2.00", "0.00"] and row[-1] == "ok"
    assert json.loads(store.read_text().splitlines()[0])["model"] == "mobilevit_xxs"
    assert main(["--models", "mobilevit_xxz", "--store", str(store), "--backends", "counting"]) == 2
    assert "Did you mean 'mobilevit_xxs'" in capsys.readouterr().err


def test_the_trained_board_copies_the_architecture_boards_records_of_this_machine_only(tmp_path: Path) -> None:
    from zoo.measure.machine import machine_info
    from zoo.measure.runs import reuse_board_records

    here = machine_info().machine_id

    def board_record(model: str, backend: str = "litert-1t", **fields) -> Measurement:
        values = {"model": model, "resolution": 256, "backend": backend, "machine_id": here, "batch_size": 1,
                  "num_classes": 1000, "status": "ok", "median_ms": 5.0, "deployed": True, **fields}
        return Measurement(**values)

    board = MeasurementStore(tmp_path / "board" / "measurements.jsonl")
    wanted = board_record("mobilevit_xxs")
    for record in (wanted, board_record("mobilevit_xs"), board_record("mobilevit_xxs", backend="cpu-eager"),
                   board_record("mobilevit_xxs", machine_id="elsewhere"), board_record("mobilevit_xxs", resolution=224),
                   board_record("mobilevit_xxs", backend="executorch-xnnpack-1t", status="failed", median_ms=None)):
        board.append(record)
    store_path = tmp_path / "matrix" / "measurements.jsonl"
    args = (board.path, store_path, ["mobilevit_xxs"], 256, ["litert-1t", "executorch-xnnpack-1t"])
    assert reuse_board_records(*args) == 1
    copied = MeasurementStore(store_path).records()
    assert [(r.model, r.backend, r.median_ms, r.deployed) for r in copied] == [("mobilevit_xxs", "litert-1t", 5.0, True)]
    assert reuse_board_records(*args) == 0  # already there: nothing appended twice
    assert reuse_board_records(store_path, store_path, ["mobilevit_xxs"], 256, ["litert-1t"]) == 0  # itself
    assert reuse_board_records(tmp_path / "absent.jsonl", store_path, ["mobilevit_xxs"], 256, ["litert-1t"]) == 0
