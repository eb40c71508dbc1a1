"""Measure zoo models on several backends and keep the results in the store: `measure_models`.

A stored record is reused (not re-measured) when its key matches and the model's architecture fingerprint is
unchanged, unless `force=True`; failed records are always retried (the cause may have been fixed). Models are
measured per (backend, batch size) group in interleaved rounds (see `zoo.measure.latency`). A record's
machine id is this host's, or its backend's `device_id` when the backend times on a device of its own.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from zoo.measure.backends import get_backend
from zoo.measure.backends.common import CHECK_BATCH, FP32_RTOL
from zoo.measure.backends.export_cache import MODEL_LABEL_ATTR, cache_root
from zoo.measure.flops import count_macs
from zoo.measure.latency import Outcome, TimingConfig, measure_interleaved
from zoo.measure.machine import MachineInfo, machine_info, software_versions
from zoo.measure.params import PAPER_NUM_CLASSES, count_params
from zoo.measure.quiet import QuietGate, QuietPolicy
from zoo.measure.store import Measurement, MeasurementKey, MeasurementStore, Protocol
from zoo.models import create, get_entry, model_name
from zoo.models.dense.deployable import dense_graph
from zoo.models.registry import deploy_resolution

__all__ = [
    "architecture_fingerprint",
    "build_model",
    "device_of",
    "expected_steps",
    "measure_models",
    "protocol_of",
    "resolve_resolutions",
]


def resolve_resolutions(models: Sequence[str], resolutions: Mapping[str, int] | int | None) -> dict[str, int]:
    """Resolution per model: the given int, else its deployment resolution (`zoo.models.registry.
    deploy_resolution`, with the mapping as overrides)."""
    if isinstance(resolutions, int):
        return {name: resolutions for name in models}
    return {name: deploy_resolution(name, resolutions) for name in models}


def architecture_fingerprint(model: nn.Module) -> str:
    """Hash of the class and every parameter/buffer name and shape: changes when the architecture does."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
    return digest.hexdigest()[:12]


# Backend details that become typed fields of the record (see `zoo.measure.store.Measurement`).
_TYPED_DETAILS = ("peak_memory_mb", "memory_kind", "file_bytes")
WEIGHTS_SEED = 0  # models are built from this seed: the same weights every run, so cached exports stay valid


@dataclass
class _ModelFacts:
    """What is measured once per model and resolution, shared by all its backend records."""

    model: nn.Module
    fingerprint: str
    params: int | None = None
    params_1k: int | None = None
    gmacs: float | None = None


def _reusable(record: Measurement | None, fingerprint: str) -> bool:
    return record is not None and record.status != "failed" and record.arch == fingerprint


def _count(facts: _ModelFacts, label: str, resolution: int, num_classes: int) -> None:
    if facts.params is None:
        facts.params = count_params(facts.model)
        facts.params_1k = facts.params if num_classes == PAPER_NUM_CLASSES else count_params(
            create(model_name(label), num_classes=PAPER_NUM_CLASSES)
        )
        facts.gmacs = round(count_macs(facts.model, resolution).gmacs, 6)


def device_of(backend: object, machine: MachineInfo) -> str:
    """The machine id of a backend's records: its device's identity when it times on a device of its own (a phone
    behind this host), else this host's. `getattr`: a backend written before `device_id` existed has none."""
    return getattr(backend, "device_id", None) or machine.machine_id


@dataclass
class _Run:
    """One call of `measure_models`: where records go and what every record shares."""

    store: MeasurementStore
    stored: dict[MeasurementKey, Measurement]
    machine: MachineInfo
    versions: dict
    num_classes: int
    resolution_of: dict[str, int]
    machine_of: dict[str, str]  # backend name -> machine id of its records
    deployed: bool
    protocol: Protocol
    results: dict[MeasurementKey, Measurement] = field(default_factory=dict)

    def key(self, label: str, backend: str, batch: int) -> MeasurementKey:
        return MeasurementKey(label, self.resolution_of[label], backend, self.machine_of[backend], batch,
                              self.num_classes)

    def keep(self, key: MeasurementKey, facts: _ModelFacts | None, outcome: Outcome) -> None:
        stats = outcome.stats
        details = dict(outcome.details)
        board = {name: details.pop(name, None) for name in _TYPED_DETAILS}  # typed fields of the record
        if outcome.pinned_core is not None:
            details["pinned_core"] = outcome.pinned_core
        seconds = details.pop("seconds", None) or {}  # where the time went: export, load, the group's rounds
        if outcome.timing_group_s is not None:
            seconds.update(timing_group=outcome.timing_group_s, group_size=outcome.group_size)
        self.results[key] = Measurement(
            **key.as_dict(),
            arch=facts.fingerprint if facts else None,
            params=facts.params if facts else None,
            params_1k=facts.params_1k if facts else None,
            gmacs=facts.gmacs if facts else None,
            status=outcome.status,
            reason=outcome.reason,
            median_ms=stats.median_ms if stats else None,
            iqr_ms=stats.iqr_ms if stats else None,
            min_ms=stats.min_ms if stats else None,
            max_ms=stats.max_ms if stats else None,
            runs=stats.runs if stats else None,
            rounds=stats.rounds if stats else None,
            round_medians_ms=tuple(stats.round_medians_ms) if stats else None,
            details=details,
            machine=self.machine.as_dict(),
            versions=self.versions,
            timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            deployed=self.deployed,
            median_of_means_ms=stats.median_of_means_ms if stats else None,
            p90_ms=stats.p90_ms if stats else None,
            trimmed_mean_ms=stats.trimmed_mean_ms if stats else None,
            round_means_ms=tuple(stats.round_means_ms) if stats and stats.round_means_ms else None,
            seconds=seconds or None,
            protocol=self.protocol,
            **board,
        )
        self.store.append(self.results[key])

    def reuse(self, key: MeasurementKey) -> None:
        """Keep the stored record. A deploy pass writes it again (a copy of the line, flagged) when the store does
        not say yet that this is the model's deployment resolution: the record came from another pass, or a newer
        deploy pass chose another resolution. The board reads the choice from the newest flagged record."""
        record = self.stored[key]
        if self.deployed and (not record.deployed or self._chosen_since(record)):
            record = dataclasses.replace(record, deployed=True)
            self.store.append(record)
        self.results[key] = record

    def _chosen_since(self, record: Measurement) -> bool:
        """A later deploy pass chose another resolution for this record's model."""
        return any(other.deployed and other.model == record.model and other.resolution != record.resolution
                   and other.position > record.position for other in self.stored.values())


def protocol_of(timing: TimingConfig, group_size: int | None, quiet: QuietPolicy | None) -> Protocol:
    """The settings a record is timed and checked under, kept in it (so a board states what its records were
    measured with, not what the code does today)."""
    return Protocol(**dataclasses.asdict(timing), group_size=group_size,
                    quiet=dataclasses.asdict(quiet) if quiet is not None else None, fp32_rtol=FP32_RTOL,
                    int8_check_images=CHECK_BATCH)


DENSE_HEAD_KNOB = "head"  # in a row's kwargs: the backbone inside a deployable detector/segmenter graph


def build_model(label: str, kwargs: Mapping[str, Any], num_classes: int = PAPER_NUM_CLASSES) -> nn.Module:
    """The model a record of `label` measures: its registry name with `kwargs`, weights from `WEIGHTS_SEED` (the
    caller's random generator left as it was), labelled for the export cache. `kwargs["head"]` (ssdlite,
    deeplabv3) builds that head's deployable graph over the backbone instead (`num_classes` then unused)."""
    knobs = dict(kwargs)
    head = knobs.pop(DENSE_HEAD_KNOB, None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(WEIGHTS_SEED)
        if head is None:
            model = create(model_name(label), num_classes=num_classes, **knobs)
        else:  # a detector / segmenter row: its head's data set fixes the classes (zoo.models.dense.deployable)
            model = dense_graph(model_name(label), head, **knobs)
    setattr(model, MODEL_LABEL_ATTR, label)  # a knob variant has the default's parameter shapes: the label differs
    return model


def _build(labels: Sequence[str], num_classes: int, model_kwargs: Mapping[str, Mapping[str, Any]]
           ) -> dict[str, _ModelFacts | Exception]:
    facts: dict[str, _ModelFacts | Exception] = {}
    for label in labels:
        try:
            model = build_model(label, model_kwargs.get(label, {}), num_classes)
            facts[label] = _ModelFacts(model, architecture_fingerprint(model))
        except Exception as error:  # a model that does not build is recorded as failed everywhere
            facts[label] = error
    return facts


def _ready_to_time(run: _Run, facts: dict[str, _ModelFacts | Exception], backend: str, batch: int
                   ) -> dict[str, _ModelFacts]:
    """The models to time on (backend, batch): stored records are reused, failures to build or count recorded."""
    ready: dict[str, _ModelFacts] = {}
    for label, fact in facts.items():
        key = run.key(label, backend, batch)
        if isinstance(fact, Exception):
            run.keep(key, None, Outcome("failed", f"build: {fact}"))
        elif _reusable(run.stored.get(key), fact.fingerprint):
            run.reuse(key)
        else:
            try:
                _count(fact, label, run.resolution_of[label], run.num_classes)
                ready[label] = fact
            except Exception as error:
                run.keep(key, fact, Outcome("failed", f"counting: {error}"))
    return ready


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
    calibration_images: torch.Tensor | None = None,
    model_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    deployed: bool = False,
    group_size: int | None = None,
    quiet: QuietPolicy | None = None,
) -> list[Measurement]:
    """Measure `models` on `backends` (every batch size a backend times), store and return one record each.

    `models` are registry names, or labels `zoo.models.model_label(name, kwargs)` of knob variants whose kwargs
    `model_kwargs[label]` gives (a patch-size variant is timed as itself, not as the default architecture).
    Returns records in (model, backend, batch) order, reused ones included. Exported ONNX / Core ML files go
    under `artifacts_dir` (default: `<store folder>/artifacts`). int8 backends calibrate on
    `calibration_images` ([N, 3, H, W], e.g. training images; None: synthetic, recorded in the details).
    `deployed`: the resolutions are the models' deployment resolutions (the matrix's deploy pass); the records
    say so, and the board takes each architecture's deployment resolution from them.
    `group_size`: models are timed interleaved in groups of at most this many per backend (None: all at once);
    each group's records are appended when its last round ends, so an interrupted call loses one group at most.
    `quiet`: time each round cycle on a quiet machine (`zoo.measure.quiet`); the reference probe starts from the
    fastest this store has recorded on this machine.
    Exports are cached under `<artifacts>/exports` (or `$ZOO_EXPORT_CACHE`) (`zoo.measure.backends.export_cache`): a forced re-time, and
    the other thread count of a runtime, load the file instead of exporting again.
    """
    for label in models:
        get_entry(model_name(label))  # unknown names fail here, before any work, with the registry's message
    calibration = {} if calibration_images is None else {"calibration_images": calibration_images}
    backend_objects = {name: get_backend(name, **calibration) for name in backends}
    store = MeasurementStore(store_path)
    artifacts = Path(artifacts_dir) if artifacts_dir else Path(store_path).parent / "artifacts"
    for backend in backend_objects.values():
        if hasattr(backend, "export_cache_dir"):
            backend.export_cache_dir = cache_root(artifacts)
    machine = machine_info()
    run = _Run(store, {} if force else store.latest(), machine, software_versions(), num_classes,
               resolve_resolutions(models, resolutions),
               {name: device_of(backend, machine) for name, backend in backend_objects.items()}, deployed,
               protocol_of(timing, group_size, quiet))
    facts = _build(models, num_classes, model_kwargs or {})
    reference = _fastest_probe(store, machine.machine_id) if quiet else None
    for backend_name, backend in backend_objects.items():
        for batch in backend.batch_sizes:
            ready = list(_ready_to_time(run, facts, backend_name, batch).items())
            size = group_size or max(1, len(ready))
            for group in (dict(ready[i:i + size]) for i in range(0, len(ready), size)):
                gate = QuietGate(quiet, reference) if quiet else None
                outcomes = measure_interleaved(
                    backend, {label: fact.model for label, fact in group.items()},
                    {label: (batch, 3, run.resolution_of[label], run.resolution_of[label]) for label in group},
                    timing, artifacts / f"batch{batch}", on_progress, gate,
                )
                reference = gate.reference_ms if gate else None
                for label, outcome in outcomes.items():
                    run.keep(run.key(label, backend_name, batch), group[label], outcome)
    return [run.results[run.key(label, backend_name, batch)] for label in models
            for backend_name, backend in backend_objects.items() for batch in backend.batch_sizes]


def _fastest_probe(store: MeasurementStore, machine_id: str) -> float | None:
    """The quiet check's reference: the fastest probe among this machine's stored records (None: none yet)."""
    probes = [r.details["probe_reference_ms"] for r in store.records()
              if r.machine_id == machine_id and isinstance(r.details, dict) and "probe_reference_ms" in r.details]
    return min(probes, default=None)


def expected_steps(models: Sequence[str], backends: Sequence[str], timing: TimingConfig) -> int:
    """Upper bound of on_progress calls (one per model prepared, one per round), for a progress bar."""
    total = 0
    for backend_name in backends:
        batches = len(get_backend(backend_name).batch_sizes)
        total += batches * (len(models) + timing.rounds)
    return total

