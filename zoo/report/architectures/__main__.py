"""`python -m zoo.report.architectures DIR`: re-render DIR/README.md and its plots from DIR's stores (nothing is
exported or timed). With `--measure`: run the architecture board first (exports, timing, op-class profiles into
DIR's stores; `make latency`), then render, all in this process."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from tabulate import tabulate
from tqdm import tqdm

from zoo.measure.backends import UnknownBackendError, backend_names
from zoo.measure.latency import TimingConfig
from zoo.measure.store import MEASUREMENTS_FILE
from zoo.models import UnknownModelError
from zoo.report.architectures.render import write_board
from zoo.report.architectures.rows import BoardError, dense_labels
from zoo.report.architectures.run import BoardRun, run_board
from zoo.report.architectures.settings import BOARD_QUIET, BOARD_TIMING


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m zoo.report.architectures", description=__doc__)
    parser.add_argument("directory")
    parser.add_argument("--store", help=f"measurement store (default DIR/{MEASUREMENTS_FILE})")
    parser.add_argument("--measure", action="store_true",
                        help="run the board (every registered model and MobileViT ablation at its deployment "
                        "resolution on every backend declared on the board, under the board's protocol), then render")
    parser.add_argument("--models", nargs="+", help="--measure: rows (default: every registered model, ablations)")
    parser.add_argument("--res", type=int, nargs="+", help="--measure: one resolution for every row, each in turn")
    parser.add_argument("--backends", nargs="+", help=f"--measure: of {', '.join(backend_names())}")
    parser.add_argument("--force", action="store_true", help="--measure: re-time cells the store already has")
    parser.add_argument("--rounds", type=int, help=f"--measure: timing rounds (default {BOARD_TIMING.rounds})")
    parser.add_argument("--round-seconds", type=float, help=f"--measure: a round's time cap (default "
                        f"{BOARD_TIMING.max_round_s} s, or {BOARD_TIMING.runs_per_round} runs)")
    parser.add_argument("--artifacts", help="--measure: exports folder (default DIR/artifacts)")
    parser.add_argument("--calibration", help="--measure: int8 calibration images, a torch.save'd [N, 3, H, W] "
                        "tensor (default: synthetic, recorded as such)")
    parser.add_argument("--export-jobs", type=int, help="--measure: processes exporting into the cache before "
                        "timing (default: usable cores)")
    parser.add_argument("--dense", action="store_true", help="--measure: the whole detectors and segmenters (SSDLite "
                        "320 px, DeepLabv3 512 px over the MobileViT paper's downstream backbones)")
    parser.add_argument("--export-only", action="store_true", help="--measure: fill the export cache and stop "
                        "(exports may run beside other work; timing must run alone, later)")
    parser.add_argument("--quiet", action="store_true", help="--measure: time inside the quiet check "
                        "(zoo.measure.quiet); off by default: on a shared VM it waited without steadying the figures")
    return parser.parse_args(argv)


def board_timing(args: argparse.Namespace) -> TimingConfig:
    """The board's protocol, with --rounds / --round-seconds (then: that time cap per round) when given."""
    timing = BOARD_TIMING
    if args.rounds is not None:
        timing = dataclasses.replace(timing, rounds=args.rounds)
    if args.round_seconds is not None:
        timing = dataclasses.replace(timing, max_round_s=args.round_seconds)
    return timing


def _summary(args: argparse.Namespace, run: BoardRun) -> None:
    spent = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in sorted(run.export_cpu_s.items()))
    if args.export_only:
        print(f"exports: {run.exports} jobs in {run.export_s:.0f} s ({spent or 'all cached'}); nothing timed")
        return
    rows = [[r.model, r.resolution, r.backend, r.status if r.status == "ok" else f"{r.status}: {(r.reason or '')[:60]}",
             "" if r.latency_ms is None else f"{r.latency_ms:.2f}"] for r in run.records]
    print(tabulate(rows, headers=["model", "res", "backend", "status", "median ms"], disable_numparse=True))
    if spent:
        print(f"\nexport seconds per runtime (jobs summed): {spent}")
    print(f"\nboard: {args.directory}/README.md; {len(run.records)} records; exports {run.export_s:.0f} s "
          f"({run.exports} jobs), timing {run.timing_s:.0f} s, render {run.render_s:.0f} s, total {run.total_s:.0f} s")


def measure(args: argparse.Namespace) -> int:
    calibration = torch.load(args.calibration) if args.calibration else None
    with tqdm(desc="board", unit="step") as bar:

        def advance(what: str) -> None:
            bar.set_postfix_str(what[:60])
            bar.update(1)

        try:
            models = args.models or (dense_labels() if args.dense else None)
            run = run_board(args.directory, models, args.res, args.backends, args.store, args.artifacts,
                            force=args.force, timing=board_timing(args), export_jobs=args.export_jobs,
                            calibration=calibration, on_progress=advance, export_only=args.export_only,
                            quiet=BOARD_QUIET if args.quiet else None)
        except (UnknownModelError, UnknownBackendError, BoardError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    _summary(args, run)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure:
        return measure(args)
    store = Path(args.store) if args.store else Path(args.directory) / MEASUREMENTS_FILE
    print(write_board(args.directory, store))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
