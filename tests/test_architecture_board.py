"""The architecture board (issue 18): the field's statistics, rounds, core pinning, peak memory, the export cache
(reused on --force, keyed by the label), reuse and resume from the store, bad input, README rendering from a
hand-made store (failed/skipped cells, exact Pareto front and Kendall τ), published figures, old lines."""
from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo.measure.suite as suite
from zoo.measure.backends import registered
from zoo.measure.backends.common import Exported, ExportedBackend
from zoo.measure.backends.export_cache import export_key
from zoo.measure.backends.spec import per_thread_count
from zoo.measure.latency import TimingConfig, pinned_to_one_core, summarize_rounds, trimmed_mean
from zoo.measure.memory import PeakRss
from zoo.measure.quiet import QuietPolicy
from zoo.measure.store import Breakdown, BreakdownStore, Measurement, MeasurementStore, Protocol
from zoo.report.architectures import (BoardError, board_architectures, check_resolutions, load_board, pareto_labels,
                                      run_board, write_board)
from zoo.report.architectures.__main__ import main
from zoo.report.architectures.protocol import protocol_section
from zoo.report.published import paper_latency_groups, published_of

FAST = TimingConfig(rounds=2, min_round_s=0.0, warmup_calls=1, min_samples_per_round=2, runs_per_round=3,
                    max_round_s=0.05)
MODELS = ["mobilevit_xxs", "mobilenetv2_100"]


# --- statistics and rounds ---------------------------------------------------------------------------------------

def test_statistics_of_synthetic_rounds_are_exact() -> None:
    rounds_s = [[0.001, 0.002, 0.003, 0.010], [0.004, 0.005, 0.006, 0.005], [0.002, 0.002, 0.002, 0.002]]
    stats = summarize_rounds(rounds_s, batch_size=1)
    # round means 4.0, 5.0, 2.0 ms -> median 4.0; round medians 2.5, 5.0, 2.0 -> 2.5
    assert stats.round_means_ms == (4.0, 5.0, 2.0) and stats.median_of_means_ms == pytest.approx(4.0)
    assert stats.median_ms == pytest.approx(2.5)
    pooled = sorted([1, 2, 3, 10, 4, 5, 6, 5, 2, 2, 2, 2])  # ms
    # p90 by linear interpolation: rank 0.9 * 11 = 9.9 between pooled[9] = 5 and pooled[10] = 6
    assert stats.p90_ms == pytest.approx(5.9)
    # 12 samples: floor(1.2) = 1 dropped at each end -> mean of the middle 10
    assert stats.trimmed_mean_ms == pytest.approx(sum(pooled[1:11]) / 10)
    assert trimmed_mean(np.arange(20.0)) == pytest.approx(np.arange(2.0, 18.0).mean())


def test_a_round_stops_at_its_run_count_or_its_time_cap() -> None:
    config = TimingConfig(min_round_s=0.0, min_samples_per_round=5, runs_per_round=50, max_round_s=1.5)
    assert not config.round_done(4, 10.0)  # never fewer than the minimum samples
    assert not config.round_done(49, 1.0) and config.round_done(50, 0.2) and config.round_done(7, 1.6)
    legacy = TimingConfig(min_round_s=0.3, min_samples_per_round=3)  # the old rule: time floor and samples
    assert not legacy.round_done(100, 0.2) and legacy.round_done(3, 0.31)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no sched_setaffinity here")
def test_one_thread_rounds_are_pinned_to_one_core_and_the_mask_restored() -> None:
    before = os.sched_getaffinity(0)
    with pinned_to_one_core(True) as core:
        assert os.sched_getaffinity(0) == {core} and core == max(before)
    assert os.sched_getaffinity(0) == before
    with pinned_to_one_core(False) as core:
        assert core is None and os.sched_getaffinity(0) == before


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="no /proc peak reset here")
def test_peak_rss_counts_what_the_block_allocated_even_when_freed() -> None:
    with PeakRss() as rss:
        block = np.ones(64 * 2**20 // 8)  # 64 MB touched, then freed inside the block
        del block
    assert rss.increase_mb is not None and 56 <= rss.increase_mb <= 120


# --- a fake exported backend: counts exports and loads -----------------------------------------------------------

class FakeExport(ExportedBackend):
    """An 'export' that is the prepared PyTorch model itself, written as a 1000-byte file."""

    writes: list[str] = []
    opens: list[str] = []
    present = True

    def available(self) -> tuple[bool, str]:
        return (True, "") if FakeExport.present else (False, "fakert not importable")

    def write_export(self, source, folder: Path, calibration) -> dict:
        FakeExport.writes.append(self.name)
        (folder / "model.bin").write_bytes(b"x" * 1000)
        return {"exporter": "fake", "file": "model.bin"}

    def open_export(self, source, folder: Path, details: dict) -> Exported:
        FakeExport.opens.append(self.name)
        model = source.exportable

        def run(array: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(array)).numpy()

        return Exported(run=run, call=lambda: None, details={"threads": source.threads, **details})


class Interrupted(BaseException):
    """What a kill looks like to the code after it: nothing below catches it."""


# Declared as every backend is: 'fake-1t' and 'fake' (all cores) share one export kind.
FAKE_DECLARED = per_thread_count("fake", make=FakeExport, runtime="fakert", order=900, architecture_board=True)


@pytest.fixture
def fake() -> Iterator[type[FakeExport]]:
    FakeExport.writes, FakeExport.opens, FakeExport.present = [], [], True
    with registered(*FAKE_DECLARED):
        yield FakeExport


def _board(tmp_path: Path, **kwargs) -> list[Measurement]:
    options = {"models": MODELS, "resolutions": [64], "backends": ["fake-1t", "fake"], "timing": FAST,
               "export_jobs": 0, "render": write_board, "quiet": None, **kwargs}
    return run_board(tmp_path / "board", **options).records


@pytest.mark.slow
def test_board_records_reuse_exports_on_force_and_reuse_records_on_rerun(tmp_path: Path, fake) -> None:
    records = _board(tmp_path)
    # one export per model: the 1-thread and all-thread backends share the file (one export kind)
    assert sorted(fake.writes) == ["fake-1t", "fake-1t"] and len(fake.opens) == 4
    one = next(r for r in records if r.model == "mobilevit_xxs" and r.backend == "fake-1t")
    assert one.status == "ok" and one.file_bytes == 1000 and one.min_ms <= one.p90_ms <= one.max_ms
    assert one.trimmed_mean_ms is not None and one.median_of_means_ms == one.latency_ms
    assert one.details["threads"] == 1 and one.details["parity_max_abs_err"] <= one.details["parity_tolerance"]
    if hasattr(os, "sched_setaffinity"):
        assert one.details["pinned_core"] == max(os.sched_getaffinity(0))
    assert set(one.seconds) >= {"export", "load_and_check", "timing_group"} and one.seconds["group_size"] == 2
    store = MeasurementStore(tmp_path / "board" / "measurements.jsonl")
    assert len(store.records()) == 4
    _board(tmp_path)  # nothing changed: every record reused, nothing exported, loaded or written
    assert len(fake.writes) == 2 and len(fake.opens) == 4 and len(store.records()) == 4
    _board(tmp_path, force=True)  # re-timed from the cached exports
    assert len(fake.writes) == 2 and len(fake.opens) == 8 and len(store.records()) == 8
    assert all(r.details["export_cached"] for r in store.records()[4:])
    assert (tmp_path / "board" / "README.md").read_text().count("| mobilevit_xxs ") == 3  # 2 runtimes, citations


@pytest.mark.slow
def test_an_interrupted_board_keeps_finished_groups_and_resumes(tmp_path: Path, fake, monkeypatch) -> None:
    monkeypatch.setattr("zoo.report.architectures.run.GROUP_SIZE", 1)  # one model per group: each appended when timed
    original = FakeExport.open_export

    def killed_on_second(self, source, folder, details):
        if len(FakeExport.opens) == 1:
            raise Interrupted()
        return original(self, source, folder, details)

    monkeypatch.setattr(FakeExport, "open_export", killed_on_second)
    with pytest.raises(Interrupted):
        _board(tmp_path, backends=["fake-1t"])
    store = MeasurementStore(tmp_path / "board" / "measurements.jsonl")
    assert [(r.model, r.status) for r in store.records()] == [("mobilevit_xxs", "ok")]
    monkeypatch.setattr(FakeExport, "open_export", original)
    _board(tmp_path, backends=["fake-1t"])  # resumes: only the missing cell is measured
    assert [r.model for r in store.records()] == ["mobilevit_xxs", "mobilenetv2_100"]
    assert FakeExport.opens == ["fake-1t", "fake-1t"]


def test_board_records_keep_the_quiet_checks_probes_and_the_next_run_starts_from_them(tmp_path: Path, fake) -> None:
    lenient = QuietPolicy(tolerance=100.0, max_wait_s=0.0)  # never waits: the suite shares the cores
    records = _board(tmp_path, backends=["fake-1t"], quiet=lenient)
    probes = [r.details for r in records]
    assert all(d["probe_ms"] > 0 and d["probe_reference_ms"] <= d["probe_max_ms"] for d in probes)
    assert all(d["cycles_discarded"] == 0 for d in probes)
    store = MeasurementStore(tmp_path / "board" / "measurements.jsonl")
    assert suite._fastest_probe(store, records[0].machine_id) == min(d["probe_reference_ms"] for d in probes)
    assert suite._fastest_probe(store, "another-machine") is None
    text = (tmp_path / "board" / "README.md").read_text()
    assert "Quiet check" in text and "cycles re-timed" in text
    # the time table's fake-1t row: no cycle re-timed, the median probe's excess over the best (>= 0 by definition)
    assert re.search(r"\| fake-1t +\|[^\n]*\| 0 +\| \+\d+\.\d% +\|\n", text)


def test_an_absent_runtime_is_a_skipped_cell_on_the_board(tmp_path: Path, fake) -> None:
    FakeExport.present = False
    records = _board(tmp_path, models=["mobilevit_xxs"], backends=["fake-1t"])
    assert [(r.status, r.reason) for r in records] == [("skipped", "fakert not importable")]
    assert "| skipped: fakert not importable |" in (tmp_path / "board" / "README.md").read_text()


def test_the_export_key_tells_knob_variants_runtimes_and_shapes_apart() -> None:
    model = torch.nn.Linear(4, 2)
    key = export_key("litert", model, (1, 3, 64, 64), (), None)
    assert key == export_key("litert", model, (1, 3, 64, 64), (), None)
    assert key != export_key("onnxruntime-cpu", model, (1, 3, 64, 64), (), None)
    assert key != export_key("litert", model, (1, 3, 96, 96), (), None)
    assert key != export_key("litert", model, (1, 3, 64, 64), (), torch.ones(1, 3, 64, 64))
    model.zoo_model_label = "x[patch_size=[4, 4, 4]]"  # same weights, another architecture
    assert key != export_key("litert", model, (1, 3, 64, 64), (), None)


# --- bad input -------------------------------------------------------------------------------------------------------

def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    board = str(tmp_path / "b")
    assert main([board, "--measure", "--models", "mobilevit_xxz", "--backends", "litert-1t"]) == 2
    assert "Did you mean 'mobilevit_xxs'" in capsys.readouterr().err
    assert main([board, "--measure", "--models", "mobilevit_xxs", "--backends", "tflite"]) == 2
    assert "unknown backend 'tflite'; known:" in capsys.readouterr().err
    assert main([board, "--measure", "--models", "mobilevit_xxs", "--res", "8", "--backends", "litert-1t"]) == 2
    assert "resolution 8 is out of range: allowed 32–1024 px" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()  # nothing measured or written


def test_a_resolution_a_model_cannot_take_names_it() -> None:
    with pytest.raises(BoardError, match=r"coatnet_pico cannot take 100 px .*deployment resolution is 224"):
        check_resolutions(board_architectures(["coatnet_pico"], 100))


def test_the_default_board_is_every_model_and_the_ablations_at_deployment_resolution() -> None:
    from zoo.models import list_models

    rows = board_architectures()
    labels = [a.label for a in rows]
    assert labels[:len(list_models())] == list_models()
    assert labels[len(list_models()):] == ["mobilevit_s[patch_size=[3, 3, 3]]", "mobilevit_s[patch_size=[4, 4, 4]]",
                                           "mobilevit_s[patch_size=[8, 4, 2]]", "mobilevit_s[fusion=false]"]
    by_label = {a.label: a.resolution for a in rows}
    assert by_label["mobilevit_s[fusion=false]"] == 256 and by_label["deit_tiny"] == 224
    assert by_label["fastvit_t8"] == 256


# --- README from a hand-made store ---------------------------------------------------------------------------------

def _rec(model: str, backend: str, ms: float | None, status: str = "ok", reason: str | None = None,
         resolution: int = 224, **fields) -> Measurement:
    return Measurement(model=model, resolution=resolution, backend=backend, machine_id="m1", status=status,
                       reason=reason, median_ms=ms, median_of_means_ms=ms, p90_ms=None if ms is None else ms * 1.1,
                       trimmed_mean_ms=ms, gmacs=1.0, machine={"cpu_model": "Test CPU", "cpus": 2, "os": "Linux"},
                       **fields)


A, B = "executorch-xnnpack-1t", "litert-1t"
HAND_MADE = [
    _rec("mobilenetv2_100", A, 10.0, peak_memory_mb=0.5, memory_kind="planned arena", file_bytes=2**21,
         details={"peak_rss_increase_mb": 12.0, "delegation": {"delegated_nodes": 9, "non_delegated_nodes": 1}}),
    _rec("mobilevit_xxs", A, 20.0, resolution=256), _rec("mobilevit_xs", A, 30.0, resolution=256),
    _rec("pit_ti", A, 40.0), _rec("deit_tiny", A, 50.0),
    _rec("coatnet_pico", A, None, status="failed", reason="export: boom"),
    _rec("mobilenetv2_100", B, 12.0), _rec("mobilevit_xxs", B, 15.0, resolution=256),
    _rec("mobilevit_xs", B, 60.0, resolution=256), _rec("pit_ti", B, 35.0), _rec("deit_tiny", B, 30.0),
    _rec("mobilevit_s", B, None, status="skipped", reason="litert not importable", resolution=256),
]


def test_board_readme_from_a_hand_made_store(tmp_path: Path) -> None:
    store = MeasurementStore(tmp_path / "measurements.jsonl")
    for record in HAND_MADE:
        store.append(record)
    BreakdownStore(tmp_path).append(Breakdown(model="mobilenetv2_100", resolution=224, total_kernel_ms=8.0,
                                              ms_by_class={"convolution": 6.0, "depthwise conv": 2.0},
                                              gmacs_by_class={"convolution": 0.28}))
    path = write_board(tmp_path, store.path)
    text = path.read_text()
    assert path.read_text() == write_board(tmp_path, store.path).read_text()  # same store, same README
    # the front (lower latency, higher published top-1): MobileNetV2 72.0 at 10 ms, MobileViT-XS 74.8 at 30 ms
    assert "- **executorch-xnnpack-1t** (fp32): mobilenetv2_100 (72.0 %, 10.0 ms) → mobilevit_xs (74.8 %, 30.0 ms)" \
        in text
    # B's order of A's rows is 1, 2, 5, 4, 3: 3 discordant of 10 pairs -> τ = (7 - 3) / 10
    assert "| executorch-xnnpack-1t | –                       | 0.40 (n=5)  |" in text
    # MobileViT Table 3 (iPhone 12 NE): mnv2 < xs < pit < deit; A agrees exactly, B is tied 3 to 3
    assert "1.00 (n=4)" in text and "0.00 (n=4)" in text
    assert "| failed: export: boom |" in text and "| skipped: litert not importable |" in text
    assert text.count("| coatnet_pico ") == 3 and "not measured" in text  # a row in every table, and citations
    # rows of the store only, and the board says which architectures it does not show yet
    partial = next(line for line in text.splitlines() if line.startswith("**Partial board**"))
    assert "pit_xs" in partial and "mobilenetv2_100" not in partial and "mobilevit_s[fusion=false]" in partial
    assert "| mobilenetv2_100 | 224   | 8.0         | 6.0 (75%) / 0.280 " in text  # the op-class profile
    assert "0.5 (arena); RSS 12.0" in text and "9/10 nodes" in text and "| 2.0 " in text
    for plot in ("top1_vs_latency_fp32.png", "gmacs_vs_latency.png"):
        assert (tmp_path / plot).stat().st_size > 1000 and f"]({plot})" in text


@pytest.mark.slow
def test_the_spawn_pool_exports_and_the_board_profiles_op_classes_from_that_export(tmp_path: Path) -> None:
    """The export pool as the board runs it (spawned processes, no threads swapped in; tested once): one ONNX
    export of a small model lands in the cache, a second prefill has nothing to do, and the op-class profile
    reads that cached export instead of exporting again."""
    from zoo.measure.backends import get_backend
    from zoo.measure.breakdown import breakdown_or_failure
    from zoo.measure.suite import build_model
    from zoo.report.architectures.exports import prefill_exports
    from zoo.report.architectures.rows import Architecture

    arch, backends, cache = Architecture("mobilevit_xxs", resolution=64), ["onnxruntime-cpu-1t"], tmp_path / "exports"
    progress: list[str] = []
    durations = prefill_exports([arch], backends, cache, jobs=1, on_progress=progress.append)
    assert list(durations) == backends and len(durations[backends[0]]) == 1 and durations[backends[0]][0] > 0
    assert len(progress) == 1 and progress[0].startswith("export mobilevit_xxs onnxruntime-cpu-1t ")
    assert progress[0].split()[-1].endswith("s"), progress  # no error text after the seconds
    backend = get_backend(backends[0])
    backend.export_cache_dir = cache
    assert backend.has_cached_export(build_model("mobilevit_xxs", {}).eval(), (1, 3, 64, 64))
    assert prefill_exports([arch], backends, cache, jobs=1) == {}  # cached: no process started
    written = {f: f.stat().st_mtime_ns for f in cache.rglob("*") if f.is_file()}

    record = breakdown_or_failure(lambda: build_model("mobilevit_xxs", {}).eval(), "mobilevit_xxs", 64, 10,
                                  tmp_path / "work", cache)
    assert record.model == "mobilevit_xxs" and record.total_kernel_ms > 0, record.reason
    assert record.ms_by_class["attention"] > 0 and record.gmacs_by_class["attention"] > 0
    (kind,) = [p.name for p in cache.iterdir()]
    assert kind == "onnxruntime-cpu"  # the ONNX Runtime backends' cached export, reused by their cells
    assert {f: f.stat().st_mtime_ns for f in cache.rglob("*") if f.is_file()} == written  # the pool's, not exported again


def test_pareto_front_is_exact_on_a_hand_made_set() -> None:
    latency = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 2.5, "e": 4.0, "f": 0.5}
    top1 = {"a": 70.0, "b": 75.0, "c": 80.0, "d": 74.0, "e": 79.0}  # f has no published top-1
    assert pareto_labels(latency, top1) == ["a", "b", "c"]
    board = load_board(HAND_MADE)
    assert board.rows[:2] == ["mobilenetv2_100", "mobilevit_xxs"] and board.backends == [A, B]


def test_published_figures_cite_the_papers_and_group_their_latencies() -> None:
    patch4 = published_of("mobilevit_s[patch_size=[4, 4, 4]]")
    assert (patch4.top1, patch4.paper_latency_ms, patch4.paper_device) == (77.6, 8.23, "iPhone 12")
    assert published_of("mobilevit_s[fusion=false]").top1 == 77.9
    assert published_of("mobilevit_xxs[patch_size=[4, 4, 4]]").top1 is None  # not the default's figure
    deit = published_of("deit_tiny")
    assert (deit.top1, deit.arxiv, deit.epochs, deit.distilled) == (72.2, "2012.12877", 300, False)
    groups = {(g.device, g.source): g.ms for g in paper_latency_groups(
        ["mobilenetv2_100", "deit_tiny", "pit_ti", "mobilevit_xs", "mobilevit_s", "mobilevit_s[patch_size=[4, 4, 4]]",
         "repvit_m0_9", "mobilevit_xxs"])}
    assert groups[("iPhone 12 Neural Engine", "arXiv 2110.02178 Table 3")] == {
        "mobilenetv2_100": 0.92, "deit_tiny": 10.99, "pit_ti": 10.56, "mobilevit_xs": 7.28}
    assert groups[("iPhone 12", "arXiv 2110.02178, patch-size ablation (MobileViT-S)")] == {
        "mobilevit_s": 9.85, "mobilevit_s[patch_size=[4, 4, 4]]": 8.23}
    assert groups[("iPhone 12", "arXiv 2307.09283")] == {"repvit_m0_9": 0.9}


def test_old_lines_load_and_new_fields_round_trip(tmp_path: Path) -> None:
    old = {"model": "deit_tiny", "resolution": 224, "backend": "litert-1t", "machine_id": "m", "batch_size": 1,
           "num_classes": 1000, "status": "ok", "median_ms": 20.0, "round_medians_ms": [20.0, 20.0]}
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(old) + "\n")
    (record,) = MeasurementStore(path).records()
    assert record.p90_ms is None and record.memory_kind is None and record.latency_ms == 20.0
    assert "p90_ms" not in record.to_dict() and "seconds" not in record.to_dict()
    new = _rec("deit_tiny", B, 18.0, round_means_ms=(18.0, 18.5), peak_memory_mb=3.5, memory_kind="peak RSS increase",
               file_bytes=1234, seconds={"export": 1.0})
    MeasurementStore(path).append(new)
    again = MeasurementStore(path).records()[1]
    assert again == new and again.round_means_ms == (18.0, 18.5) and again.latency_ms == 18.0


@pytest.mark.slow
def test_export_only_fills_the_shared_cache_and_times_nothing_then_the_board_exports_nothing(
        tmp_path: Path, fake, monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    # the pool's processes would not see the fake backend: threads run the same jobs here
    monkeypatch.setattr("zoo.report.architectures.exports.ProcessPoolExecutor",
                        lambda max_workers, mp_context: ThreadPoolExecutor(max_workers))
    shared = tmp_path / "shared-cache"
    monkeypatch.setenv("ZOO_EXPORT_CACHE", str(shared))
    run = run_board(tmp_path / "board", models=MODELS, resolutions=[64], backends=["fake-1t", "fake"], timing=FAST,
                    export_jobs=1, render=write_board, export_only=True, quiet=None)
    assert run.records == [] and run.exports == 2 and set(run.export_cpu_s) == {"fake-1t"}
    assert sorted(fake.writes) == ["fake-1t", "fake-1t"] and fake.opens == []
    assert len(list(shared.glob("fake/*/export.json"))) == 2  # in $ZOO_EXPORT_CACHE, not under the board
    assert not (tmp_path / "board" / "README.md").exists()
    assert not (tmp_path / "board" / "measurements.jsonl").exists()
    records = run_board(tmp_path / "board", models=MODELS, resolutions=[64], backends=["fake-1t", "fake"],
                        timing=FAST, export_jobs=1, render=write_board, quiet=None).records
    assert len(fake.writes) == 2 and len(records) == 4  # every cell timed from the cache
    assert all(r.details["export_cached"] for r in records)



# --- the Protocol section, from the settings stored with the records ----------------------------------------------

STORED = Protocol(rounds=7, min_round_s=0.5, warmup_calls=4, min_samples_per_round=5, runs_per_round=20,
                  max_round_s=2.0, group_size=3, quiet=None, fp32_rtol=1e-4, int8_check_images=8)


def test_the_protocol_section_states_the_records_settings_not_todays_constants() -> None:
    text = "\n".join(protocol_section([dataclasses.replace(r, protocol=STORED) for r in HAND_MADE]))
    assert "4 warm-up calls, then 7 rounds of at least 20 runs and 0.5 s (a slow model's round stops after 2.0 s" in text
    assert "groups of 3 models" in text and "Settings:" not in text
    assert "opt-in with `--quiet`): off for every record here." in text
    # records from before settings were stored: the board's settings of that time, labelled; the quiet check per record
    legacy = [dataclasses.replace(r, timestamp="2026-12-03T07:00:00+00:00",
                                  details={**r.details, "probe_ms": 1.0}) for r in HAND_MADE]
    text = "\n".join(protocol_section(legacy))
    assert "- Settings: 10 timed record(s) predate stored settings" in text and "not read from the records" in text
    assert "10 warm-up calls, then 5 rounds of at least 50 runs and 0.25 s" in text
    assert "- Quiet check (`zoo.measure.quiet`): a fixed probe" in text and "within 5% of the fastest" in text
    # older still: nothing known
    text = "\n".join(protocol_section(HAND_MADE))  # no timestamp, no protocol
    assert "protocol not recorded" in text and "warm-up calls" not in text
    # two protocols on one board: each stated with its count
    mixed = [dataclasses.replace(r, protocol=STORED if i % 3 else dataclasses.replace(STORED, rounds=9))
             for i, r in enumerate(HAND_MADE)]
    text = "\n".join(protocol_section(mixed))
    assert "- Per cell (6 records): " in text and "- Per cell (4 records): " in text and "then 9 rounds" in text


def test_measure_board_hands_over_to_the_report_layer_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import zoo.measure.__main__ as measure_cli

    seen = []
    monkeypatch.setattr(measure_cli.subprocess, "run",
                        lambda command, check: seen.append(command) or type("Done", (), {"returncode": 3})())
    assert measure_cli.main(["--board", "out/b", "--models", "deit_tiny", "--quiet"]) == 3
    assert seen[0][1:] == ["-m", "zoo.report.architectures", "out/b", "--measure", "--models", "deit_tiny", "--quiet"]
