"""`python -m zoo.measure`: measure params, GMACs and latency of zoo models, store them, print a table."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

import torch
from tabulate import tabulate
from tqdm import tqdm

from zoo.measure.backends import UnknownBackendError, available_backends, backend_names
from zoo.measure.board import BOARD_QUIET, BOARD_TIMING, BoardError, dense_labels, run_board
from zoo.measure.latency import TimingConfig
from zoo.measure.store import Measurement
from zoo.measure.suite import expected_steps, measure_models

DEFAULT_STORE = "leaderboard/measurements.jsonl"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m zoo.measure", description=__doc__)
    parser.add_argument("--models", nargs="+", help="zoo model names (default: every registered model)")
    parser.add_argument("--res", type=int, nargs="+",
                        help="input resolution(s) for all models, each measured in turn "
                        "(default: each one's published/deployment resolution)")
    parser.add_argument(
        "--backends", nargs="+", help=f"of {', '.join(backend_names())} (default: those available here)"
    )
    parser.add_argument("--store", help=f"JSON-lines store (default {DEFAULT_STORE}; --board: DIR/measurements.jsonl)")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier head size (default 1000)")
    parser.add_argument("--force", action="store_true", help="re-measure even when the store has a record")
    parser.add_argument("--rounds", type=int, help=f"interleaved timing rounds (default {TimingConfig.rounds}; "
                        f"--board: {BOARD_TIMING.rounds})")
    parser.add_argument("--round-seconds", type=float, help=f"time per round (default {TimingConfig.min_round_s}; "
                        f"--board: {BOARD_TIMING.runs_per_round} runs or {BOARD_TIMING.max_round_s} s)")
    parser.add_argument("--artifacts", help="folder for exported ONNX / Core ML files (default: beside the store)")
    parser.add_argument("--calibration", help="int8 calibration images: a torch.save'd [N, 3, H, W] tensor "
                        "(default: synthetic, recorded as such)")
    parser.add_argument("--board", metavar="DIR",
                        help="the architecture board: every registered model and MobileViT ablation at its "
                        "deployment resolution on every phone-CPU runtime (fp32/int8, 1 and all threads), under "
                        "the board's protocol; store DIR/measurements.jsonl, then DIR/README.md and plots")
    parser.add_argument("--export-jobs", type=int,
                        help="--board: processes exporting into the cache before timing (default: usable cores)")
    parser.add_argument("--dense", action="store_true",
                        help="--board: the whole detectors and segmenters (SSDLite 320 px, DeepLabv3 512 px over the "
                        "MobileViT paper's downstream backbones) instead of the classifiers")
    parser.add_argument("--export-only", action="store_true",
                        help="--board: fill the export cache and stop (exports may run beside other work; timing "
                        "must run alone, later)")
    parser.add_argument("--quiet", action="store_true",
                        help="--board: time inside the quiet check (zoo.measure.quiet: a probe around every round "
                        "cycle, waiting for and keeping only cycles on a machine within 5 %% of its best speed); "
                        "off by default: on a shared VM it waited without steadying the figures")
    parser.set_defaults(store=None)
    return parser.parse_args(argv)


def _cell(value: Any, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def format_table(records: Sequence[Measurement]) -> str:
    rows = [
        [
            r.model,
            r.resolution,
            r.backend,
            r.batch_size,
            _cell(r.params / 1e6 if r.params is not None else None, 3),
            _cell(r.params_1k / 1e6 if r.params_1k is not None else None, 3),
            _cell(r.gmacs, 3),
            _cell(r.median_ms, 2),
            _cell(r.iqr_ms, 2),
            r.runs or "",
            r.status if r.status == "ok" else f"{r.status}: {(r.reason or '')[:60]}",
        ]
        for r in records
    ]
    headers = ["model", "res", "backend", "batch", "params M", "params M (1k)", "GMACs", "median ms", "IQR ms",
               "runs", "status"]
    return tabulate(rows, headers=headers, disable_numparse=True)


def board_timing(args: argparse.Namespace) -> TimingConfig:
    """The board's protocol, with --rounds / --round-seconds (then: that time cap per round) when given."""
    timing = BOARD_TIMING
    if args.rounds is not None:
        timing = dataclasses.replace(timing, rounds=args.rounds)
    if args.round_seconds is not None:
        timing = dataclasses.replace(timing, max_round_s=args.round_seconds)
    return timing


def board_main(args: argparse.Namespace, calibration: torch.Tensor | None) -> int:
    from zoo.models import UnknownModelError

    with tqdm(desc="board", unit="step") as bar:

        def advance(what: str) -> None:
            bar.set_postfix_str(what[:60])
            bar.update(1)

        try:
            models = args.models or (dense_labels() if args.dense else None)
            run = run_board(args.board, models, args.res, args.backends, args.store, args.artifacts,
                            force=args.force, timing=board_timing(args), export_jobs=args.export_jobs,
                            calibration=calibration, on_progress=advance, export_only=args.export_only,
                            quiet=BOARD_QUIET if args.quiet else None)
        except (UnknownModelError, UnknownBackendError, BoardError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    spent = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in sorted(run.export_cpu_s.items()))
    if args.export_only:
        print(f"exports: {run.exports} jobs in {run.export_s:.0f} s ({spent or 'all cached'}); nothing timed")
        return 0
    print(format_table(run.records))
    if spent:
        print(f"\nexport seconds per runtime (jobs summed): {spent}")
    print(f"\nboard: {args.board}/README.md; {len(run.records)} records; exports {run.export_s:.0f} s "
          f"({run.exports} jobs), timing {run.timing_s:.0f} s, render {run.render_s:.0f} s, "
          f"total {run.total_s:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from zoo.models import UnknownModelError, list_models

    calibration = torch.load(args.calibration) if args.calibration else None
    if args.board:
        return board_main(args, calibration)
    args.store = args.store or DEFAULT_STORE
    models = args.models or list_models()
    backends = args.backends or available_backends()
    timing = TimingConfig(rounds=args.rounds if args.rounds is not None else TimingConfig.rounds,
                          min_round_s=args.round_seconds if args.round_seconds is not None else
                          TimingConfig.min_round_s)
    records: list[Measurement] = []
    try:
        for resolution in args.res or [None]:
            with tqdm(total=expected_steps(models, backends, timing), desc=f"measuring @{resolution or 'published'}",
                      unit="step") as bar:

                def advance(what: str) -> None:
                    bar.set_postfix_str(what)
                    bar.update(1)

                records += measure_models(
                    models, resolution, backends, args.store, num_classes=args.num_classes, force=args.force,
                    timing=timing, artifacts_dir=args.artifacts, on_progress=advance,
                    calibration_images=calibration,
                )
                bar.update(bar.total - bar.n)  # reused records take no steps
    except (UnknownModelError, UnknownBackendError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_table(records))
    print(f"\nstore: {args.store}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
