"""Board files written whole or not at all: two `zoo.leaderboard` runs on one store at once, or one killed mid-write,
never leave a half-written README or PNG behind.

Each file is written to a unique temporary file in the same folder (so the rename stays on one filesystem), flushed
to disk, then renamed over the old one: a reader sees the old file or the new one. Two writers from the same
stores write the same bytes, so whichever rename lands last, the board is whole.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def _replace_with(path: Path, write: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a board is for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    return _replace_with(path, lambda handle: handle.write(text.encode()))


def savefig_atomic(fig: Any, path: Path, **options: Any) -> Path:
    """`fig.savefig` to `path`, atomically (the format comes from the path's suffix, as savefig would pick)."""
    fmt = Path(path).suffix.lstrip(".") or None
    return _replace_with(path, lambda handle: fig.savefig(handle, format=fmt, **options))
