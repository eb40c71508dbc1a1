"""The quiet check (zoo.measure.quiet): it waits for a quiet machine, throws away a cycle the machine got busy
during (and only that one), bounds its retries, and keeps the probes in the outcome."""
from __future__ import annotations

import math

import pytest

from zoo.measure.latency import TimingConfig, measure_interleaved
from zoo.measure.quiet import QuietGate, QuietPolicy, probe_ms


def scripted(values: list[float]):
    """A probe that returns `values` in turn (then the last one forever)."""
    values = list(values)
    return lambda: values.pop(0) if len(values) > 1 else values[0]


def test_wait_probes_until_the_machine_is_within_tolerance_of_its_best() -> None:
    slept: list[float] = []
    gate = QuietGate(QuietPolicy(tolerance=0.05, wait_step_s=0.5), reference_ms=1.0,
                     probe=scripted([1.3, 1.2, 1.04]), sleep=slept.append)
    assert gate.wait() == 1.04 and slept == [0.5, 0.5] and gate.waited_s == 1.0


def test_wait_gives_up_after_max_wait_and_the_reference_is_the_fastest_probe_seen() -> None:
    gate = QuietGate(QuietPolicy(max_wait_s=1.0, wait_step_s=0.5), reference_ms=1.5,
                     probe=scripted([2.0, 1.8, 1.9, 1.0]), sleep=lambda s: None)
    assert gate.wait() == 1.9 and gate.waited_s == 1.0  # still busy when the time was up: timed anyway
    fresh = QuietGate(probe=scripted([2.0, 1.4]), sleep=lambda s: None)
    assert fresh.wait() == 2.0  # no reference yet: the first probe is the machine's best so far
    fresh.wait()
    assert fresh.reference_ms == 1.4


def test_a_busy_cycle_is_discarded_until_the_retries_are_spent() -> None:
    gate = QuietGate(QuietPolicy(max_retries=2), reference_ms=1.0, probe=scripted([1.5, 1.5, 1.5]))
    assert not gate.keep_cycle(1.0, retries_used=0) and not gate.keep_cycle(1.0, retries_used=1)
    assert gate.keep_cycle(1.0, retries_used=2)  # retries spent: kept, and its probe says how busy it was
    summary = gate.summary()
    assert summary["cycles_discarded"] == 2 and summary["probe_max_ms"] == 1.5


class Runner:
    """A prepared model whose rounds last `round_ms[i]` per call in turn."""

    def __init__(self, round_ms: list[float]) -> None:
        self.round_ms, self.details = list(round_ms), {"threads": 1}

    def time_round(self, config: TimingConfig) -> list[float]:
        return [self.round_ms.pop(0) / 1e3] * 4

    def close(self) -> None:
        pass


class Backend:
    name, batch_sizes, device_id, threads = "scripted-1t", (1,), None, 1

    def __init__(self, runners: dict[str, Runner]) -> None:
        self.runners = runners

    def available(self) -> tuple[bool, str]:
        return True, ""

    def prepare(self, model, input_shape, workdir, config):
        return self.runners[model]


def test_the_disturbed_cycles_samples_never_reach_the_statistics(tmp_path) -> None:
    # cycle 2 ran while the machine was busy (its after-probe is 30 % slow, its calls took 9 ms): timed again
    runners = {"a": Runner([2.0, 9.0, 2.1, 2.0]), "b": Runner([5.0, 9.0, 5.2, 5.1])}
    probes = scripted([1.0, 1.0,   1.0, 1.3,   1.0, 1.01,   1.0, 1.0])  # (before, after) per cycle
    gate = QuietGate(QuietPolicy(), probe=probes, sleep=lambda s: None)
    config = TimingConfig(rounds=3, min_round_s=0.0, warmup_calls=0)
    outcomes = measure_interleaved(Backend(runners), {"a": "a", "b": "b"}, {"a": (1, 3, 8, 8), "b": (1, 3, 8, 8)},
                                   config, tmp_path, gate=gate)
    a, b = outcomes["a"], outcomes["b"]
    assert a.stats.round_medians_ms == (2.0, 2.1, 2.0) and b.stats.round_medians_ms == (5.0, 5.2, 5.1)
    assert a.stats.max_ms < 9.0 and a.details["cycles_discarded"] == 1
    assert a.details["probe_reference_ms"] == 1.0 and a.details["probe_max_ms"] == 1.01


def test_without_a_gate_every_cycle_counts(tmp_path) -> None:
    outcome = measure_interleaved(Backend({"a": Runner([2.0, 9.0])}), {"a": "a"}, {"a": (1, 3, 8, 8)},
                                  TimingConfig(rounds=2, min_round_s=0.0, warmup_calls=0), tmp_path)["a"]
    assert outcome.stats.round_medians_ms == (2.0, 9.0) and "probe_ms" not in outcome.details


def test_the_real_probe_times_its_workload() -> None:
    first, second = probe_ms(), probe_ms()
    assert all(math.isfinite(v) and 0.05 < v < 5000 for v in (first, second))
    assert torch_threads_restored()


def torch_threads_restored() -> bool:
    import torch

    before = torch.get_num_threads()
    probe_ms()
    return torch.get_num_threads() == before
