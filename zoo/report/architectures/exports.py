"""The architecture board's export pool: every (architecture, export kind) exported into the export cache by
`jobs` processes before anything is timed (`zoo.measure.backends.export_cache`), through the backends' public API
(`ExportedBackend.start`: prepare and write the export, nothing loaded or timed; `has_cached_export`)."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from zoo.measure.backends import get_backend
from zoo.measure.suite import build_model
from zoo.report.architectures.rows import Architecture

__all__ = ["exporting_backends", "prefill_exports"]


def _export_job(label: str, kwargs: dict[str, Any], resolution: int, backend_name: str, cache_dir: str,
                calibration: torch.Tensor | None) -> tuple[str, str, float, str]:
    """In a pool process: the export of one architecture for one backend, into the cache (nothing loaded or
    timed). Returns (label, backend, seconds, error or "")."""
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


def exporting_backends(backends: Sequence[str]) -> list[str]:
    """One backend per export kind among `backends` whose exports are cached (1t and all-thread share a file)."""
    chosen: dict[str, str] = {}
    for name in backends:
        backend = get_backend(name)
        if getattr(backend, "caches_exports", False):
            chosen.setdefault(backend.export_kind, name)
    return list(chosen.values())


def _uncached(arch: Architecture, backends: Sequence[str], cache_dir: Path,
              calibration: torch.Tensor | None) -> list[str]:
    """The backends whose export of `arch` the cache does not hold yet (checked here: no process started)."""
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
            for a in architectures for b in _uncached(a, exporting_backends(backends), cache_dir, calibration)]
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
