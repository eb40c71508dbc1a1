"""The results store: one JSON line per finished (or failed) run, appended atomically.

It is the source of truth for the leaderboard (W&B is a mirror). Each record is a single `write` of one line on a
file opened with O_APPEND, followed by fsync, so a kill at any moment leaves at most a torn last line, which readers
skip. The newest record of a run id wins, so a failed run that is retried later is replaced, not duplicated.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

TERMINAL = ("finished", "diverged")  # reruns skip these; "failed"/"interrupted" runs are tried again
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
    def __init__(self, store_dir: str | Path):
        self.path = Path(store_dir) / RESULTS_FILE

    def append(self, record: dict[str, Any]) -> None:
        if "run_id" not in record or "status" not in record:
            raise ValueError("a result record needs run_id and status")
        append_jsonl(self.path, record)

    def records(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path)

    def latest(self) -> dict[str, dict[str, Any]]:
        """run_id -> its newest record."""
        newest: dict[str, dict[str, Any]] = {}
        for record in self.records():
            newest[record["run_id"]] = record
        return newest

    def done_ids(self) -> set[str]:
        return {rid for rid, rec in self.latest().items() if rec.get("status") in TERMINAL}

    def finished(self) -> Iterable[dict[str, Any]]:
        return [r for r in self.latest().values() if r.get("status") == "finished"]
