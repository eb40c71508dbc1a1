"""The architecture board's run: every architecture in the zoo on every phone-CPU runtime, measured into its store and
rendered, all in this process (`python -m zoo.report.architectures DIR --measure`; `make latency` builds the
committed one, `leaderboard/architectures/`).

What it measures: the rows of `zoo.report.architectures.rows` (every registered model plus MobileViT's ablations, at
deployment resolution, 1000-class head) on the backends that declare themselves on the board (`settings.
board_backends`: ExecuTorch/XNNPACK, LiteRT, ONNX Runtime, eager PyTorch; fp32 and int8; 1 thread first, then all
threads). A runtime that is not installed gives "skipped: why" records; a failed export a "failed: reason" record:
every cell has a record, so the board never misses a row.

How, in order:
1. Exports, in a pool of `export_jobs` processes, into the export cache (`zoo.report.architectures.exports`) —
   only for architectures the store has no usable record of (or all with `force`). Nothing is timed meanwhile.
2. Timing, serially in this process (`zoo.measure.suite.measure_models`): groups of `GROUP_SIZE` models timed
   interleaved on one backend under `BOARD_TIMING`, each group's records appended to the store (with the protocol
   they were timed under) when its last round ends. The exports come from the cache. An interrupted board resumes
   from its store: finished records are reused. Then, where ONNX Runtime is timed, the op-class profile of each
   architecture (`DIR/breakdown.jsonl`, `zoo.measure.breakdown`, from the cached ONNX export).
3. `DIR/README.md` and its plots from the stores alone (`zoo.report.architectures.render.write_board`; without a
   run: `python -m zoo.report.architectures DIR`, which re-renders and never times or exports).

`force` re-times every cell (the exports stay cached); without it, a rerun with nothing changed only reads the
store and renders the board.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from zoo.measure.backends import get_backend
from zoo.measure.backends.export_cache import cache_root
from zoo.measure.breakdown import PROFILED_BACKEND, breakdown_or_failure
from zoo.measure.latency import TimingConfig
from zoo.measure.machine import machine_info, usable_cpus
from zoo.measure.quiet import QuietPolicy
from zoo.measure.store import MEASUREMENTS_FILE, BreakdownStore, Measurement, MeasurementStore
from zoo.measure.suite import build_model, measure_models
from zoo.report.architectures.exports import prefill_exports
from zoo.report.architectures.render import write_board
from zoo.report.architectures.rows import Architecture, board_architectures, check_resolutions, is_dense
from zoo.report.architectures.settings import (BOARD_TIMING, BREAKDOWN_RUNS, GROUP_SIZE, board_backends,
                                               dense_backends)

__all__ = ["BoardRun", "profile_breakdowns", "run_board"]


@dataclass
class BoardRun:
    """What one board run did, and how long each phase took (seconds)."""

    records: list[Measurement]
    export_s: float = 0.0
    timing_s: float = 0.0
    render_s: float = 0.0
    exports: int = 0  # export jobs sent to the pool (each a cache hit or an export)
    export_cpu_s: dict[str, float] = field(default_factory=dict)  # per exporting backend: its jobs' seconds summed

    @property
    def total_s(self) -> float:
        return self.export_s + self.timing_s + self.render_s


def _to_measure(architectures: Sequence[Architecture], backends: Sequence[str], store: MeasurementStore,
                force: bool) -> list[Architecture]:
    """The architectures some board cell of which has no usable record (all of them with `force`)."""
    if force:
        return list(architectures)
    machine = machine_info().machine_id
    usable = {(k.model, k.resolution, k.backend) for k, r in store.latest().items()
              if r.status != "failed" and k.machine_id == machine and k.batch_size == 1 and k.num_classes == 1000}
    return [a for a in architectures if any((a.label, a.resolution, b) not in usable for b in backends)]


def profile_breakdowns(architectures: Sequence[Architecture], directory: Path, artifacts: Path, force: bool,
                       on_progress: Callable[[str], None] | None = None) -> int:
    """`directory/breakdown.jsonl`: one op-class profile per architecture not profiled yet (all with `force`), from
    the ONNX export the board cached (the file the onnxruntime-cpu cells time)."""
    if not get_backend(PROFILED_BACKEND).available()[0]:
        return 0
    store = BreakdownStore(directory)
    done = set() if force else store.measured()
    count = 0
    for arch in architectures:
        if (arch.label, arch.resolution) in done:
            continue
        store.append(breakdown_or_failure(lambda arch=arch: build_model(arch.label, arch.kwargs).eval(), arch.label,
                                          arch.resolution, BREAKDOWN_RUNS, artifacts / "breakdown" / arch.label,
                                          cache_root(artifacts)))
        count += 1
        if on_progress:
            on_progress(f"breakdown {arch.label}")
    return count


@dataclass(frozen=True)
class _Pass:
    """What every group of rows of one board run shares (see `run_board`)."""

    store_path: Path
    artifacts: Path
    force: bool
    timing: TimingConfig
    export_jobs: int
    calibration: torch.Tensor | None
    on_progress: Callable[[str], None] | None
    deployed: bool
    quiet: QuietPolicy | None


def _measure_rows(run: BoardRun, rows: Sequence[Architecture], backends: Sequence[str], how: _Pass,
                  directory: Path, export_only: bool, breakdown: bool) -> None:
    """Export (in the pool), then time serially, `rows` on `backends`, adding to `run`."""
    if not rows or not backends:
        return
    started = time.perf_counter()
    pending = _to_measure(rows, backends, MeasurementStore(how.store_path), how.force)
    durations = prefill_exports(pending, backends, cache_root(how.artifacts), how.export_jobs, how.calibration,
                                how.on_progress)
    run.exports += sum(len(d) for d in durations.values())
    for backend, seconds in durations.items():
        run.export_cpu_s[backend] = run.export_cpu_s.get(backend, 0.0) + sum(seconds)
    run.export_s += time.perf_counter() - started
    if export_only:
        return
    started = time.perf_counter()
    run.records += measure_models(
        [a.label for a in rows], {a.label: a.resolution for a in rows}, list(backends), how.store_path,
        force=how.force, timing=how.timing, artifacts_dir=how.artifacts, on_progress=how.on_progress,
        calibration_images=how.calibration, model_kwargs={a.label: a.kwargs for a in rows},
        deployed=how.deployed, group_size=GROUP_SIZE, quiet=how.quiet)
    if breakdown and PROFILED_BACKEND in backends:
        profile_breakdowns(rows, directory, how.artifacts, how.force, how.on_progress)
    run.timing_s += time.perf_counter() - started


def run_board(directory: str | Path, models: Sequence[str] | None = None, resolutions: Sequence[int] | None = None,
              backends: Sequence[str] | None = None, store_path: str | Path | None = None,
              artifacts_dir: str | Path | None = None, force: bool = False, timing: TimingConfig = BOARD_TIMING,
              export_jobs: int | None = None, calibration: torch.Tensor | None = None,
              on_progress: Callable[[str], None] | None = None,
              render: Callable[[Path, Path], object] | None = None, breakdown: bool = True,
              export_only: bool = False, quiet: QuietPolicy | None = None) -> BoardRun:
    """Measure the board into its store and render `directory/README.md` (see the module docstring) with
    `render(directory, store_path)` (default: `write_board`, in this process). `export_only`: fill the export cache and
    stop (nothing timed or rendered), so exports can run while the machine is busy and the timing later alone.
    Detector/segmenter rows (`DENSE`) are measured after the classifiers, on those of `backends` in
    `dense_backends()`. `quiet`: the quiet check around each round cycle (default off: see docs/latency.md)."""
    directory = Path(directory)
    backends = list(backends or board_backends())
    for name in backends:
        get_backend(name)  # an unknown name fails here, before any work, with the known ones
    store_path = Path(store_path) if store_path else directory / MEASUREMENTS_FILE
    artifacts = Path(artifacts_dir) if artifacts_dir else directory / "artifacts"
    run = BoardRun(records=[])
    for resolution in resolutions or [None]:
        architectures = board_architectures(models, resolution)
        if resolution is not None:
            check_resolutions(architectures)
        how = _Pass(store_path, artifacts, force, timing, usable_cpus() if export_jobs is None else export_jobs,
                    calibration, on_progress, deployed=resolution is None, quiet=quiet)
        _measure_rows(run, [a for a in architectures if not is_dense(a)], backends, how, directory, export_only,
                      breakdown)
        _measure_rows(run, [a for a in architectures if is_dense(a)], [b for b in backends if b in dense_backends()],
                      how, directory, export_only, breakdown=False)
    if export_only:
        return run
    started = time.perf_counter()
    (render or write_board)(directory, store_path)
    run.render_s = time.perf_counter() - started
    return run
