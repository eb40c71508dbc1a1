"""The measurement stores: one JSON object per line, appended atomically; the only module that parses their lines.

`measurements.jsonl` holds `Measurement` records. Key: (model, resolution, backend, machine_id, batch_size,
num_classes), and the one rule for "latest" is the store's: the last line of a key wins (`MeasurementStore.latest`).
num_classes is in the key because the head changes params (and, a little, latency): a 10-class run must not reuse
a 1000-class record. machine_id is the host's, or the device's when a backend times on a device of its own (a
phone behind the host), so two devices behind one host never share records.

Beside it, `int8_accuracy.jsonl` and `breakdown.jsonl` (written after training, see `zoo.measure.runs`) are read
and written through `Int8Store` and `BreakdownStore`.

Appends write one whole line with a single `write` on an O_APPEND descriptor, then flush and fsync, so
concurrent writers never interleave within a line and a crash leaves at most a torn last line. Readers skip any
line that is not a complete JSON object; a writer that finds the file not ending in a newline starts its record
on a fresh line, so a torn fragment never swallows the next record.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zoo.results import append_jsonl, read_jsonl

MEASUREMENTS_FILE = "measurements.jsonl"  # beside results.jsonl in a matrix's store_dir
INT8_FILE = "int8_accuracy.jsonl"
BREAKDOWN_FILE = "breakdown.jsonl"
PAPER_FLOPS_BACKEND = "flops"  # records of params/GMACs at the paper's resolution with 1000 classes (no timing)

__all__ = ["BreakdownStore", "Int8Store", "Measurement", "MeasurementKey", "MeasurementStore", "STATUSES"]

STATUSES = ("ok", "skipped", "failed")
_KEY_FIELDS = ("model", "resolution", "backend", "machine_id")  # a line without them is not a measurement
# Fields added after the store's first format: left out of a line while None, so old lines write back unchanged.
_OPTIONAL_FIELDS = frozenset({"median_of_means_ms", "p90_ms", "trimmed_mean_ms", "round_means_ms", "peak_memory_mb",
                              "memory_kind", "file_bytes", "seconds"})
_TUPLE_FIELDS = ("round_medians_ms", "round_means_ms")


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
        return cls(**values, extra={k: v for k, v in record.items() if k not in known}, position=position)

    def to_dict(self) -> dict[str, Any]:
        """The JSON line: the same field names (and order) the store has always had, plus `deployed`, plus the
        board's fields that are set."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("extra", "position")
               and not (f.name in _OPTIONAL_FIELDS and getattr(self, f.name) is None)}
        for name in _TUPLE_FIELDS:
            if out.get(name) is not None:
                out[name] = list(out[name])
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


class Int8Store:
    """`int8_accuracy.jsonl`: one row per (trained run, int8 runtime) evaluation, as `zoo.measure.runs` writes it
    (`zoo.measure.int8_accuracy.Int8Accuracy.as_dict()` plus the run's identity; a skipped run has no runtime)."""

    def __init__(self, store_dir: str | os.PathLike[str]) -> None:
        self.path = Path(store_dir) / INT8_FILE

    def rows(self) -> list[dict[str, Any]]:
        """Every complete row, in file order."""
        return [row for row in read_jsonl(self.path) if isinstance(row, dict) and "model" in row]

    def evaluated(self) -> set[tuple[str | None, str | None]]:
        """(run_id, runtime) of every successful evaluation."""
        return {(row.get("run_id"), row.get("runtime")) for row in self.rows() if row.get("status") == "ok"}

    def append(self, row: Mapping[str, Any]) -> None:
        append_jsonl(self.path, dict(row))


class BreakdownStore:
    """`breakdown.jsonl`: one `zoo.measure.breakdown.op_class_breakdown` record (or a failure) per model and
    resolution."""

    def __init__(self, store_dir: str | os.PathLike[str]) -> None:
        self.path = Path(store_dir) / BREAKDOWN_FILE

    def rows(self) -> list[dict[str, Any]]:
        """Every complete row, in file order."""
        return [row for row in read_jsonl(self.path) if isinstance(row, dict) and {"model", "resolution"} <= row.keys()]

    def profiled(self) -> list[dict[str, Any]]:
        """The rows with a profile (failures left out), in file order."""
        return [row for row in self.rows() if row.get("ms_by_class")]

    def measured(self) -> set[tuple[str, int]]:
        """(model, resolution) of every row, failed ones included (as before: a failure is not retried)."""
        return {(row["model"], row["resolution"]) for row in self.rows()}

    def append(self, row: Mapping[str, Any]) -> None:
        append_jsonl(self.path, dict(row))
