"""Read wandb's run files (`run-<id>.wandb`) without a server: config, history, summary, tags, files, artifacts.

wandb 0.31 writes an offline run as one append-only transaction log and nothing else (no config.yaml, no summary
json), and ships no Python reader for it. The log is LevelDB-log framed, as written by wandb-core:

    file   = header(7) blocks...        header = b":W&B" + magic 0xBEE1 (u16 little-endian) + version 0 (u8)
    block  = 32 KiB of chunks; the file header sits inside the first block
    chunk  = crc32(u32 LE) length(u16 LE) type(u8) data[length]
    type   = 1 FULL | 2 FIRST | 3 MIDDLE | 4 LAST   (a record too long for a block is split FIRST..MIDDLE..LAST)
    crc    = zlib (IEEE) crc32 over the type byte then the data: not LevelDB's masked crc32c

A block tail shorter than a chunk header is zero padding. Each record is a `wandb_internal_pb2.Record`, decoded
here with wandb's own protobuf classes. A run killed mid-write leaves a torn tail: reading stops there with
`OfflineRun.torn` set, and everything before it is returned. A chunk with a bad checksum makes the reader skip to
the next block (LevelDB's recovery rule), counted in `OfflineRun.skipped_chunks`.
"""
from __future__ import annotations

import json
import re
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from wandb.proto import wandb_internal_pb2 as pb

FILE_HEADER = struct.Struct("<4sHB")
FILE_IDENT = b":W&B"
FILE_MAGIC = 0xBEE1
FILE_VERSION = 0
BLOCK_SIZE = 32 * 1024
CHUNK_HEADER = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
# Seeding the crc with the type byte once per type saves hashing it again for every chunk.
_TYPE_CRC = {t: zlib.crc32(bytes([t])) for t in (FULL, FIRST, MIDDLE, LAST)}


class WandbFileError(ValueError):
    """The file is not a wandb transaction log (bad header); a torn tail is not an error."""


@dataclass
class ScanState:
    """What the framing layer saw besides records."""

    torn: bool = False  # the file ends inside a chunk or a split record (writer killed mid-write)
    skipped_chunks: int = 0  # chunks dropped for a bad checksum or an impossible type/length


def _check_file_header(head: bytes, source: str) -> None:
    if len(head) < FILE_HEADER.size:
        raise WandbFileError(f"{source}: too short for a wandb file header ({len(head)} bytes)")
    ident, magic, version = FILE_HEADER.unpack(head[: FILE_HEADER.size])
    if ident != FILE_IDENT or magic != FILE_MAGIC:
        raise WandbFileError(f"{source}: not a wandb run file (header {head[:7]!r})")
    if version != FILE_VERSION:
        raise WandbFileError(f"{source}: unsupported wandb file version {version} (this reader knows {FILE_VERSION})")


def iter_record_bytes(stream: BinaryIO, source: str = "<stream>", state: ScanState | None = None) -> Iterator[bytes]:
    """Yield each record's bytes from a wandb transaction log, reassembling records split across blocks."""
    state = state if state is not None else ScanState()
    data = stream.read()
    _check_file_header(data, source)
    pos = FILE_HEADER.size
    pending: list[bytes] | None = None  # fragments of a FIRST..LAST record in progress
    while pos < len(data):
        room = BLOCK_SIZE - pos % BLOCK_SIZE
        if room < CHUNK_HEADER.size:  # zero padding at a block's end
            pos += room
            continue
        if pos + CHUNK_HEADER.size > len(data):
            state.torn = True
            return
        crc, length, kind = CHUNK_HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0 and crc == 0:  # a zeroed (preallocated/padded) block remainder
            pos += room
            continue
        end = pos + CHUNK_HEADER.size + length
        if kind not in _TYPE_CRC or length > room - CHUNK_HEADER.size:
            state.skipped_chunks += 1
            pending = None
            pos += room
            continue
        if end > len(data):
            state.torn = True
            return
        payload = data[pos + CHUNK_HEADER.size : end]
        if zlib.crc32(payload, _TYPE_CRC[kind]) != crc:
            # The last chunk of a file being written can be half flushed; elsewhere it is corruption.
            if end == len(data):
                state.torn = True
                return
            state.skipped_chunks += 1
            pending = None
            pos += room
            continue
        pos = end
        if kind == FULL:
            if pending is not None:  # a split record never finished: drop it, as LevelDB does
                state.skipped_chunks += 1
            pending = None
            yield payload
        elif kind == FIRST:
            if pending is not None:
                state.skipped_chunks += 1
            pending = [payload]
        elif pending is None:  # MIDDLE/LAST without a FIRST (we resynced into the middle of a record)
            state.skipped_chunks += 1
        elif kind == MIDDLE:
            pending.append(payload)
        else:
            pending.append(payload)
            yield b"".join(pending)
            pending = None
    if pending is not None:
        state.torn = True


def iter_records(path: str | Path, state: ScanState | None = None) -> Iterator[pb.Record]:
    """Yield the decoded `Record` protos of one `.wandb` file, in write order."""
    path = Path(path)
    state = state if state is not None else ScanState()
    with path.open("rb") as stream:
        for blob in iter_record_bytes(stream, str(path), state):
            record = pb.Record()
            try:
                record.ParseFromString(blob)
            except Exception:  # protobuf's DecodeError; a checksummed record should never get here
                state.skipped_chunks += 1
                continue
            yield record


@dataclass(frozen=True)
class ArtifactInfo:
    name: str
    type: str
    digest: str
    paths: tuple[str, ...]  # entry paths inside the artifact (a logged table is `<key>.table.json`)


@dataclass
class OfflineRun:
    """Everything a run file holds that the harness cares about, with values decoded from their JSON form."""

    path: Path  # the .wandb file
    run_id: str = ""
    project: str = ""
    entity: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    notes: str = ""
    sweep_id: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # without wandb's own `_wandb` entry
    history: list[dict[str, Any]] = field(default_factory=list)  # one dict per committed step, with `_step`
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # paths relative to the run's files/ folder
    artifacts: list[ArtifactInfo] = field(default_factory=list)
    start_time: float | None = None  # seconds since the epoch
    exit_code: int | None = None  # None: no exit record (still running, killed, or torn)
    runtime_s: float | None = None
    torn: bool = False
    skipped_chunks: int = 0

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    @property
    def finished(self) -> bool:
        return self.exit_code is not None

    def table(self, key: str) -> tuple[list[str], list[list[Any]]]:
        """Columns and rows of a table logged under `key` (from the media file the summary points to)."""
        entry = self.summary.get(key)
        if not isinstance(entry, dict) or "path" not in entry:
            raise KeyError(f"{self.path}: no table logged under {key!r}")
        blob = json.loads((self.run_dir / "files" / entry["path"]).read_text())
        return list(blob["columns"]), [list(row) for row in blob["data"]]


def _decode_json(text: str) -> Any:
    # wandb encodes non-finite floats as bare NaN/Infinity, which Python's json accepts as-is.
    return json.loads(text) if text else None


def _history_value(item: pb.HistoryItem) -> Any:
    if item.value_json:
        return _decode_json(item.value_json)
    kind = item.WhichOneof("value")
    if kind is None or kind == "none":
        return None
    if kind == "json":
        return _decode_json(item.json)
    return getattr(item, kind)


def _key_path(item: Any) -> list[str]:
    return list(item.nested_key) if item.nested_key else [item.key]


def _set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    node = target
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value


def _remove_path(target: dict[str, Any], path: list[str]) -> None:
    node: Any = target
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(path[-1], None)


def _apply_updates(target: dict[str, Any], updates: Any, removes: Any) -> None:
    for item in updates:
        _set_path(target, _key_path(item), _decode_json(item.value_json))
    for item in removes:
        _remove_path(target, _key_path(item))


def _apply_run_record(run: OfflineRun, record: pb.RunRecord) -> None:
    # The first run record carries everything; later ones (renames, tag edits) only what changed.
    for attr, proto_field in (
        ("run_id", "run_id"),
        ("project", "project"),
        ("entity", "entity"),
        ("name", "display_name"),
        ("group", "run_group"),
        ("job_type", "job_type"),
        ("notes", "notes"),
        ("sweep_id", "sweep_id"),
    ):
        value = getattr(record, proto_field)
        if value:
            setattr(run, attr, value)
    if record.tags:
        run.tags = list(record.tags)
    _apply_updates(run.config, record.config.update, record.config.remove)
    _apply_updates(run.summary, record.summary.update, record.summary.remove)
    if record.HasField("start_time"):
        run.start_time = record.start_time.seconds + record.start_time.nanos / 1e9


def resolve_run_file(path_or_run_dir: str | Path) -> Path:
    """A `.wandb` file as given, or the single `run-*.wandb` inside a run directory."""
    path = Path(path_or_run_dir)
    if path.is_dir():
        found = sorted(path.glob("run-*.wandb"))
        if len(found) != 1:
            raise FileNotFoundError(f"{path}: expected one run-*.wandb file, found {len(found)}")
        return found[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such wandb run file or run directory")
    return path


def read_offline_run(path_or_run_dir: str | Path) -> OfflineRun:
    """Parse one run file (or run directory) into an `OfflineRun`; a torn tail is tolerated and flagged."""
    path = resolve_run_file(path_or_run_dir)
    run = OfflineRun(path=path)
    state = ScanState()
    for record in iter_records(path, state):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            _apply_run_record(run, record.run)
        elif kind == "config":
            _apply_updates(run.config, record.config.update, record.config.remove)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set_path(row, _key_path(item), _history_value(item))
            row.setdefault("_step", record.history.step.num)
            run.history.append(row)
        elif kind == "summary":
            _apply_updates(run.summary, record.summary.update, record.summary.remove)
        elif kind == "files":
            for item in record.files.files:
                if item.path not in run.files:
                    run.files.append(item.path)
        elif kind == "artifact":
            art = record.artifact
            paths = tuple(entry.path for entry in art.manifest.contents)
            run.artifacts.append(ArtifactInfo(name=art.name, type=art.type, digest=art.digest, paths=paths))
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
            run.runtime_s = float(record.exit.runtime)
    run.config.pop("_wandb", None)
    run.torn, run.skipped_chunks = state.torn, state.skipped_chunks
    return run


def wait_until_finished(path_or_run_dir: str | Path, timeout_s: float = 10.0, poll_s: float = 0.05) -> OfflineRun:
    """Read a run once its exit record is on disk (or the timeout passes; check `.finished`).

    `run.finish()` returns before wandb-core has flushed the transaction log: for a moment after it the file can
    hold only its header. Callers that read a run right after finishing it wait here.
    """
    path = resolve_run_file(path_or_run_dir)
    deadline = time.monotonic() + timeout_s
    last_size = -1
    while True:
        size = path.stat().st_size
        if size != last_size:  # parse only when something new arrived
            run = read_offline_run(path)
            if run.finished:
                return run
            last_size = size
        if time.monotonic() >= deadline:
            return run
        time.sleep(poll_s)


def find_offline_runs(wandb_dir: str | Path, include_online: bool = False) -> list[Path]:
    """Run directories (`offline-run-*`, plus `run-*` if asked) under WANDB_DIR or its `wandb/` folder, oldest first.

    Directory names start with the run's start time (YYYYMMDD_HHMMSS), so name order is time order. The
    `latest-run` symlink is skipped so no run is listed twice.
    """
    root = Path(wandb_dir)
    patterns = ["offline-run-*"] + (["run-*"] if include_online else [])
    found: dict[Path, Path] = {}
    for base in (root, root / "wandb"):
        if not base.is_dir():
            continue
        for pattern in patterns:
            for candidate in base.glob(pattern):
                if candidate.is_symlink() or not candidate.is_dir():
                    continue
                if any(candidate.glob("run-*.wandb")):
                    found[candidate.resolve()] = candidate
    return sorted(found.values(), key=lambda p: (_started(p.name), p.name))


def _started(dir_name: str) -> str:
    match = re.search(r"\d{8}_\d{6}", dir_name)
    return match.group(0) if match else ""
