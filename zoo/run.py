"""`python -m zoo.run runs.yaml`: validate -> plan -> train what is missing -> measure -> leaderboard.

Also under torchrun: `torchrun --nproc_per_node 8 -m zoo.run runs/imagenet.yaml` trains each run with DDP.
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from tqdm.auto import tqdm

from zoo.config import MatrixConfig, load_matrix
from zoo.training.distributed import DistContext, barrier, init_distributed
from zoo.runner.execute import execute_run
from zoo.runner.workspace import Workspace, check_data, workspace_for
from zoo.runner.plan import build_plan, format_plan
from zoo.results import ResultsStore
from zoo.config.typed import ConfigError


def _raise_interrupt(signum, frame):  # SIGTERM (e.g. a cluster pre-emption) is recorded like Ctrl-C
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m zoo.run", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the matrix file, e.g. runs.yaml")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--only", action="append", metavar="KEY=VALUE[,VALUE]",
                        help="run a subset: model=, recipe=, sampler=, seed= (repeatable)")
    parser.add_argument("--no-measure", action="store_true", help="skip latency/FLOPs measurement")
    parser.add_argument("--no-leaderboard", action="store_true", help="skip regenerating the leaderboard")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        matrix = load_matrix(args.config)
        ws = workspace_for(matrix, Path.cwd())
        store = ResultsStore(ws.store_dir)
        plan = build_plan(matrix, store, args.only)
        if not args.dry_run and any(not spec.done for spec in plan):
            check_data(matrix)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(format_plan(plan))
        return 0

    ctx: DistContext = init_distributed(matrix.execution.device)
    if matrix.execution.threads and ctx.device.type == "cpu":
        import torch

        torch.set_num_threads(matrix.execution.threads)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    todo = [spec for spec in plan if not spec.done]
    if ctx.is_main:
        print(format_plan(plan), flush=True)
    try:
        for spec in tqdm(todo, desc="matrix", unit="run", disable=not (ctx.is_main and matrix.execution.progress)):
            record = execute_run(spec.config, ws, ctx, store)
            if ctx.is_main:
                tqdm.write(record.one_line())
            barrier(ctx)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    if ctx.is_main:
        _after_training(matrix, ws, args)
    return 0


def _after_training(matrix: MatrixConfig, ws: Workspace, args: argparse.Namespace) -> None:
    """Measurement and the leaderboard read the store, so they also cover runs of earlier invocations."""
    if matrix.measure.enabled and not args.no_measure:
        from zoo.measure.runs import measure_matrix

        measure_matrix(matrix, ws.store_dir, ws.output_dir)
    if not args.no_leaderboard:
        from zoo.report.leaderboard import write_leaderboard

        path = write_leaderboard(ws.store_dir, title=matrix.name, wandb=matrix.wandb, wandb_dir=ws.output_dir)
        print(f"leaderboard: {path}")


if __name__ == "__main__":
    sys.exit(main())
