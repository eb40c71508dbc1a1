"""Measure zoo models on several backends and keep the results in the store: `measure_models`.

A stored record is reused (not re-measured) when its key matches and the model's architecture fingerprint is
unchanged, unless `force=True`; failed records are always retried (the cause may have been fixed). Models are
measured per (backend, batch size) group in interleaved rounds (see `zoo.measure.latency`).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch.nn as nn

from zoo.measure.backends import get_backend
from zoo.measure.flops import count_macs
from zoo.measure.latency import Outcome, TimingConfig, measure_interleaved
from zoo.measure.machine import MachineInfo, machine_info, software_versions
from zoo.measure.params import PAPER_NUM_CLASSES, count_params
from zoo.measure.store import MeasurementKey, MeasurementStore

__all__ = [
    "DEFAULT_RESOLUTION",
    "architecture_fingerprint",
    "expected_steps",
    "measure_models",
    "resolve_resolutions",
]

DEFAULT_RESOLUTION = 224


def resolve_resolutions(models: Sequence[str], resolutions: Mapping[str, int] | int | None) -> dict[str, int]:
    """Resolution per model: the given int, the mapping's entry, else the model's published resolution."""
    from zoo.models import get_entry

    if isinstance(resolutions, int):
        return {name: resolutions for name in models}
    given = dict(resolutions or {})
    return {name: given.get(name) or get_entry(name).published.resolution or DEFAULT_RESOLUTION for name in models}


def architecture_fingerprint(model: nn.Module) -> str:
    """Hash of the class and every parameter/buffer name and shape: changes when the architecture does."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
    return digest.hexdigest()[:12]


@dataclass
class _ModelFacts:
    """What is measured once per model and resolution, shared by all its backend records."""

    model: nn.Module
    fingerprint: str
    params: int | None = None
    params_1k: int | None = None
    gmacs: float | None = None


def _reusable(record: dict[str, Any] | None, fingerprint: str) -> bool:
    return record is not None and record.get("status") != "failed" and record.get("arch") == fingerprint


def _count(facts: _ModelFacts, name: str, resolution: int, num_classes: int) -> None:
    from zoo.models import create

    if facts.params is None:
        facts.params = count_params(facts.model)
        facts.params_1k = facts.params if num_classes == PAPER_NUM_CLASSES else count_params(
            create(name, num_classes=PAPER_NUM_CLASSES)
        )
        facts.gmacs = round(count_macs(facts.model, resolution).gmacs, 6)


def _record(
    key: MeasurementKey, facts: _ModelFacts | None, outcome: Outcome, machine: MachineInfo, versions: dict
) -> dict[str, Any]:
    stats = outcome.stats
    return {
        **key.as_dict(),
        "arch": facts.fingerprint if facts else None,
        "params": facts.params if facts else None,
        "params_1k": facts.params_1k if facts else None,
        "gmacs": facts.gmacs if facts else None,
        "status": outcome.status,
        "reason": outcome.reason,
        "unit": "ms",
        "median_ms": stats.median_ms if stats else None,
        "iqr_ms": stats.iqr_ms if stats else None,
        "min_ms": stats.min_ms if stats else None,
        "max_ms": stats.max_ms if stats else None,
        "runs": stats.runs if stats else None,
        "rounds": stats.rounds if stats else None,
        "round_medians_ms": list(stats.round_medians_ms) if stats else None,
        "details": outcome.details,
        "machine": machine.as_dict(),
        "versions": versions,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def measure_models(
    models: Sequence[str],
    resolutions: Mapping[str, int] | int | None,
    backends: Sequence[str],
    store_path: str | Path,
    num_classes: int = PAPER_NUM_CLASSES,
    force: bool = False,
    timing: TimingConfig = TimingConfig(),
    artifacts_dir: str | Path | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Measure `models` on `backends` (every batch size a backend times), store and return one record each.

    Returns records in (model, backend, batch) order, reused ones included. Exported ONNX / Core ML files go
    under `artifacts_dir` (default: `<store folder>/artifacts`).
    """
    from zoo.models import create, get_entry

    for name in models:
        get_entry(name)  # unknown names fail here, before any work, with the registry's message
    backend_objects = {name: get_backend(name) for name in backends}
    store = MeasurementStore(store_path)
    artifacts = Path(artifacts_dir) if artifacts_dir else Path(store_path).parent / "artifacts"
    machine, versions = machine_info(), software_versions()
    resolution_of = resolve_resolutions(models, resolutions)
    stored = {} if force else store.latest()

    facts: dict[str, _ModelFacts | Exception] = {}
    for name in models:
        try:
            model = create(name, num_classes=num_classes)
            facts[name] = _ModelFacts(model, architecture_fingerprint(model))
        except Exception as error:  # a model that does not build is recorded as failed everywhere
            facts[name] = error

    def key(name: str, backend: str, batch: int) -> MeasurementKey:
        return MeasurementKey(name, resolution_of[name], backend, machine.machine_id, batch, num_classes)

    results: dict[MeasurementKey, dict[str, Any]] = {}
    for backend_name, backend in backend_objects.items():
        for batch in backend.batch_sizes:
            pending: list[str] = []
            for name in models:
                k, fact = key(name, backend_name, batch), facts[name]
                if isinstance(fact, Exception):
                    results[k] = _record(k, None, Outcome("failed", f"build: {fact}"), machine, versions)
                    store.append(results[k])
                elif _reusable(stored.get(k), fact.fingerprint):
                    results[k] = stored[k]
                else:
                    pending.append(name)
            ready: dict[str, _ModelFacts] = {}
            for name in pending:
                fact = facts[name]
                assert isinstance(fact, _ModelFacts)
                try:
                    _count(fact, name, resolution_of[name], num_classes)
                    ready[name] = fact
                except Exception as error:
                    k = key(name, backend_name, batch)
                    results[k] = _record(k, fact, Outcome("failed", f"counting: {error}"), machine, versions)
                    store.append(results[k])
            if not ready:
                continue
            outcomes = measure_interleaved(
                backend,
                {name: fact.model for name, fact in ready.items()},
                {name: (batch, 3, resolution_of[name], resolution_of[name]) for name in ready},
                timing,
                artifacts / f"batch{batch}",
                on_progress,
            )
            for name, outcome in outcomes.items():
                k = key(name, backend_name, batch)
                results[k] = _record(k, ready[name], outcome, machine, versions)
                store.append(results[k])
    return [
        results[key(name, backend_name, batch)]
        for name in models
        for backend_name, backend in backend_objects.items()
        for batch in backend.batch_sizes
    ]


def expected_steps(models: Sequence[str], backends: Sequence[str], timing: TimingConfig) -> int:
    """Upper bound of on_progress calls (one per model prepared, one per round), for a progress bar."""
    total = 0
    for backend_name in backends:
        batches = len(get_backend(backend_name).batch_sizes)
        total += batches * (len(models) + timing.rounds)
    return total

