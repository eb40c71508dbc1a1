"""The architecture board's settings: its timing protocol, its columns (as the backends declare them), and the
settings its records were measured under before records kept them.

A board run stores its protocol in every record (`zoo.measure.store.Protocol`, via `zoo.measure.suite`), and the
README's Protocol section is rendered from those (`zoo.report.architectures.protocol`), never from the constants
here: they say how the next run times, not how the stored records were timed.
"""
from __future__ import annotations

from zoo.measure.backends import architecture_board_backends, dense_row_backends
from zoo.measure.latency import TimingConfig
from zoo.measure.quiet import QuietPolicy
from zoo.measure.store import Protocol

__all__ = ["BOARD_QUIET", "BOARD_TIMING", "BREAKDOWN_RUNS", "GROUP_SIZE", "LEGACY_COMMIT", "LEGACY_PROTOCOL", "LEGACY_SINCE",
           "MAX_RESOLUTION", "MIN_RESOLUTION", "board_backends", "dense_backends"]

# The protocol: warm-up, 5 rounds of at least 50 runs and 0.25 s (a fast model's 50 runs last 0.1 s: too few to ride
# out a hiccup), a round capped at 1.5 s for a slow model (at least 5 runs), rounds interleaved across the group's
# models (opt-in: inside the quiet check); median of round means, p90, trimmed mean.
BOARD_TIMING = TimingConfig(rounds=5, min_round_s=0.25, warmup_calls=10, min_samples_per_round=5, runs_per_round=50,
                            max_round_s=1.5)
BOARD_QUIET = QuietPolicy()
GROUP_SIZE = 6  # models timed interleaved together: drift shared, at most one group lost to an interruption
MIN_RESOLUTION, MAX_RESOLUTION = 32, 1024
BREAKDOWN_RUNS = 10  # inferences profiled per architecture (op-class breakdown)

# Records measured before records kept their protocol (issue 28) have none. From commit f8d5cb4 (2026-12-02 16:02
# UTC: 0.25 s round floor, the quiet check) until then, the board timed under these settings, with the quiet check
# on exactly where a record has `details.probe_ms`; the README says so, labelled as such. Older records: not known.
LEGACY_SINCE = "2026-12-02T16:02:26+00:00"
LEGACY_COMMIT = "f8d5cb4"
LEGACY_PROTOCOL = Protocol(rounds=5, min_round_s=0.25, warmup_calls=10, min_samples_per_round=5, runs_per_round=50,
                           max_round_s=1.5, group_size=6,
                           quiet={"tolerance": 0.05, "max_wait_s": 15.0, "wait_step_s": 0.5, "max_retries": 3},
                           fp32_rtol=1e-4, int8_check_images=8)


def board_backends() -> tuple[str, ...]:
    """The classifier rows' columns: every backend that declares itself on the architecture board, in table order
    (1 thread first, then all threads)."""
    return architecture_board_backends()


def dense_backends() -> tuple[str, ...]:
    """The detector/segmenter rows' columns, as the backends declare them."""
    return dense_row_backends()
