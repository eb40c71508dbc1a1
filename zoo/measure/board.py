"""The architecture board: every architecture in the zoo on every phone-CPU runtime, `python -m zoo.measure --board
DIR` (`make latency` builds the committed one, `leaderboard/architectures/`).

What it measures: every registered model plus MobileViT's own ablations (patch sizes and fusion, as knob variants
under their `zoo.models.model_label`), each at its deployment resolution (`zoo.models.registry.deploy_resolution`)
with a 1000-class head, on `BOARD_BACKENDS` (ExecuTorch/XNNPACK, LiteRT, ONNX Runtime, eager PyTorch; fp32 and
int8; 1 thread first, then all threads). A runtime that is not installed gives "skipped: why" records; a failed
export a "failed: reason" record: every cell has a record, so the board never misses a row.

How, in order:
1. Exports, in a pool of `export_jobs` processes, into the export cache (`zoo.measure.backends.export_cache`) —
   only for architectures the store has no usable record of (or all with `force`). Nothing is timed meanwhile.
2. Timing, serially in this process (`zoo.measure.suite.measure_models`): groups of `GROUP_SIZE` models timed
   interleaved on one backend under `BOARD_TIMING`, each group's records appended to the store when its last round
   ends. The exports come from the cache. An interrupted board resumes from its store: finished records are reused.
   Then, where ONNX Runtime is timed, the op-class profile of each architecture (`DIR/breakdown.jsonl`, from
   the cached ONNX export: seconds per model).
3. `DIR/README.md` and its plots from the store alone (`python -m zoo.report.architectures DIR`, run as a
   process: the report stage sits above measurement in the flow).

`force` re-times every cell (the exports stay cached); without it, a rerun with nothing changed only reads the
store and renders the board.
"""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from zoo.measure.backends import architecture_board_backends, dense_row_backends
from zoo.measure.backends.export_cache import cache_root
from zoo.measure.latency import TimingConfig
from zoo.measure.quiet import QuietPolicy
from zoo.measure.machine import machine_info, usable_cpus
from zoo.measure.breakdown import PROFILED_BACKEND, breakdown_or_failure
from zoo.measure.store import MEASUREMENTS_FILE, Breakdown, Measurement, MeasurementStore

__all__ = ["ABLATIONS", "BOARD_BACKENDS", "BOARD_QUIET", "BOARD_TIMING", "DENSE", "DENSE_BACKBONES", "DENSE_BACKENDS", "Architecture",
           "BoardError", "BoardRun", "dense_labels", "is_dense",
           "board_architectures", "check_resolutions", "run_board"]

# The protocol (stated on the board): warm-up, 5 rounds of at least 50 runs and 0.25 s (a fast model's 50 runs
# last 0.1 s: too few to ride out a hiccup), a round capped at 1.5 s for a slow model (at least 5 runs), rounds
# interleaved across the group's models (opt-in: inside the quiet check); median of round means, p90, trimmed mean.
BOARD_TIMING = TimingConfig(rounds=5, min_round_s=0.25, warmup_calls=10, min_samples_per_round=5, runs_per_round=50,
                            max_round_s=1.5)
BOARD_QUIET = QuietPolicy()
BOARD_BACKENDS: tuple[str, ...] = architecture_board_backends()  # as the backends declare
GROUP_SIZE = 6  # models timed interleaved together: drift shared, at most one group lost to an interruption
MIN_RESOLUTION, MAX_RESOLUTION = 32, 1024


@dataclass(frozen=True)
class Architecture:
    """One row of the board: a registry name with its knobs, at one resolution."""

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    resolution: int = 224

    @property
    def label(self) -> str:
        from zoo.models import model_label

        return model_label(self.name, dict(self.kwargs))


# MobileViT's ablations (arXiv 2110.02178, on MobileViT-S): patch sizes per stage, and no fusion skip.
# The default mobilevit_s is the (2, 2, 2) row. Paper figures: `zoo.report.published.MOBILEVIT_ABLATIONS`.
ABLATIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("mobilevit_s", {"patch_size": [3, 3, 3]}),
    ("mobilevit_s", {"patch_size": [4, 4, 4]}),
    ("mobilevit_s", {"patch_size": [8, 4, 2]}),
    ("mobilevit_s", {"fusion": False}),
)
# Whole detectors and segmenters (`zoo.models.dense.deployable`: the graph ends at the head, postprocessing
# outside), over the backbones of the MobileViT paper's downstream tables (arXiv 2110.02178, Tables 3 and 4), at
# the heads' deployment sizes (SSDLite 320 px, DeepLabv3 512 px) on the 1-thread runtimes, fp32 and int8.
DENSE_BACKBONES: tuple[str, ...] = ("mobilenetv2_100", "mobilevit_xxs", "mobilevit_xs", "mobilevit_s")
DENSE_BACKENDS: tuple[str, ...] = dense_row_backends()  # as the backends declare
DENSE: tuple[tuple[str, dict[str, Any]], ...] = tuple(
    (backbone, {"head": head}) for head in ("ssdlite", "deeplabv3") for backbone in DENSE_BACKBONES)


class BoardError(ValueError):
    """Bad input for the board (a resolution a model cannot take): one line naming it and what is allowed."""


def _known_labels() -> dict[str, tuple[str, dict[str, Any]]]:
    from zoo.models import list_models, model_label

    known = {name: (name, {}) for name in list_models()}
    known.update({model_label(name, kwargs): (name, kwargs) for name, kwargs in (*ABLATIONS, *DENSE)})
    return known


def dense_labels() -> list[str]:
    """The labels of the `DENSE` rows (`--models $(...)`, or `--dense`): not in the default board yet, since their
    exports at 320/512 px take about as long again as the classifiers'."""
    from zoo.models import model_label

    return [model_label(name, kwargs) for name, kwargs in DENSE]


def is_dense(arch: "Architecture") -> bool:
    return "head" in arch.kwargs


def _row_resolution(label: str, kwargs: Mapping[str, Any]) -> int:
    from zoo.models.dense.deployable import DENSE_HEADS
    from zoo.models.registry import deploy_resolution

    return DENSE_HEADS[kwargs["head"]].resolution if "head" in kwargs else deploy_resolution(label)


def board_architectures(models: Sequence[str] | None = None, resolution: int | None = None) -> list[Architecture]:
    """The board's rows: `models` (registry names, ablation or detector/segmenter labels; default every
    registered model, then the ablations; `DENSE` rows only when named, with `dense_labels()`), each at `resolution` or its deployment resolution (a
    dense row: its head's). Unknown names raise the registry's error."""
    from zoo.models import get_entry, model_label, model_name

    known = _known_labels()
    dense = {model_label(name, kwargs) for name, kwargs in DENSE}
    chosen = list(models) if models else [label for label in known if label not in dense]
    rows = []
    for label in chosen:
        if label not in known:
            get_entry(model_name(label))  # an unknown name: the registry's message, with the known names
            variants = [k for k in known if "[" in k]
            raise BoardError(f"unknown variant {label!r}; the board's variants: {', '.join(variants)}")
        name, kwargs = known[label]
        rows.append(Architecture(name, kwargs, resolution or _row_resolution(label, kwargs)))
    return rows


def check_resolutions(architectures: Sequence[Architecture]) -> None:
    """Raise BoardError for a resolution out of range, or one a model's forward pass refuses."""
    from zoo.measure.suite import build_model

    for arch in architectures:
        if not MIN_RESOLUTION <= arch.resolution <= MAX_RESOLUTION:
            raise BoardError(f"resolution {arch.resolution} is out of range: allowed {MIN_RESOLUTION}–"
                             f"{MAX_RESOLUTION} px")
        model = build_model(arch.label, arch.kwargs).eval()
        try:
            with torch.inference_mode():
                model(torch.zeros(1, 3, arch.resolution, arch.resolution))
        except Exception as error:
            from zoo.models.registry import deploy_resolution

            raise BoardError(f"{arch.label} cannot take {arch.resolution} px ({type(error).__name__}: "
                             f"{str(error).splitlines()[0][:120] if str(error) else ''}); its deployment "
                             f"resolution is {deploy_resolution(arch.label)} px") from error


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


def _export_job(label: str, kwargs: dict[str, Any], resolution: int, backend_name: str, cache_dir: str,
                calibration: torch.Tensor | None) -> tuple[str, str, float, str]:
    """In a pool process: the export of one architecture for one backend, into the cache (nothing loaded or
    timed). Returns (label, backend, seconds, error or "")."""
    from zoo.measure.backends import get_backend
    from zoo.measure.suite import build_model

    torch.set_num_threads(1)  # one core per exporter: the pool has as many processes as cores
    started = time.perf_counter()
    try:
        backend = get_backend(backend_name, calibration_images=calibration)
        backend.export_cache_dir = Path(cache_dir)
        ok, why_not = backend.available()
        if ok:
            backend.start(build_model(label, kwargs).eval(), (1, 3, resolution, resolution), Path(cache_dir))
        return label, backend_name, time.perf_counter() - started, "" if ok else why_not
    except Exception as error:  # the timing phase exports again and records the failure as its cell
        return label, backend_name, time.perf_counter() - started, f"{type(error).__name__}: {error}"[:200]


def _exporting_backends(backends: Sequence[str]) -> list[str]:
    """One backend per export kind among `backends` whose exports are cached (1t and all-thread share a file)."""
    from zoo.measure.backends import get_backend

    chosen: dict[str, str] = {}
    for name in backends:
        backend = get_backend(name)
        if getattr(backend, "caches_exports", False):
            chosen.setdefault(backend.export_kind, name)
    return list(chosen.values())


def _to_measure(architectures: Sequence[Architecture], backends: Sequence[str], store: MeasurementStore,
                force: bool) -> list[Architecture]:
    """The architectures some board cell of which has no usable record (all of them with `force`)."""
    if force:
        return list(architectures)
    machine = machine_info().machine_id
    usable = {(k.model, k.resolution, k.backend) for k, r in store.latest().items()
              if r.status != "failed" and k.machine_id == machine and k.batch_size == 1 and k.num_classes == 1000}
    return [a for a in architectures if any((a.label, a.resolution, b) not in usable for b in backends)]


def _uncached(arch: Architecture, backends: Sequence[str], cache_dir: Path,
              calibration: torch.Tensor | None) -> list[str]:
    """The backends whose export of `arch` the cache does not hold yet (checked here: no process started)."""
    from zoo.measure.backends import get_backend
    from zoo.measure.suite import build_model

    model = build_model(arch.label, arch.kwargs).eval()
    missing = []
    for name in backends:
        backend = get_backend(name, calibration_images=calibration)
        backend.export_cache_dir = cache_dir
        if backend.available()[0] and not backend.has_cached_export(model, (1, 3, arch.resolution, arch.resolution)):
            missing.append(name)
    return missing


def prefill_exports(architectures: Sequence[Architecture], backends: Sequence[str], cache_dir: Path, jobs: int,
                    calibration: torch.Tensor | None = None,
                    on_progress: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Export every (architecture, export kind) into the cache with `jobs` processes; returns each exporting
    backend's job durations (seconds), which say where a first board's time goes."""
    if jobs < 1:
        return {}
    work = [(a.label, dict(a.kwargs), a.resolution, b, str(cache_dir), calibration)
            for a in architectures for b in _uncached(a, _exporting_backends(backends), cache_dir, calibration)]
    durations: dict[str, list[float]] = {}
    if not work:
        return durations
    # spawn: a fresh interpreter per worker (forking a process that holds runtime thread pools is unsafe)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        for label, backend, seconds, error in pool.map(_export_job, *zip(*work)):
            durations.setdefault(backend, []).append(seconds)
            if on_progress:
                on_progress(f"export {label} {backend} {seconds:.0f}s{' ' + error[:60] if error else ''}")
    return durations


BREAKDOWN_RUNS = 10


def breakdown_record(arch: Architecture, cache_dir: Path, workdir: Path) -> Breakdown:
    """The op-class profile of `arch` from the board's cached ONNX export (`zoo.measure.breakdown`)."""
    from zoo.measure.suite import build_model

    return breakdown_or_failure(lambda: build_model(arch.label, arch.kwargs).eval(), arch.label, arch.resolution,
                                BREAKDOWN_RUNS, workdir, cache_dir)


def profile_breakdowns(architectures: Sequence[Architecture], directory: Path, artifacts: Path, force: bool,
                       on_progress: Callable[[str], None] | None = None) -> int:
    """`directory/breakdown.jsonl`: one op-class profile per architecture not profiled yet (all with `force`)."""
    from zoo.measure.backends import get_backend
    from zoo.measure.store import BreakdownStore

    if not get_backend(PROFILED_BACKEND).available()[0]:
        return 0
    store = BreakdownStore(directory)
    done = set() if force else store.measured()
    count = 0
    for arch in architectures:
        if (arch.label, arch.resolution) in done:
            continue
        store.append(breakdown_record(arch, cache_root(artifacts), artifacts / "breakdown" / arch.label))
        count += 1
        if on_progress:
            on_progress(f"breakdown {arch.label}")
    return count


def render_in_subprocess(directory: Path, store_path: Path) -> None:
    """`python -m zoo.report.architectures DIR --store STORE`: the board's README is the report stage's, which
    sits above measurement in the flow (README "The flow"), so measurement runs it instead of importing it."""
    subprocess.run([sys.executable, "-m", "zoo.report.architectures", str(directory), "--store", str(store_path)],
                   check=True)


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
    from zoo.measure.suite import measure_models

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
    `render(directory, store_path)` (default: `render_in_subprocess`). `export_only`: fill the export cache and
    stop (nothing timed or rendered), so exports can run while the machine is busy and the timing later alone.
    Detector/segmenter rows (`DENSE`) are measured after the classifiers, on those of `backends` in
    `DENSE_BACKENDS`. `quiet`: the quiet check around each round cycle (default off: see the README)."""
    from zoo.measure.backends import get_backend

    directory = Path(directory)
    backends = list(backends or BOARD_BACKENDS)
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
        _measure_rows(run, [a for a in architectures if is_dense(a)], [b for b in backends if b in DENSE_BACKENDS],
                      how, directory, export_only, breakdown=False)
    if export_only:
        return run
    started = time.perf_counter()
    (render or render_in_subprocess)(directory, store_path)
    run.render_s = time.perf_counter() - started
    return run
