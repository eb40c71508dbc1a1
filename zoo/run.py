"""`python -m zoo.run runs.yaml`: validate -> plan -> train what is missing -> measure -> leaderboard.

Any number of `zoo.run` processes (here or on hosts sharing the store's filesystem) split one matrix: each claims a
cell in the results store before training it (zoo/runner/claims.py), so no cell is trained twice and a dead
worker's cell is taken over. `--workers N` starts N workers here (one GPU or cores/N threads each),
`--launcher slurm` a SLURM job array of them through submitit. Also under torchrun:
`torchrun --nproc_per_node 8 -m zoo.run runs/imagenet.yaml` trains each run with DDP over the 8 GPUs.
Exit codes: 0 every cell finished (or diverged), 1 some run failed or was left, 130 interrupted, 2 config error.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from zoo.config import MatrixConfig, load_matrix
from zoo.config.tasks import dense_recipe_note
from zoo.config.typed import ConfigError
from zoo.results import ResultsStore
from zoo.runner.claims import results_offset
from zoo.runner.matrix import Progress, WorkerSpec, finalize, run_here, summarize
from zoo.runner.plan import RunSpec, build_plan, format_plan
from zoo.runner.sources import pending_sources
from zoo.runner.workspace import Workspace, workspace_for


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m zoo.run", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the matrix file, e.g. runs.yaml")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--only", action="append", metavar="KEY=VALUE[,VALUE]",
                        help="run a subset: model=, recipe=, sampler=, seed=, task= (repeatable)")
    parser.add_argument("--no-measure", action="store_true", help="skip latency/FLOPs measurement")
    parser.add_argument("--no-leaderboard", action="store_true", help="skip regenerating the leaderboard")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="N worker processes here: one GPU each, or cores/N CPU threads each")
    parser.add_argument("--gpus-per-run", type=int, default=1, metavar="K",
                        help="train each cell with DDP over K GPUs (torchrun); gloo CPU processes without GPUs")
    parser.add_argument("--lease-s", type=float, default=None, metavar="S",
                        help="claim lease: a worker silent for S seconds loses its cell ($ZOO_LEASE_S, default 120)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: execution.threads)")
    cluster = parser.add_argument_group("cluster (submitit)")
    cluster.add_argument("--launcher", choices=("slurm", "submitit-local"), default=None,
                         help="submit a job array of workers (submitit-local: the same through submitit's "
                              "LocalExecutor, to try it without SLURM)")
    cluster.add_argument("--partition", default=None)
    cluster.add_argument("--time", type=int, default=240, metavar="MIN", help="time limit per job (minutes)")
    cluster.add_argument("--array-parallelism", type=int, default=None, metavar="N",
                         help="array size / jobs at once (default: min(cells, 8))")
    cluster.add_argument("--slurm-dir", default="slurm_logs", help="submitit's folder (logs, pickles)")
    cluster.add_argument("--no-wait", action="store_true", help="submit and return; do not measure")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a child of --workers
    parser.add_argument("--since-offset", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _worker_spec(args: argparse.Namespace, since: int) -> WorkerSpec:
    """What each worker (a local child, a SLURM task) is told: same matrix, same subset, same invocation."""
    return WorkerSpec(args.config, tuple(args.only or ()), since, args.lease_s)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    slots = None
    try:
        matrix = load_matrix(args.config)
        if not args.worker:  # a default that could not hold beside the file's values, and what is used instead
            for note in matrix.adapted_defaults:
                print(f"note: {args.config}: {note}", file=sys.stderr)
            if dense_recipe_note(matrix.tasks):  # once: the recipe knobs a dense task leaves out
                print(f"note: {args.config}: {dense_recipe_note(matrix.tasks)}", file=sys.stderr)
        ws = workspace_for(matrix, Path.cwd())
        if args.workers is None and not args.worker and args.launcher is None:
            args.workers = matrix.execution.workers  # the matrix file's default; the command line wins
        # taken before the plan: a run that fails from here on is not retried by this invocation
        since = args.since_offset if args.since_offset is not None else results_offset(ws.store_dir)
        # workers run cells on K processes each: their run ids (which cover the world size) are planned so
        many = args.workers is not None or args.gpus_per_run > 1 or args.launcher is not None
        plan = build_plan(matrix, ResultsStore(ws.store_dir), args.only,
                          world_size=args.gpus_per_run if many else None)
        if not args.dry_run and not args.worker and pending_sources(plan):  # `init: {matrix: ...}` sources
            code = _train_sources_first(args, pending_sources(plan))
            if code is not None:
                return code
            plan = build_plan(matrix, ResultsStore(ws.store_dir), args.only,
                              world_size=args.gpus_per_run if many else None)
        todo = [spec for spec in plan if not spec.done]
        if args.launcher is None and (args.workers is not None or args.gpus_per_run > 1) and not args.dry_run:
            # Deferred here and below: only the path this invocation takes is imported (a --dry-run or a worker
            # child stays light; SLURM's launch pulls submitit, the data check the data sets' readers).
            from zoo.runner.workers import detect_resources, plan_slots

            n = 1 if args.workers is None else args.workers
            slots = plan_slots(n, args.gpus_per_run, detect_resources(), _worker_spec(args, since).argv(),
                               ws.output_dir / "workers")
        if todo and not args.worker:  # the data, before anything is written: a problem there exits 2
            from zoo.data.check import check_matrix_data

            check_matrix_data(matrix, args.config, world_size=max(spec.config.world_size or 1 for spec in todo),
                              build=not args.dry_run)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(format_plan(plan))
        return 0
    if args.launcher is not None:
        from zoo.runner.slurm import launch

        return launch(matrix, ws, plan, args, _worker_spec(args, since), after=lambda: _finalize(matrix, ws, args))
    if slots is not None:
        return _run_with_workers(matrix, ws, plan, args, since, slots)
    return run_here(matrix, ws, plan, since, lease_s=args.lease_s, threads=args.threads, worker=args.worker,
                    after=lambda: _finalize(matrix, ws, args))


def _train_sources_first(args: argparse.Namespace, sources: dict[str, list[str]]) -> int | None:
    """The classification cells a fine-tuning matrix starts from and that are not finished: trained now, by this
    same command on their own matrix (its workers, GPUs, launcher; their claims), with no measurement or board of
    theirs. Returns an exit code to stop with (config error, interrupted), else None: the plan is made again and a
    cell whose source still is not finished is recorded as not run."""
    if args.no_wait:
        raise ConfigError(f"init: source cells of {', '.join(sources)} are not trained yet and --no-wait cannot "
                          f"wait for them: run python -m zoo.run {next(iter(sources))} first")
    passed = [] if args.workers is None else ["--workers", str(args.workers)]
    for flag, value in (("--gpus-per-run", args.gpus_per_run), ("--lease-s", args.lease_s), ("--threads", args.threads),
                        ("--launcher", args.launcher), ("--partition", args.partition)):
        if value is not None and (flag != "--gpus-per-run" or value != 1):
            passed += [flag, str(value)]
    if args.launcher is not None:
        passed += ["--time", str(args.time), "--slurm-dir", args.slurm_dir]
    for path, only in sources.items():
        print(f"init: training the source cells of {path} first ({' '.join(only)})", flush=True)
        code = main([path, *[arg for item in only for arg in ("--only", item)], *passed, "--no-measure",
                     "--no-leaderboard"])
        if code in (2, 130):
            return code
    return None


def _finalize(matrix: MatrixConfig, ws: Workspace, args: argparse.Namespace) -> None:
    finalize(matrix, ws, measure=not args.no_measure, leaderboard=not args.no_leaderboard, lease_s=args.lease_s)


def _run_with_workers(matrix: MatrixConfig, ws: Workspace, plan: list[RunSpec], args: argparse.Namespace,
                      since: int, slots) -> int:
    from zoo.runner.workers import report_crashes, run_workers

    todo = [spec for spec in plan if not spec.done]
    print(format_plan(plan), flush=True)
    started = time.monotonic()
    if todo:
        progress = Progress(todo, ws.store_dir, since, enabled=matrix.execution.progress)
        codes, interrupted = run_workers(slots, progress)
        for line in report_crashes(slots, codes):
            print(line, file=sys.stderr)
        if interrupted:
            print("interrupted: rerun the same command to resume", file=sys.stderr)
            return 130
    summary = summarize([s.run_id for s in todo], ws.store_dir, since, time.monotonic() - started)
    print(summary.line(len(slots)), flush=True)
    _finalize(matrix, ws, args)
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(main())
