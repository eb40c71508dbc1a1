"""The architecture board's Protocol section, from the settings stored with its records (`Measurement.protocol`),
never from today's constants: a board states how its figures were measured.

Records written before records kept their protocol have none. Those measured while the board's settings were the
ones in `settings.LEGACY_PROTOCOL` (since `LEGACY_SINCE`) are described by them, and the section says so; the quiet
check's use is read from each record (`details.probe_ms`). Older records: "protocol not recorded".
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace

from zoo.measure.store import Measurement, Protocol
from zoo.report.architectures.settings import LEGACY_COMMIT, LEGACY_PROTOCOL, LEGACY_SINCE

__all__ = ["protocol_section"]

STORED, LEGACY, UNKNOWN = "stored", "legacy", "unknown"


def _protocol_of(record: Measurement) -> tuple[str, Protocol | None]:
    """(where the record's settings come from, the settings)."""
    if record.protocol is not None:
        return STORED, record.protocol
    if record.timestamp and record.timestamp >= LEGACY_SINCE:
        quiet = LEGACY_PROTOCOL.quiet if "probe_ms" in record.details else None
        return LEGACY, replace(LEGACY_PROTOCOL, quiet=quiet)
    return UNKNOWN, None


def _sci(value: float) -> str:
    return f"{value:.0e}".replace("e-0", "e-")


def _per_cell(p: Protocol, count: str = "") -> str:
    rounds = (f"{p.rounds} rounds of at least {p.runs_per_round} runs and {p.min_round_s} s (a slow model's round "
              f"stops after {p.max_round_s} s with at least {p.min_samples_per_round} runs)"
              if p.runs_per_round is not None else
              f"{p.rounds} rounds of at least {p.min_round_s} s and {p.min_samples_per_round} runs")
    groups = f"groups of {p.group_size} models" if p.group_size else "the models timed together"
    checks = (f"fp32: max abs error within {_sci(p.fp32_rtol)} of the logits' scale; int8: top-1 agreement with fp32 "
              f"on {p.int8_check_images} images that are not the calibration batch" if p.fp32_rtol is not None
              else "settings not recorded")
    return (f"- Per cell{count}: export (cached), a parity check against PyTorch ({checks}), {p.warmup_calls} warm-up "
            f"calls, then {rounds}, rounds interleaved across {groups} (A, B, C, A, B, C, …) so a load change hits "
            f"them alike.")


_PROBE = ("a fixed probe (matrix multiplies and a pass over 8 MiB, one thread) before and after every round cycle; a "
          "cycle starts once the probe is within {tolerance:.0%} of the fastest this machine has shown (waiting up to "
          "{max_wait_s:.0f} s), and one the machine got slower during is timed again (up to {max_retries} times a "
          "group). Each record keeps its probes (`details.probe_ms`, `probe_reference_ms`, `cycles_discarded`).")


def _quiet_line(described: Sequence[tuple[str, Protocol]]) -> str:
    """How the timed records used the quiet check: the policy of those timed inside it, or, when none was, the
    policy `--quiet` had when they were measured (known for the legacy records only)."""
    on = [p.quiet for _, p in described if p.quiet]
    if not on:
        if not any(source == LEGACY for source, _ in described):
            return "- Quiet check (`zoo.measure.quiet`, opt-in with `--quiet`): off for every record here."
        head, policy = ("Quiet check (`zoo.measure.quiet`, opt-in with `--quiet`; a record has `details.probe_ms` "
                        "when it was on)"), LEGACY_PROTOCOL.quiet
    else:
        policy = dict(Counter(tuple(sorted(q.items())) for q in on).most_common(1)[0][0])
        head = "Quiet check (`zoo.measure.quiet`)" if len(on) == len(described) else (
            f"Quiet check (`zoo.measure.quiet`), on for {len(on)} of {len(described)} timed records (those with "
            f"`details.probe_ms`)")
    return f"- {head}: " + _PROBE.format(**policy)


def _provenance(sources: Counter) -> list[str]:
    """The line saying where the settings below come from (none when every record stored its own)."""
    if set(sources) <= {STORED}:
        return []
    parts = []
    if sources[STORED]:
        parts.append(f"{sources[STORED]} timed record(s) carry their settings (`protocol` in `measurements.jsonl`)")
    if sources[LEGACY]:
        parts.append(f"{sources[LEGACY]} timed record(s) predate stored settings, so the figures below for them are "
                     f"the board's settings when they were measured (zoo's from commit {LEGACY_COMMIT}, "
                     f"{LEGACY_SINCE[:10]}, until records kept their protocol), not read from the records; whether "
                     f"the quiet check was on is read from each record (`details.probe_ms`)")
    if sources[UNKNOWN]:
        parts.append(f"{sources[UNKNOWN]} timed record(s) are older still: protocol not recorded")
    return ["- Settings: " + "; ".join(parts) + "."]


def protocol_section(records: Iterable[Measurement]) -> list[str]:
    """The README's "## Protocol" lines for the timed `records` shown on the board."""
    described = [_protocol_of(r) for r in records if r.timed]
    sources = Counter(source for source, _ in described)
    known = [(source, p) for source, p in described if p is not None]
    protocols = [p for _, p in known]
    timings = Counter(replace(p, quiet=None) for p in protocols)
    if len(timings) == 1:
        per_cell = [_per_cell(next(iter(timings)))]
    else:
        per_cell = [_per_cell(p, f" ({n} records)") for p, n in timings.most_common()]
    lines = [
        "## Protocol",
        "",
        "- Batch 1, 1000-class head, every model at its deployment resolution (the paper's), random weights from "
        "one seed (latency does not depend on the values; the exports are cached by them).",
        *_provenance(sources),
        *(per_cell or ["- Per cell: protocol not recorded (no timed record carries its settings)."]),
        *([_quiet_line(known)] if known else []),
        "- Statistics: **median** of the round means (MobileNetV4's), **p90** of every sample (MLPerf Mobile's, "
        "linear interpolation), **trimmed mean** of the middle 80 % of the samples (ExecuTorch's minibench).",
        "- 1-thread runners are pinned to one core (`os.sched_setaffinity`, restored afterwards; the core is in "
        "each record's `details.pinned_core`); the thread count is in each record's `details.threads`. "
        "Exports run first, in a pool of processes; timing runs alone, serially.",
        "- Memory: ExecuTorch reports its planned arena (the memory plan of activations between delegate calls, "
        "without XNNPACK's own workspace): shown as *arena*, with the RSS increase beside it; elsewhere the runner "
        "process's peak RSS increase while the model is loaded, checked and warmed up (*RSS*, "
        "`zoo.measure.memory`). int8 calibrates on synthetic images unless the record says otherwise: int8 figures "
        "bound the speed, not the accuracy.",
        "- Published top-1 are the papers' figures (ImageNet-1k, their training recipes), not our runs.",
    ]
    return lines
