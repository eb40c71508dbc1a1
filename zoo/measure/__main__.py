"""`python -m zoo.measure`: measure params, GMACs and latency of zoo models, store them, print a table.

`--board DIR` hands over to the architecture board, which lives at the report layer (`python -m
zoo.report.architectures DIR --measure`, the same options): it is run as that command, since measurement sits
below the report stage in the flow and does not import it.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import torch
from tabulate import tabulate
from tqdm import tqdm

from zoo.measure.backends import UnknownBackendError, available_backends, backend_names
from zoo.measure.latency import TimingConfig
from zoo.measure.store import Measurement
from zoo.measure.suite import expected_steps, measure_models
from zoo.models import UnknownModelError, list_models

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
    parser.add_argument("--store", help=f"JSON-lines store (default {DEFAULT_STORE})")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier head size (default 1000)")
    parser.add_argument("--force", action="store_true", help="re-measure even when the store has a record")
    parser.add_argument("--rounds", type=int, help=f"interleaved timing rounds (default {TimingConfig.rounds})")
    parser.add_argument("--round-seconds", type=float, help=f"time per round (default {TimingConfig.min_round_s})")
    parser.add_argument("--artifacts", help="folder for exported ONNX / Core ML files (default: beside the store)")
    parser.add_argument("--calibration", help="int8 calibration images: a torch.save'd [N, 3, H, W] tensor "
                        "(default: synthetic, recorded as such)")
    parser.add_argument("--board", metavar="DIR",
                        help="the architecture board: runs `python -m zoo.report.architectures DIR --measure` with "
                        "the other options (see its --help: --export-jobs, --dense, --export-only, --quiet)")
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


def board_main(argv: Sequence[str]) -> int:
    """`--board DIR ...` as `python -m zoo.report.architectures DIR --measure ...` (its exit status)."""
    rest = list(argv)
    at = next(i for i, arg in enumerate(rest) if arg == "--board" or arg.startswith("--board="))
    taken = 1 if "=" in rest[at] else 2
    if taken == 2 and at + 1 >= len(rest):
        print("error: --board needs a folder (DIR)", file=sys.stderr)
        return 2
    directory = rest[at].partition("=")[2] if taken == 1 else rest[at + 1]
    del rest[at:at + taken]
    command = [sys.executable, "-m", "zoo.report.architectures", directory, "--measure", *rest]
    return subprocess.run(command, check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(arg == "--board" or arg.startswith("--board=") for arg in argv):
        return board_main(argv)
    args = parse_args(argv)
    calibration = torch.load(args.calibration) if args.calibration else None
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
