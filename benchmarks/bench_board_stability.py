"""The architecture board's stability and speed: a first run, then a forced re-time (`--force`: the exports come
from the cache), of a few models in one process, printed side by side, with and without the quiet check.

The passes run in the order plain-first, quiet-first, plain-again, quiet-again, so both protocols meet the same
machine drift. Per protocol and cell: both medians (of round means) and their ratio, and the ratio of the passes'
probes (`zoo.measure.quiet`: how much faster or slower the machine itself was); per runtime: Kendall τ between the
two rankings; overall: the share of cells within ±5 % and ±10 %, and the wall times (the issue's goals: the
re-time at most half the first run, the cells within ±5 %, ±10 % at worst, the same ranks). Run it alone:
nothing else on the cores.

    python benchmarks/bench_board_stability.py --models mobilenetv2_100 mobilevit_xxs pit_ti \
        --backends executorch-xnnpack-1t litert-1t

`--artifacts leaderboard/architectures/artifacts` reuses a board's export cache (its store is not touched: every
pass writes to a store of its own in a temporary folder). The first pass of each protocol exports what the cache
lacks; its wall time is reported without the exports.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.report.architectures import BOARD_QUIET, BOARD_TIMING, run_board  # noqa: E402
from zoo.measure.store import Measurement  # noqa: E402
from zoo.report.architectures import kendall_tau  # noqa: E402

PROTOCOLS = {"plain": None, "quiet": BOARD_QUIET}


def _by_cell(records: list[Measurement]) -> dict[tuple[str, str], tuple[float, float | None]]:
    """(model, runtime) -> (latency ms, the pass's median probe ms or None)."""
    return {(r.model, r.backend): (r.latency_ms, (r.details or {}).get("probe_ms")) for r in records if r.timed}


def compare(first: dict, again: dict) -> tuple[list, list, list]:
    """Rows (cell, first, again, ratio, probe ratio), per-runtime τ rows, and the latency ratios."""
    rows, ratios = [], []
    for cell, (ms, probe) in first.items():
        if cell in again:
            ms_again, probe_again = again[cell]
            ratios.append(ms_again / ms)
            machine = f"{probe_again / probe:.3f}" if probe and probe_again else "–"
            rows.append([*cell, f"{ms:.2f}", f"{ms_again:.2f}", f"{ms_again / ms:.3f}", machine])
    taus = []
    for backend in dict.fromkeys(b for _, b in first):
        a = {m: v[0] for (m, b), v in first.items() if b == backend}
        b_ = {m: v[0] for (m, b), v in again.items() if b == backend}
        tau, n = kendall_tau(a, b_)
        taus.append([backend, n, "–" if tau is None else f"{tau:.2f}"])
    return rows, taus, ratios


def _pass(folder: Path, protocol: str, label: str, args, timing, force: bool) -> tuple[dict, float, float]:
    """One timing pass into the protocol's own store: (cells, wall s without exports, export s)."""
    started = time.perf_counter()
    run = run_board(folder / protocol, args.models, backends=args.backends, timing=timing, force=force,
                    artifacts_dir=args.artifacts or folder / "artifacts", quiet=PROTOCOLS[protocol],
                    store_path=folder / f"{protocol}.jsonl", breakdown=False, render=lambda d, s: None)
    wall = time.perf_counter() - started
    print(f"{protocol} {label}: {wall:.0f} s (exports {run.export_s:.0f} s)", flush=True)
    return _by_cell(run.records), wall - run.export_s, run.export_s


def _report(protocol: str, first: tuple, again: tuple) -> None:
    rows, taus, ratios = compare(first[0], again[0])
    print(f"\n## {protocol}\n")
    print(tabulate(rows, headers=["model", "runtime", "first ms", "re-time ms", "ratio", "probe ratio"],
                   disable_numparse=True))
    print()
    print(tabulate(taus, headers=["runtime", "models", "Kendall τ first vs re-time"], disable_numparse=True))
    within = [sum(abs(r - 1) <= bound for r in ratios) for bound in (0.05, 0.10)]
    print(f"\n{protocol}: cells within ±5 %: {within[0]}/{len(ratios)}, ±10 %: {within[1]}/{len(ratios)}; "
          f"max deviation {max((abs(r - 1) for r in ratios), default=0):.1%}; "
          f"median |ratio - 1| {statistics.median(abs(r - 1) for r in ratios):.1%}")
    print(f"{protocol}: first timing {first[1]:.0f} s, forced re-time {again[1]:.0f} s "
          f"= {again[1] / max(first[1] + first[2], 1e-9):.2f}× the first run with its exports")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenetv2_100", "mobilevit_xxs", "pit_ti"])
    parser.add_argument("--backends", nargs="+", default=["executorch-xnnpack-1t", "litert-1t"])
    parser.add_argument("--rounds", type=int, default=BOARD_TIMING.rounds)
    parser.add_argument("--protocols", nargs="+", choices=sorted(PROTOCOLS), default=["plain", "quiet"])
    parser.add_argument("--artifacts", help="an export cache to reuse (e.g. leaderboard/architectures/artifacts)")
    args = parser.parse_args()
    timing = dataclasses.replace(BOARD_TIMING, rounds=args.rounds)
    with tempfile.TemporaryDirectory(prefix="zoo-board-") as scratch:
        folder = Path(scratch)
        firsts = {p: _pass(folder, p, "first run", args, timing, force=False) for p in args.protocols}
        agains = {p: _pass(folder, p, "forced re-time", args, timing, force=True) for p in args.protocols}
    for protocol in args.protocols:
        _report(protocol, firsts[protocol], agains[protocol])
    return 0


if __name__ == "__main__":
    sys.exit(main())
