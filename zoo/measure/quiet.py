"""The quiet check: time only while the machine runs at its usual speed, and say how fast it ran.

On a shared machine (a VM beside other tenants, a laptop changing clock) the same model's latency drifts by 5–20 %
over minutes, so a board timed today and re-timed in an hour disagree although nothing in the model changed.
Interleaving rounds (`zoo.measure.latency`) shares drift *within* a group; it cannot help *between* runs. So every
round cycle is bracketed by a **probe**: a fixed single-thread workload (a small matrix multiply, compute-bound,
and a pass over a buffer larger than L2, memory-bound; the two costs inference has), timed as the minimum of a few
repeats. Its reference is the fastest probe this machine has shown (the store's records carry it, so it survives
between runs). Before a cycle the gate waits, up to `max_wait_s`, until the probe is within `tolerance` of the
reference; after it, a probe more than `tolerance` slower means the machine got busy during the cycle, and the
cycle is discarded and timed again (at most `max_retries` extra cycles per group). Every record keeps the probes
of its accepted cycles (`probe_ms`), the reference, and how many cycles were thrown away, so a reader can tell a
board timed on a slow machine from one timed on a quiet one.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["QuietGate", "QuietPolicy", "probe_ms"]

_MATMUL_SIDE = 192  # ~7 MFLOP a product: about a millisecond on one core of a phone-class CPU
_MATMULS = 8
_BUFFER_FLOATS = 2 ** 21  # 8 MiB: larger than any L2, so the pass measures memory bandwidth too
_REPEATS = 3


@dataclass(frozen=True)
class QuietPolicy:
    tolerance: float = 0.05  # a cycle counts when the machine ran within 5 % of its best (the board's own bound)
    max_wait_s: float = 15.0  # then time anyway: a machine slow for good still gets a figure, and its record says so
    wait_step_s: float = 0.5
    max_retries: int = 3  # extra cycles per group, so a noisy machine cannot make the board run without end


def probe_ms() -> float:
    """The fixed workload's time in ms on the calling thread (one intra-op thread), minimum of a few repeats."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(_MATMUL_SIDE, _MATMUL_SIDE, generator=generator)
    buffer = torch.zeros(_BUFFER_FLOATS)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best = float("inf")
        for _ in range(_REPEATS):
            started = time.perf_counter()
            for _ in range(_MATMULS):
                torch.mm(a, a)
            buffer.add_(1.0)
            best = min(best, time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)
    return best * 1e3


class QuietGate:
    """Waits for a quiet machine before a cycle and tells whether it stayed quiet through it."""

    def __init__(self, policy: QuietPolicy = QuietPolicy(), reference_ms: float | None = None,
                 probe: Callable[[], float] = probe_ms, sleep: Callable[[float], None] = time.sleep) -> None:
        self.policy = policy
        self.reference_ms = reference_ms
        self._probe = probe
        self._sleep = sleep
        self.accepted_probes: list[float] = []
        self.discarded = 0
        self.waited_s = 0.0

    def _measure(self) -> float:
        value = self._probe()
        self.reference_ms = value if self.reference_ms is None else min(self.reference_ms, value)
        return value

    def quiet(self, value: float) -> bool:
        return self.reference_ms is not None and value <= self.reference_ms * (1 + self.policy.tolerance)

    def wait(self) -> float:
        """Probe until quiet or `max_wait_s` has passed; returns the last probe."""
        value = self._measure()
        waited = 0.0
        while not self.quiet(value) and waited < self.policy.max_wait_s:
            self._sleep(self.policy.wait_step_s)
            waited += self.policy.wait_step_s
            value = self._measure()
        self.waited_s += waited
        return value

    def keep_cycle(self, before: float, retries_used: int) -> bool:
        """After a cycle: probe again; True keeps it, False discards it (then time it again)."""
        after = self._measure()
        if self.quiet(after) or retries_used >= self.policy.max_retries:
            self.accepted_probes.append(max(before, after))  # the cycle's machine state: its busier end
            return True
        self.discarded += 1
        return False

    def summary(self) -> dict[str, float | int]:
        """What a record keeps: the median and the slowest accepted probe (how busy the machine was while the figure
        was taken), the reference, the cycles discarded and the seconds waited."""
        if not self.accepted_probes:
            return {}
        return {"probe_ms": round(statistics.median(self.accepted_probes), 4),
                "probe_max_ms": round(max(self.accepted_probes), 4), "probe_reference_ms": round(self.reference_ms, 4),
                "cycles_discarded": self.discarded, "quiet_wait_s": round(self.waited_s, 2)}
