"""Peak memory of a runtime while it loads and runs a model: the runner process's peak RSS increase.

Linux keeps a process's resident high-water mark (`VmHWM` in /proc/self/status) and resets it to the current RSS
when "5" is written to /proc/self/clear_refs. `PeakRss` resets it, reads the RSS, runs the block (open the export,
check it, warm it up) and reads the high-water mark: the increase is what loading and running the model cost the
process at its peak. Where the reset is not allowed (another OS, a locked-down /proc), the figure is None and no
memory is recorded, rather than a process-lifetime peak that belongs to whatever ran before.

The export itself runs before the block (or not at all, from the export cache), so the exporter's memory is not
counted. Allocator caches can make a later model reuse pages an earlier one freed: read the figure as a lower
bound of what a fresh process would need, comparable across models of one run.
"""
from __future__ import annotations

from pathlib import Path
from types import TracebackType

__all__ = ["PeakRss", "RSS_KIND", "ARENA_KIND"]

RSS_KIND = "peak RSS increase"
ARENA_KIND = "planned arena"
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text(encoding="ascii").splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5", encoding="ascii")
        return True
    except OSError:
        return False


class PeakRss:
    """`with PeakRss() as rss: ...` then `rss.increase_mb`: the block's peak RSS above the RSS it started at."""

    def __init__(self) -> None:
        self.increase_mb: float | None = None
        self._before_kb: int | None = None

    def __enter__(self) -> PeakRss:
        self._before_kb = _status_kb("VmRSS") if _reset_peak() else None
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        peak = _status_kb("VmHWM")
        if self._before_kb is not None and peak is not None:
            self.increase_mb = round(max(0, peak - self._before_kb) / 1024, 2)
