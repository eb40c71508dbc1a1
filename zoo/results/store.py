"""The results store: one JSON line per finished (or failed) run, appended atomically, and its one reader.

It is the source of truth for the leaderboard (W&B is a mirror). Each record is a single `write` of one line on a
file opened with O_APPEND, followed by fsync, so a kill at any moment leaves at most a torn last line. Every reader
of results.jsonl (the plan, the claims, the matrix's progress, the measurement, the board) goes through
`ResultsStore`, so there is one rule for torn lines (`read_jsonl_since`) and one for "latest" (`newest`).
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from zoo.results.record import TERMINAL, RunRecord

RESULTS_FILE = "results.jsonl"


def append_jsonl(path: Path, record: dict[str, Any], *, allow_nan: bool = True) -> None:
    """Append one record as one line, durably; never leaves a partial line behind a complete one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True, default=str, allow_nan=allow_nan) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        # A torn line left by an earlier kill would glue onto ours: start on a fresh line.
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl_since(path: Path, offset: int = 0) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """(line start, record) of every complete record starting at or after byte `offset`, and where to read on from.

    The one rule for damaged lines: a line that does not parse as a JSON object (torn by a kill, or garbage in the
    middle of the file) is skipped, and said once per file per process (`warn_damaged`), naming the line numbers.
    A last line without its newline is either a write still in flight (it does not parse yet: it is left for the
    next read, which starts there, without a warning) or a complete record someone wrote without one (it parses,
    and is read)."""
    if not path.is_file():
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    entries: list[tuple[int, dict[str, Any]]] = []
    start = offset
    damaged: list[int] = []  # byte offsets of complete lines that are not records
    *lines, tail = data.split(b"\n")
    for line in lines:
        record = _parse(line)
        if record is not None:
            entries.append((start, record))
        elif line.strip():
            damaged.append(start)
        start += len(line) + 1
    if damaged:
        warn_damaged(path, damaged)
    record = _parse(tail)
    if record is not None:
        entries.append((start, record))
        start += len(tail)
    return entries, start


_WARNED: set[str] = set()  # files whose damaged lines were already said in this process


def warn_damaged(path: Path, offsets: list[int]) -> None:
    """One warning per file per process: a store read by every progress refresh must not repeat itself."""
    key = str(path.resolve())
    if key in _WARNED:
        return
    _WARNED.add(key)
    with open(path, "rb") as f:
        prefix = f.read(offsets[-1])
    numbers, seen, last = [], 0, 0
    for offset in offsets:  # line number = newlines before the line's start, plus one
        seen += prefix.count(b"\n", last, offset)
        last = offset
        numbers.append(seen + 1)
    shown = ", ".join(str(n) for n in numbers[:10]) + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")
    warnings.warn(f"{path}: skipped {len(numbers)} damaged line(s) that are not JSON records (line {shown}); the "
                  "records around them are read", RuntimeWarning, stacklevel=3)


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:  # blank, torn, or not UTF-8
        return None
    return record if isinstance(record, dict) else None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete records of a JSON-lines store, as plain data (torn lines skipped)."""
    return [record for _, record in read_jsonl_since(path)[0]]


def newest(records: Iterable[RunRecord], key: Callable[[RunRecord], str] = lambda r: r.run_id
           ) -> dict[str, RunRecord]:
    """The one rule for "latest": key -> its newest record, except that a finished/diverged record is never
    replaced by a later unfinished one (a worker that lost its claim after a stall records `interrupted` after the
    new owner has finished)."""
    held: dict[str, RunRecord] = {}
    for record in records:
        k = key(record)
        if k not in held or not held[k].done or record.done:
            held[k] = record
    return held


class ResultsStore:
    """results.jsonl in a matrix's store_dir, read and written as `RunRecord`s."""

    def __init__(self, store_dir: str | Path):
        self.path = Path(store_dir) / RESULTS_FILE

    def append(self, record: RunRecord) -> None:
        append_jsonl(self.path, record.to_json())

    def end_offset(self) -> int:
        """Where the next record will start: the records of an invocation are those at or after its start."""
        return self.path.stat().st_size if self.path.is_file() else 0

    def _entries(self, offset: int) -> tuple[list[tuple[int, RunRecord]], int]:
        entries, end = read_jsonl_since(self.path, offset)
        return [(start, RunRecord.from_json(data)) for start, data in entries
                if "run_id" in data and "status" in data], end

    def since(self, offset: int) -> tuple[list[RunRecord], int]:
        """The records appended at or after byte `offset`, and the offset to read on from (a progress view's)."""
        entries, end = self._entries(offset)
        return [record for _, record in entries], end

    def split(self, offset: int) -> tuple[list[RunRecord], list[RunRecord]]:
        """Every record, and those appended at or after byte `offset` (one read)."""
        entries = self._entries(0)[0]
        return [record for _, record in entries], [record for start, record in entries if start >= offset]

    def records(self) -> list[RunRecord]:
        return self.since(0)[0]

    def latest(self) -> dict[str, RunRecord]:
        """run_id -> its newest record, by the one rule (`newest`)."""
        return newest(self.records())

    def done_ids(self) -> set[str]:
        return {rid for rid, rec in self.latest().items() if rec.status in TERMINAL}

    def finished(self) -> list[RunRecord]:
        return [r for r in self.latest().values() if r.status == "finished"]
