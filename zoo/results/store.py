"""The results store: one JSON line per finished (or failed) run, appended atomically.

It is the source of truth for the leaderboard (W&B is a mirror). Each record is a single `write` of one line on a
file opened with O_APPEND, followed by fsync, so a kill at any moment leaves at most a torn last line, which readers
skip. The newest record of a run id wins, so a failed run that is retried later is replaced, not duplicated.
"""
from __future__ import annotations

import json
import os
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


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete records; lines that do not parse (a torn write) are skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class ResultsStore:
    """results.jsonl in a matrix's store_dir, read and written as `RunRecord`s."""

    def __init__(self, store_dir: str | Path):
        self.path = Path(store_dir) / RESULTS_FILE

    def append(self, record: RunRecord) -> None:
        append_jsonl(self.path, record.to_json())

    def records(self) -> list[RunRecord]:
        return [RunRecord.from_json(data) for data in read_jsonl(self.path) if "run_id" in data and "status" in data]

    def latest(self) -> dict[str, RunRecord]:
        """run_id -> its newest record; a finished/diverged record is never replaced by a later unfinished one (a
        worker that lost its claim after a stall records `interrupted` after the new owner has finished)."""
        newest: dict[str, RunRecord] = {}
        for record in self.records():
            held = newest.get(record.run_id)
            if held is None or not held.done or record.done:
                newest[record.run_id] = record
        return newest

    def done_ids(self) -> set[str]:
        return {rid for rid, rec in self.latest().items() if rec.status in TERMINAL}

    def finished(self) -> list[RunRecord]:
        return [r for r in self.latest().values() if r.status == "finished"]
