"""The measurement stores: one JSON object per line, appended atomically; the only module that parses their lines.

`measurements.jsonl` holds `Measurement` records. Key: (model, resolution, backend, machine_id, batch_size,
num_classes), and the one rule for "latest" is the store's: the last line of a key wins (`MeasurementStore.latest`).
num_classes is in the key because the head changes params (and, a little, latency): a 10-class run must not reuse
a 1000-class record. machine_id is the host's, or the device's when a backend times on a device of its own (a
phone behind the host), so two devices behind one host never share records.

Beside it, `int8_accuracy.jsonl` (`Int8Record`: a trained run's fp32 and int8 top-1 on one int8 runtime) and
`breakdown.jsonl` (`Breakdown`: latency by operator class) are read and written through `Int8Store` and
`BreakdownStore`, each with its one rule for "latest" (the last line of its key wins) like the measurements'.
A record keeps the settings it was timed under (`Protocol`); lines written before that have none.
`one_machine_per_backend` is the rule both boards use to keep one machine's figures per latency column.

Appends write one whole line with a single `write` on an O_APPEND descriptor, then flush and fsync, so
concurrent writers never interleave within a line and a crash leaves at most a torn last line. Readers skip any
line that is not a complete JSON object; a writer that finds the file not ending in a newline starts its record
on a fresh line, so a torn fragment never swallows the next record.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zoo.results import append_jsonl, read_jsonl

MEASUREMENTS_FILE = "measurements.jsonl"  # beside results.jsonl in a matrix's store_dir
INT8_FILE = "int8_accuracy.jsonl"
BREAKDOWN_FILE = "breakdown.jsonl"
PAPER_FLOPS_BACKEND = "flops"  # records of params/GMACs at the paper's resolution with 1000 classes (no timing)

__all__ = ["Breakdown", "BreakdownStore", "Int8Record", "Int8Store", "Measurement", "MeasurementKey", "MeasurementStore",
           "Protocol", "STATUSES", "one_machine_per_backend"]

STATUSES = ("ok", "skipped", "failed")
_KEY_FIELDS = ("model", "resolution", "backend", "machine_id")  # a line without them is not a measurement
# Fields added after the store's first format: left out of a line while None, so old lines write back unchanged.
_OPTIONAL_FIELDS = frozenset({"median_of_means_ms", "p90_ms", "trimmed_mean_ms", "round_means_ms", "peak_memory_mb",
                              "memory_kind", "file_bytes", "seconds", "protocol"})
_TUPLE_FIELDS = ("round_medians_ms", "round_means_ms")


def _known(cls: type, record: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the fields `cls` knows, the rest) of a stored line; `extra` and `position` are never read from a line."""
    known = {f.name for f in dataclasses.fields(cls)} - {"extra", "position"}
    return ({k: v for k, v in record.items() if k in known}, {k: v for k, v in record.items() if k not in known})


@dataclass(frozen=True)
class Protocol:
    """How a record was timed and checked, stored with it: the timing rounds (`zoo.measure.latency.TimingConfig`'s
    fields), the interleaving group, the quiet check's policy (None: off) and the export checks' settings."""

    rounds: int
    min_round_s: float
    warmup_calls: int
    min_samples_per_round: int
    runs_per_round: int | None = None
    max_round_s: float | None = None
    group_size: int | None = None  # models timed interleaved together (None: every model of the call)
    quiet: dict[str, float] | None = None  # `zoo.measure.quiet.QuietPolicy`'s fields; None: timed without the check
    fp32_rtol: float | None = None  # fp32 parity: max abs error within this share of the logits' scale
    int8_check_images: int | None = None  # int8: top-1 agreement with fp32 on this many (non-calibration) images

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Protocol:
        return cls(**_known(cls, record)[0])


@dataclass(frozen=True)
class MeasurementKey:
    model: str
    resolution: int
    backend: str
    machine_id: str
    batch_size: int = 1
    num_classes: int = 1000

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> MeasurementKey:
        return cls(
            model=record["model"],
            resolution=int(record["resolution"]),
            backend=record["backend"],
            machine_id=record["machine_id"],
            batch_size=int(record.get("batch_size", 1)),
            num_classes=int(record.get("num_classes", 1000)),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Measurement:
    """One line of `measurements.jsonl`: params, GMACs and latency of one model on one backend.

    Field names are the JSON's. Latency figures are None unless the backend timed the model (status "ok");
    params/GMACs are None when the model failed to build or count. `deployed` marks a record measured at the
    model's deployment resolution by the matrix's deploy pass (`zoo.measure.runs`): the board learns each
    architecture's deployment resolution from it. Lines written before the flag existed read as False.
    """

    model: str
    resolution: int
    backend: str
    machine_id: str
    batch_size: int = 1
    num_classes: int = 1000
    arch: str | None = None  # architecture fingerprint (`zoo.measure.suite.architecture_fingerprint`)
    params: int | None = None
    params_1k: int | None = None  # with a 1000-class head, for comparison with the papers
    gmacs: float | None = None
    status: str = "ok"
    reason: str | None = None
    unit: str = "ms"
    median_ms: float | None = None
    iqr_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    runs: int | None = None
    rounds: int | None = None
    round_medians_ms: tuple[float, ...] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] | None = None  # `zoo.measure.machine.MachineInfo.as_dict()` of the host
    versions: dict[str, str | None] | None = None
    timestamp: str | None = None
    deployed: bool = False
    # Fields of the architecture board (issue 18); written only when set, so older lines round-trip unchanged.
    median_of_means_ms: float | None = None  # median of the round means (MobileNetV4's statistic)
    p90_ms: float | None = None  # 90th percentile of every sample (MLPerf Mobile's), linear interpolation
    trimmed_mean_ms: float | None = None  # mean of the middle 80 % of every sample (ExecuTorch's minibench)
    round_means_ms: tuple[float, ...] | None = None
    peak_memory_mb: float | None = None  # memory of the runtime running the model, of kind `memory_kind`
    memory_kind: str | None = None  # "planned arena" (the runtime's memory plan) or "peak RSS increase"
    file_bytes: int | None = None  # size of the exported file the runtime loads
    # Where the time went, seconds: "export" (0 when cached), "load_and_check", "timing_group" (the interleaved
    # rounds of the model's group, "group_size" models), "export_and_load" (a backend without an export cache).
    seconds: dict[str, float] | None = None
    protocol: Protocol | None = None  # the settings it was timed under (None: a line written before they were kept)
    # Fields of the line this version does not know: kept, so a record read and written again loses nothing.
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    # Order of the record in its store (set on reading, never written): "newer" means a larger position.
    position: int = field(default=-1, compare=False, repr=False)

    @property
    def key(self) -> MeasurementKey:
        return MeasurementKey(self.model, self.resolution, self.backend, self.machine_id, self.batch_size,
                              self.num_classes)

    @property
    def timed(self) -> bool:
        """A latency figure to show: the backend timed the model."""
        return self.status == "ok" and self.median_ms is not None

    @classmethod
    def from_dict(cls, record: Mapping[str, Any], position: int = -1) -> Measurement:
        """A stored line (every version's: fields it lacks take their defaults)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "position"}
        values = {k: v for k, v in record.items() if k in known}
        values.update(MeasurementKey.of(record).as_dict())
        for name in _TUPLE_FIELDS:
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        values["details"] = values.get("details") or {}
        values["deployed"] = bool(values.get("deployed", False))
        if isinstance(values.get("protocol"), Mapping):
            values["protocol"] = Protocol.from_dict(values["protocol"])
        return cls(**values, extra={k: v for k, v in record.items() if k not in known}, position=position)

    def to_dict(self) -> dict[str, Any]:
        """The JSON line: the same field names (and order) the store has always had, plus `deployed`, plus the
        board's fields that are set."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("extra", "position")
               and not (f.name in _OPTIONAL_FIELDS and getattr(self, f.name) is None)}
        for name in _TUPLE_FIELDS:
            if out.get(name) is not None:
                out[name] = list(out[name])
        if self.protocol is not None:
            out["protocol"] = asdict(self.protocol)
        return {**out, **self.extra}

    @property
    def latency_ms(self) -> float | None:
        """The board's headline latency: the median of round means where recorded, else (older lines) the median
        of round medians."""
        return self.median_of_means_ms if self.median_of_means_ms is not None else self.median_ms


class MeasurementStore:
    """A JSON-lines file of `Measurement` records at `path` (created on first append)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __iter__(self) -> Iterator[Measurement]:
        """Every complete record in file order; torn or corrupt lines, and lines without a key, are skipped."""
        for position, record in enumerate(read_jsonl(self.path)):
            if isinstance(record, dict) and set(_KEY_FIELDS) <= record.keys():
                yield Measurement.from_dict(record, position)

    def records(self) -> list[Measurement]:
        return list(self)

    def latest(self) -> dict[MeasurementKey, Measurement]:
        """The last record of each key: the one rule for "latest". Keys come in the order they first appear in
        the file (so tables built from it keep their row order when a model is measured again)."""
        return {record.key: record for record in self}

    def get(self, key: MeasurementKey) -> Measurement | None:
        return self.latest().get(key)

    def append(self, record: Measurement) -> None:
        """Append one record atomically (single write of one line, then fsync)."""
        if record.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {record.status!r}")
        append_jsonl(self.path, record.to_dict(), allow_nan=False)


def one_machine_per_backend(records: Iterable[Measurement]) -> list[Measurement]:
    """The records of one machine per backend: the machine (or device) whose record of that backend is the newest
    (largest store position) of `records`. A latency column compares models, so older machines' figures stay in
    the store but are not mixed into it. Both boards (trained and architecture) choose their columns this way."""
    records = list(records)
    newest: dict[str, Measurement] = {}
    for record in records:
        if record.backend not in newest or record.position > newest[record.backend].position:
            newest[record.backend] = record
    return [r for r in records if r.machine_id == newest[r.backend].machine_id]


def _write(record: Any) -> dict[str, Any]:
    """A typed line as JSON: its fields that are set (in field order), then the fields it kept unread."""
    out = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)
           if f.name not in ("extra", "position") and getattr(record, f.name) is not None}
    return {**out, **record.extra}


@dataclass(frozen=True)
class Int8Record:
    """One line of `int8_accuracy.jsonl`: a trained run's fp32 and int8 top-1 (%) on one int8 runtime
    (`zoo.measure.int8_accuracy`); a run skipped for want of a checkpoint has no runtime and no figures."""

    model: str
    run_id: str | None = None
    recipe: str | None = None
    sampler: str | None = None
    seed: int | None = None
    resolution: int | None = None
    runtime: str | None = None
    status: str = "ok"  # "ok", "skipped" or "failed"
    fp32_top1: float | None = None
    int8_top1: float | None = None
    images: int | None = None
    calibration_images: int | None = None
    reason: str | None = None
    drop: float | None = None  # fp32 top-1 minus int8 top-1, in points
    versions: dict[str, str | None] | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    position: int = field(default=-1, compare=False, repr=False)

    @property
    def key(self) -> tuple[str, str | None, str | None]:
        """(model, run, runtime): one evaluation; its last line is the latest."""
        return self.model, self.run_id, self.runtime

    @classmethod
    def from_dict(cls, record: Mapping[str, Any], position: int = -1) -> Int8Record:
        known, extra = _known(cls, record)
        return cls(**known, extra=extra, position=position)

    def to_dict(self) -> dict[str, Any]:
        return _write(self)


class Int8Store:
    """`int8_accuracy.jsonl`: one `Int8Record` per (trained run, int8 runtime) evaluation, as `zoo.measure.runs`
    writes them."""

    def __init__(self, store_dir: str | os.PathLike[str]) -> None:
        self.path = Path(store_dir) / INT8_FILE

    def records(self) -> list[Int8Record]:
        """Every complete record, in file order."""
        return [Int8Record.from_dict(row, position) for position, row in enumerate(read_jsonl(self.path))
                if isinstance(row, dict) and "model" in row]

    def latest(self) -> list[Int8Record]:
        """The last record of each (model, run, runtime): the one rule for "latest"; in the order keys first
        appear, so a forced re-evaluation replaces its row instead of adding one."""
        return list({record.key: record for record in self.records()}.values())

    def evaluated(self) -> set[tuple[str | None, str | None]]:
        """(run_id, runtime) of every evaluation whose latest record succeeded."""
        return {(r.run_id, r.runtime) for r in self.latest() if r.status == "ok"}

    def append(self, record: Int8Record) -> None:
        append_jsonl(self.path, record.to_dict())


@dataclass(frozen=True)
class Breakdown:
    """One line of `breakdown.jsonl`: latency by operator class from ONNX Runtime's profiler (ms per inference)
    beside GMACs by class, of one model at one resolution (`zoo.measure.breakdown`); or why profiling failed."""

    model: str
    resolution: int
    runtime: str | None = None
    ms_by_class: dict[str, float] = field(default_factory=dict)
    total_kernel_ms: float | None = None
    gmacs_by_class: dict[str, float] = field(default_factory=dict)
    runs: int | None = None  # inferences profiled (lines before it was kept have none)
    status: str = "ok"
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    position: int = field(default=-1, compare=False, repr=False)

    @property
    def key(self) -> tuple[str, int]:
        return self.model, self.resolution

    @property
    def profiled(self) -> bool:
        return bool(self.ms_by_class)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any], position: int = -1) -> Breakdown:
        known, extra = _known(cls, record)
        known.update(ms_by_class=known.get("ms_by_class") or {}, gmacs_by_class=known.get("gmacs_by_class") or {})
        return cls(**known, extra=extra, position=position)

    def to_dict(self) -> dict[str, Any]:
        out = _write(self)
        if not self.profiled:  # a failure's line: no empty profile written
            out = {k: v for k, v in out.items() if k not in ("ms_by_class", "gmacs_by_class")}
        if self.status == "ok":
            out.pop("status", None)  # profiles have never written a status
        return out


class BreakdownStore:
    """`breakdown.jsonl`: one `Breakdown` (or a failure) per model and resolution."""

    def __init__(self, store_dir: str | os.PathLike[str]) -> None:
        self.path = Path(store_dir) / BREAKDOWN_FILE

    def records(self) -> list[Breakdown]:
        """Every complete record, in file order."""
        return [Breakdown.from_dict(row, position) for position, row in enumerate(read_jsonl(self.path))
                if isinstance(row, dict) and {"model", "resolution"} <= row.keys()]

    def latest(self) -> list[Breakdown]:
        """The last record of each (model, resolution): the one rule for "latest"; in the order keys first appear,
        so re-profiling (`force`) replaces a row instead of adding one."""
        return list({record.key: record for record in self.records()}.values())

    def profiled(self) -> list[Breakdown]:
        """The latest records that hold a profile (failures left out)."""
        return [record for record in self.latest() if record.profiled]

    def measured(self) -> set[tuple[str, int]]:
        """(model, resolution) of every latest record, failed ones included (a failure is not retried)."""
        return {record.key for record in self.latest()}

    def append(self, record: Breakdown) -> None:
        append_jsonl(self.path, record.to_dict())
