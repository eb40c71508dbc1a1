"""The architecture board's stability and speed: a first run, then a forced re-time (`--force`: the exports come
from the cache), of a few models in one process, printed side by side.

Per cell: both medians (of round means) and their ratio; per runtime: Kendall τ between the two rankings; overall:
the share of cells within ±5 % and ±10 %, and both wall times (the issue's goals: the re-time at most half the
first run, the cells within ±5 %, ±10 % at worst, the same ranks). Run it alone: nothing else on the cores.

    python benchmarks/bench_board_stability.py --models mobilenetv2_100 mobilevit_xxs pit_ti \
        --backends executorch-xnnpack-1t litert-1t

With `--board leaderboard/architectures` (a board already measured), the first call is the rerun with nothing
changed (it only re-renders: its wall time is the rerun's), and the forced re-time is compared with the board's
stored figures; the board's store then holds the re-time (its latest records).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.measure.board import BOARD_TIMING, run_board  # noqa: E402
from zoo.measure.store import Measurement  # noqa: E402
from zoo.report.architectures import kendall_tau  # noqa: E402


def _by_cell(records: list[Measurement]) -> dict[tuple[str, str], float]:
    return {(r.model, r.backend): r.latency_ms for r in records if r.timed}


def compare(first: dict[tuple[str, str], float], again: dict[tuple[str, str], float]) -> tuple[list, list, list]:
    """Rows (cell, first, again, ratio), per-runtime τ rows, and the ratios."""
    rows, ratios = [], []
    for cell in first:
        if cell in again:
            ratio = again[cell] / first[cell]
            ratios.append(ratio)
            rows.append([*cell, f"{first[cell]:.2f}", f"{again[cell]:.2f}", f"{ratio:.3f}"])
    taus = []
    for backend in dict.fromkeys(b for _, b in first):
        a = {m: ms for (m, b), ms in first.items() if b == backend}
        b_ = {m: ms for (m, b), ms in again.items() if b == backend}
        tau, n = kendall_tau(a, b_)
        taus.append([backend, n, "–" if tau is None else f"{tau:.2f}"])
    return rows, taus, ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenetv2_100", "mobilevit_xxs", "pit_ti"])
    parser.add_argument("--backends", nargs="+", default=["executorch-xnnpack-1t", "litert-1t"])
    parser.add_argument("--rounds", type=int, default=BOARD_TIMING.rounds)
    parser.add_argument("--board", help="board folder (default: a temporary one)")
    args = parser.parse_args()
    timing = dataclasses.replace(BOARD_TIMING, rounds=args.rounds)
    with tempfile.TemporaryDirectory(prefix="zoo-board-") as scratch:
        folder = Path(args.board or scratch)
        started = time.perf_counter()
        first = run_board(folder, args.models, backends=args.backends, timing=timing)
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        again = run_board(folder, args.models, backends=args.backends, timing=timing, force=True)
        again_s = time.perf_counter() - started
    rows, taus, ratios = compare(_by_cell(first.records), _by_cell(again.records))
    print(tabulate(rows, headers=["model", "runtime", "first ms", "re-time ms", "ratio"], disable_numparse=True))
    print()
    print(tabulate(taus, headers=["runtime", "models", "Kendall τ first vs re-time"], disable_numparse=True))
    within = [sum(abs(r - 1) <= bound for r in ratios) for bound in (0.05, 0.10)]
    print(f"\ncells within ±5 %: {within[0]}/{len(ratios)}, ±10 %: {within[1]}/{len(ratios)}; "
          f"max deviation {max((abs(r - 1) for r in ratios), default=0):.1%}")
    print(f"first run {first_s:.0f} s (exports {first.export_s:.0f} s, timing {first.timing_s:.0f} s); "
          f"forced re-time {again_s:.0f} s = {again_s / first_s:.2f}× the first")
    return 0


if __name__ == "__main__":
    sys.exit(main())
