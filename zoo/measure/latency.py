"""Latency measurement: one small backend interface, interleaved rounds, robust statistics.

A backend turns a model into a `PreparedModel` (export, session, warm-up) and a prepared model times itself for
one round. `measure_interleaved` prepares every model first, then runs rounds A, B, C, A, B, C, ... and pools the
per-round medians, so slow drift of a shared machine (other jobs, thermal state) hits every model alike instead
of favouring whichever ran in the quiet minute.

Every exported runtime is timed by one loop, `CallRunner` (perf_counter around one call on a fixed input, after
warm-up); the PyTorch eager backends use `torch.utils.benchmark`, which also synchronises an accelerator around
each block and sets the thread count for the measurement.

A backend may carry a `device_id` (None: this host; e.g. an adb-connected phone's serial), so two devices behind
one host are told apart.

Reported: `median_ms` = median of the per-round medians (robust to a bad round); `iqr_ms` = interquartile range
of all samples pooled (the noise a reader should expect); min/max of the samples; `runs` = number of samples.
The field's statistics beside them (the architecture board's): `median_of_means_ms` = median of the round means
(MobileNetV4's), `p90_ms` = 90th percentile of every sample (MLPerf Mobile's; numpy's linear interpolation),
`trimmed_mean_ms` = mean of the middle 80 % of every sample (ExecuTorch's minibench: floor(10 %) dropped at each
end).

A round ends once it has `min_samples_per_round` samples and `min_round_s` seconds, and, when `runs_per_round` is
set, `runs_per_round` samples or `max_round_s` seconds (a slow model stops at the time cap: "≥ 50 runs or a time
floor"). A backend timing on one thread (`threads == 1`) is pinned to one core for its rounds where the OS allows
(`os.sched_setaffinity` on the calling thread, where every 1-thread runtime computes), and unpinned afterwards.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch.nn as nn

from zoo.measure.quiet import QuietGate

__all__ = [
    "BackendSkip",
    "CallRunner",
    "LatencyBackend",
    "LatencyStats",
    "Outcome",
    "PreparedModel",
    "TimedBackend",
    "TimingConfig",
    "measure_interleaved",
    "pinned_to_one_core",
    "summarize_rounds",
    "trimmed_mean",
]


@dataclass(frozen=True)
class TimingConfig:
    """How long to time: `rounds` rounds of at least `min_round_s` seconds each, after `warmup_calls` calls."""

    # Many short rounds rather than few long ones: on a shared machine the load changes within seconds, and the
    # median of many round medians follows it less than the median of a few.
    rounds: int = 8
    min_round_s: float = 0.3
    warmup_calls: int = 3
    min_samples_per_round: int = 3
    runs_per_round: int | None = None  # None: rounds are timed by min_round_s alone
    max_round_s: float | None = None  # the time cap of a round that has not reached runs_per_round

    def round_done(self, samples: int, elapsed_s: float) -> bool:
        """Whether a round with `samples` calls after `elapsed_s` seconds has timed enough."""
        if samples < self.min_samples_per_round or elapsed_s < self.min_round_s:
            return False
        if self.runs_per_round is None:
            return True
        return samples >= self.runs_per_round or (self.max_round_s is not None and elapsed_s >= self.max_round_s)


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one forward pass of a whole batch, in milliseconds."""

    median_ms: float
    iqr_ms: float
    min_ms: float
    max_ms: float
    runs: int
    rounds: int
    batch_size: int
    round_medians_ms: tuple[float, ...] = ()
    median_of_means_ms: float | None = None
    p90_ms: float | None = None
    trimmed_mean_ms: float | None = None
    round_means_ms: tuple[float, ...] = ()


class BackendSkip(Exception):
    """Raised by `prepare` when the model cannot be timed here for a reason that is not an error
    (e.g. a Core ML package exported fine but prediction needs macOS). `details` is kept in the record."""

    def __init__(self, reason: str, details: Mapping[str, object] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = dict(details or {})


@dataclass(frozen=True)
class Outcome:
    """Result of measuring one model on one backend: ok with stats, skipped or failed with a reason."""

    status: Literal["ok", "skipped", "failed"]
    reason: str = ""
    stats: LatencyStats | None = None
    details: dict = field(default_factory=dict)
    pinned_core: int | None = None  # the core the rounds ran on (None: not pinned)
    timing_group_s: float | None = None  # wall time of the interleaved rounds of the model's group
    group_size: int | None = None  # models timed interleaved in that group


@runtime_checkable
class PreparedModel(Protocol):
    """A model made ready on a backend. `details` carries backend facts (exporter, parity error, threads...)."""

    details: dict

    def time_round(self, config: TimingConfig) -> list[float]:
        """Time one round; return per-call latencies in seconds (one per sample)."""
        ...

    def close(self) -> None: ...


class CallRunner:
    """A prepared model timed through one call on a fixed input (the PreparedModel of every exported runtime).

    `before_round` runs before each round, outside the timed calls (e.g. sizing a process-wide thread pool that
    another backend may have resized).
    """

    def __init__(self, call: Callable[[], object], details: dict, config: TimingConfig,
                 before_round: Callable[[], None] | None = None) -> None:
        self.call = call
        self.details = details
        self.before_round = before_round
        if before_round is not None:
            before_round()
        for _ in range(max(config.warmup_calls, 3)):  # first runs allocate buffers / pack weights
            call()

    def time_round(self, config: TimingConfig) -> list[float]:
        if self.before_round is not None:
            self.before_round()
        times: list[float] = []
        started = time.perf_counter()
        while not config.round_done(len(times), time.perf_counter() - started):
            t0 = time.perf_counter()
            self.call()
            times.append(time.perf_counter() - t0)
        return times

    def close(self) -> None:
        self.call = lambda: None  # drops the runtime's session/program so its memory can go


@runtime_checkable
class LatencyBackend(Protocol):
    name: str
    batch_sizes: tuple[int, ...]
    # None: this host. Else the device the backend runs on (e.g. an adb-connected phone's serial).
    device_id: str | None

    def available(self) -> tuple[bool, str]:
        """(True, "") when usable here, else (False, why not)."""
        ...

    def prepare(
        self, model: nn.Module, input_shape: tuple[int, ...], workdir: Path, config: TimingConfig
    ) -> PreparedModel:
        """Make `model` ready (export, session) and warm it up; raise BackendSkip if it cannot be timed here."""
        ...

    def measure(
        self, model: nn.Module, input_shape: tuple[int, ...], config: TimingConfig = ..., workdir: Path | None = ...
    ) -> LatencyStats: ...


def summarize_rounds(rounds_s: Sequence[Sequence[float]], batch_size: int) -> LatencyStats:
    """Pool per-round samples (seconds) into LatencyStats (milliseconds)."""
    rounds_ms = [np.asarray(r, dtype=float) * 1e3 for r in rounds_s if len(r)]
    if not rounds_ms:
        raise ValueError("no timing samples")
    pooled = np.concatenate(rounds_ms)
    round_medians = [float(np.median(r)) for r in rounds_ms]
    round_means = [float(r.mean()) for r in rounds_ms]
    q25, q75 = np.percentile(pooled, [25, 75])
    return LatencyStats(
        median_ms=float(statistics.median(round_medians)),
        iqr_ms=float(q75 - q25),
        min_ms=float(pooled.min()),
        max_ms=float(pooled.max()),
        runs=int(pooled.size),
        rounds=len(rounds_ms),
        batch_size=batch_size,
        round_medians_ms=tuple(round(m, 4) for m in round_medians),
        median_of_means_ms=float(statistics.median(round_means)),
        p90_ms=float(np.percentile(pooled, 90)),
        trimmed_mean_ms=trimmed_mean(pooled),
        round_means_ms=tuple(round(m, 4) for m in round_means),
    )


def trimmed_mean(samples: np.ndarray, cut: float = 0.1) -> float:
    """Mean of the samples left after dropping floor(cut·n) of the lowest and of the highest."""
    ordered = np.sort(np.asarray(samples, dtype=float))
    drop = int(cut * ordered.size)
    return float(ordered[drop:ordered.size - drop].mean())


@contextlib.contextmanager
def pinned_to_one_core(enabled: bool) -> Iterator[int | None]:
    """Pin the calling thread to one usable core (the last: the first is where the OS puts most else), yielding
    it, and restore the previous mask afterwards; yields None where pinning is off or not allowed."""
    if not enabled or not hasattr(os, "sched_setaffinity"):
        yield None
        return
    try:
        previous = os.sched_getaffinity(0)
        core = max(previous)
        os.sched_setaffinity(0, {core})
    except OSError:  # a container or OS that refuses it: time unpinned, and the record says so
        yield None
        return
    try:
        yield core
    finally:
        os.sched_setaffinity(0, previous)


def _failure_reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def measure_interleaved(
    backend: LatencyBackend,
    models: Mapping[str, nn.Module],
    input_shapes: Mapping[str, tuple[int, ...]],
    config: TimingConfig = TimingConfig(),
    workdir: Path | None = None,
    on_progress: Callable[[str], None] | None = None,
    gate: QuietGate | None = None,
) -> dict[str, Outcome]:
    """Measure every model on `backend` in interleaved rounds. Errors are caught per model (status 'failed').

    Exported files go under `workdir/<backend>/<model>/` (a temporary folder, deleted afterwards, when None).
    `gate`: the quiet check (`zoo.measure.quiet`) around every round cycle; its summary joins each ok model's
    details.
    """
    ok, why_not = backend.available()
    if not ok:
        return {name: Outcome("skipped", why_not) for name in models}
    if workdir is None:  # exports go to a throwaway folder, removed when done
        with tempfile.TemporaryDirectory(prefix="zoo-measure-") as scratch:
            return measure_interleaved(backend, models, input_shapes, config, Path(scratch), on_progress, gate)
    outcomes: dict[str, Outcome] = {}
    prepared: dict[str, PreparedModel] = {}
    for name, model in models.items():
        try:
            prepared[name] = backend.prepare(model, input_shapes[name], workdir / backend.name / name, config)
        except BackendSkip as skip:
            outcomes[name] = Outcome("skipped", skip.reason, details=skip.details)
        except Exception as error:  # a model that does not export/run is recorded, the others go on
            outcomes[name] = Outcome("failed", _failure_reason(error))
        if on_progress:
            on_progress(name)
    samples: dict[str, list[list[float]]] = {name: [] for name in prepared}
    started = time.perf_counter()
    try:
        with pinned_to_one_core(getattr(backend, "threads", None) == 1) as core:
            _time_rounds(prepared, samples, outcomes, config, on_progress, gate)
    finally:
        for runner in prepared.values():
            runner.close()
    # the group's timing wall time, shared by its models (they were timed interleaved)
    seconds = round(time.perf_counter() - started, 3)
    for name, runner in prepared.items():
        if name not in outcomes:
            stats = summarize_rounds(samples[name], batch_size=input_shapes[name][0])
            details = {**runner.details, **(gate.summary() if gate else {})}
            outcomes[name] = Outcome("ok", stats=stats, details=details, pinned_core=core,
                                     timing_group_s=seconds, group_size=len(prepared))
    return {name: outcomes[name] for name in models}


def _time_rounds(prepared: Mapping[str, PreparedModel], samples: dict[str, list[list[float]]],
                 outcomes: dict[str, Outcome], config: TimingConfig,
                 on_progress: Callable[[str], None] | None, gate: QuietGate | None = None) -> None:
    """Rounds A, B, C, A, B, C, ...: each model's samples per round; a model that fails leaves the rounds.
    With a `gate`, a cycle starts on a quiet machine, and one the machine got busy during is timed again."""
    retries = 0
    for _ in range(config.rounds):
        while True:
            before = gate.wait() if gate else 0.0
            cycle = _time_cycle(prepared, outcomes, config)
            if gate is None or gate.keep_cycle(before, retries):
                break
            retries += 1
        for name, times in cycle.items():
            samples[name].append(times)
        if on_progress:
            on_progress("round")


def _time_cycle(prepared: Mapping[str, PreparedModel], outcomes: dict[str, Outcome],
                config: TimingConfig) -> dict[str, list[float]]:
    """One round of every model still in the rounds: its per-call seconds."""
    cycle: dict[str, list[float]] = {}
    for name, runner in prepared.items():
        if name in outcomes:
            continue
        try:
            cycle[name] = runner.time_round(config)
        except Exception as error:
            outcomes[name] = Outcome("failed", _failure_reason(error), details=runner.details)
    return cycle


class TimedBackend:
    """Base class giving every backend the single-model `measure` on top of its `prepare`."""

    name: str = ""
    batch_sizes: tuple[int, ...] = (1,)
    device_id: str | None = None

    def available(self) -> tuple[bool, str]:
        return True, ""

    def prepare(
        self, model: nn.Module, input_shape: tuple[int, ...], workdir: Path, config: TimingConfig
    ) -> PreparedModel:
        raise NotImplementedError

    def measure(
        self,
        model: nn.Module,
        input_shape: tuple[int, ...],
        config: TimingConfig = TimingConfig(),
        workdir: Path | None = None,
    ) -> LatencyStats:
        """Time one model; raises BackendSkip when it cannot be timed here, RuntimeError when it failed."""
        outcome = measure_interleaved(self, {"model": model}, {"model": input_shape}, config, workdir)["model"]
        if outcome.status == "skipped":
            raise BackendSkip(outcome.reason, outcome.details)
        if outcome.status == "failed" or outcome.stats is None:
            raise RuntimeError(f"{self.name}: {outcome.reason}")
        return outcome.stats
