"""The measurements store: one JSON object per line, appended atomically, last record per key wins.

Key: (model, resolution, backend, machine_id, batch_size, num_classes). num_classes is in the key as well
because the head changes params (and, a little, latency): a 10-class run must not reuse a 1000-class record.

Appends write one whole line with a single `write` on an O_APPEND descriptor, then flush and fsync, so
concurrent writers never interleave within a line and a crash leaves at most a torn last line. Readers skip any
line that is not a complete JSON object; a writer that finds the file not ending in a newline starts its record
on a fresh line, so a torn fragment never swallows the next record.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zoo.results import append_jsonl, read_jsonl

MEASUREMENTS_FILE = "measurements.jsonl"  # beside results.jsonl in a matrix's store_dir
PAPER_FLOPS_BACKEND = "flops"  # records of params/GMACs at the paper's resolution with 1000 classes (no timing)

__all__ = ["MeasurementKey", "MeasurementStore", "STATUSES"]

STATUSES = ("ok", "skipped", "failed")


@dataclass(frozen=True)
class MeasurementKey:
    model: str
    resolution: int
    backend: str
    machine_id: str
    batch_size: int = 1
    num_classes: int = 1000

    @classmethod
    def of(cls, record: dict[str, Any]) -> MeasurementKey:
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


class MeasurementStore:
    """A JSON-lines file of measurement records at `path` (created on first append)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every complete record in file order; torn or corrupt lines are skipped."""
        for record in read_jsonl(self.path):
            if isinstance(record, dict) and {"model", "resolution", "backend", "machine_id"} <= record.keys():
                yield record

    def records(self) -> list[dict[str, Any]]:
        return list(self)

    def latest(self) -> dict[MeasurementKey, dict[str, Any]]:
        """The last record of each key."""
        return {MeasurementKey.of(record): record for record in self}

    def get(self, key: MeasurementKey) -> dict[str, Any] | None:
        return self.latest().get(key)

    def append(self, record: dict[str, Any]) -> None:
        """Append one record atomically (single write of one line, then fsync)."""
        MeasurementKey.of(record)  # refuse a record without its key fields
        if record.get("status") not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {record.get('status')!r}")
        append_jsonl(self.path, record, allow_nan=False)
