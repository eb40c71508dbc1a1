"""Checkpoints that survive a crash mid-write, a damaged copy and a full disk.

Writing: the new state goes to `checkpoint.pt.tmp`, is fsynced and read back (every zip entry's CRC, then
`torch.load`), and only then does the previous checkpoint step aside to `checkpoint.prev.pt` and the new one take
its name. A kill at any moment leaves at least one verified checkpoint; a write that fails (ENOSPC, EIO) leaves the
previous one untouched, removes the partial file and raises `CheckpointWriteError` naming the file.

Reading (`load_latest`): the newest good file wins, then the previous one, then none (start over). A damaged file
(truncated, zero-length, random bytes, a flipped byte in the tensors, missing keys) is moved aside to
`<name>.damaged` with a warning naming it, so it is never rotated into `checkpoint.prev.pt` later. Files are read
back with weights_only=True.
"""
from __future__ import annotations

import errno
import os
import warnings
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

PREVIOUS_NAME = "checkpoint.prev.pt"
Validator = Callable[[dict[str, Any]], None]  # raises ValueError when a loaded state cannot be resumed from


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (the previous one is intact); the message names the file and why."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


@dataclass(frozen=True)
class LoadedCheckpoint:
    state: dict[str, Any]
    path: Path  # the file it came from (the newest, or the previous one after a fallback)


def previous_path(path: Path) -> Path:
    return path.with_name(PREVIOUS_NAME) if path.name == "checkpoint.pt" else path.with_suffix(".prev" + path.suffix)


def save_checkpoint(path: Path, state: dict[str, Any], keep_previous: bool = True) -> None:
    """Write `state` to `path`, keeping the file it replaces as `previous_path(path)` until the new one verified;
    `keep_previous=False` (a finished run's last checkpoint, which nothing resumes from) removes it after."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        read_checkpoint(tmp)  # a write that does not read back is not a checkpoint
    except Exception as err:
        tmp.unlink(missing_ok=True)  # a partial file on a full disk takes the space the next attempt needs
        raise CheckpointWriteError(getattr(err, "errno", None) or errno.EIO, _write_failure(err, path)) from err
    if path.exists():
        os.replace(path, previous_path(path))
    os.replace(tmp, path)  # between the two renames only the previous checkpoint exists: load_latest takes it
    _fsync_dir(path.parent)
    if not keep_previous:
        previous_path(path).unlink(missing_ok=True)


def _write_failure(err: Exception, path: Path) -> str:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return f"no space left on device while writing {path}"
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror.lower()} while writing {path}"
    return f"checkpoint {path} did not read back after writing ({type(err).__name__}: {err})"


def _fsync_dir(folder: Path) -> None:
    """Make the renames durable (a power cut must not bring back the old names)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the renames are still atomic
    finally:
        os.close(fd)


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The state in `path`, after checking every zip entry's CRC (torch.load alone reads flipped tensor bytes
    without a word). Raises on any damage."""
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise ValueError(f"entry {bad} fails its CRC check")
    state = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"holds a {type(state).__name__}, not a checkpoint mapping")
    return state


def load_latest(path: Path, validate: Validator | None = None,
                device: torch.device | str = "cpu") -> LoadedCheckpoint | None:
    """The newest checkpoint that reads back and passes `validate` (`path`, then `previous_path(path)`), or None
    when neither does. Each damaged one is moved aside with a warning naming it and what is used instead."""
    candidates = [p for p in (path, previous_path(path)) if p.exists()]
    for i, candidate in enumerate(candidates):
        try:
            state = read_checkpoint(candidate, device)
            if validate is not None:
                validate(state)
        except Exception as err:
            _set_aside(candidate, err, _fallback_text(candidates[i + 1:]))
            continue
        return LoadedCheckpoint(state, candidate)
    return None


def _fallback_text(rest: Iterable[Path]) -> str:
    rest = list(rest)
    return f"resuming from the previous checkpoint {rest[0]}" if rest else "starting the run over"


def _set_aside(path: Path, err: Exception, instead: str) -> None:
    damaged = path.with_name(path.name + ".damaged")
    reason = "zero-length file" if _size(path) == 0 else f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    try:
        os.replace(path, damaged)
        kept = f"; kept as {damaged}"
    except OSError:
        kept = ""
    warnings.warn(f"checkpoint {path} is damaged ({reason}){kept}; {instead}", RuntimeWarning, stacklevel=3)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1
