"""`python -m zoo.run runs.yaml --launcher slurm`: a SLURM job array of matrix workers, through submitit.

Every array task runs the same claim loop as a local worker (zoo/runner/matrix.py), so the tasks split the matrix
through the results store (which must live on a filesystem all nodes share, with working locks: see docs/distributed.md),
a resubmission only trains what is left, and local `zoo.run` processes or W&B agents can join in.

Pre-emption and time limits: submitit asks SLURM for a signal (USR2 by default, `SUBMITIT_PREEMPT_SIGNAL`)
`signal_delay_s` before the limit, and on it calls `MatrixWorker.checkpoint`, requeues the job and exits with
SystemExit. The SystemExit unwinds through training: `execute_run` records the run `interrupted`, the claim is
released on the way out, and the requeued task (or any other worker) claims the cell again and resumes it from its
last per-epoch checkpoint. SIGTERM is left to submitit (it ignores it), so the unwinding is never cut short.
`--launcher submitit-local` runs the same array through submitit's LocalExecutor, to try all this without SLURM.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from zoo.config import MatrixConfig
from zoo.results import ResultsStore
from zoo.results.store import newest
from zoo.runner.matrix import Progress, WorkerSpec, run_worker
from zoo.runner.plan import RunSpec, format_plan
from zoo.runner.workspace import Workspace

try:
    import submitit
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError:  # zoo.run without --launcher must not need it
    submitit = None
    Checkpointable = object
    DelayedSubmission = None

DEFAULT_ARRAY = 8
# Signal this long before the limit. The engine checkpoints at every epoch end, so this only has to cover
# unwinding (the `interrupted` record, the claim's release) and the requeue, not saving a checkpoint.
SIGNAL_DELAY_S = 120


class MatrixWorker(Checkpointable):
    """One array task: the claim loop of a `zoo.run … --worker` in-process, in the submitting directory."""

    def __init__(self, cwd: str, spec: WorkerSpec):
        self.cwd = cwd
        self.spec = spec

    def __call__(self) -> int:
        os.chdir(self.cwd)
        env = submitit.JobEnvironment()
        if env.num_tasks > 1:  # K GPUs per cell: one task per GPU, torchrun-style environment for init_distributed
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        spec = self.spec
        if os.environ.get("SLURM_CPUS_PER_TASK") and spec.threads is None:
            spec = replace(spec, threads=int(os.environ["SLURM_CPUS_PER_TASK"]))
        return run_worker(spec, handle_sigterm=False)  # submitit owns the signals (it ignores SIGTERM on purpose)

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """Called by submitit on pre-emption/timeout, before it requeues this task and raises SystemExit.

        Nothing to save here: the engine's per-epoch checkpoint is in the run dir, and the claim is released
        when the SystemExit unwinds past it. The requeued task is a fresh worker with the same spec.
        """
        print(f"[zoo] pre-empted or out of time: requeuing the worker of {self.spec.config}", file=sys.stderr,
              flush=True)
        return DelayedSubmission(MatrixWorker(self.cwd, self.spec))


def make_executor(launcher: str, folder: Path, *, name: str, time_min: int, gpus_per_run: int, array: int,
                  partition: str | None) -> Any:
    """submitit's executor: SLURM (sbatch) or LocalExecutor with the same parameters."""
    cluster = "slurm" if launcher == "slurm" else "local"
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    params: dict[str, Any] = dict(name=name, timeout_min=time_min, nodes=1, tasks_per_node=gpus_per_run,
                                  slurm_array_parallelism=array, slurm_signal_delay_s=SIGNAL_DELAY_S)
    if cluster == "slurm":
        params.update(gpus_per_node=gpus_per_run, slurm_partition=partition)
    executor.update_parameters(**params)
    return executor


def launch(matrix: MatrixConfig, ws: Workspace, plan: list[RunSpec], args: argparse.Namespace, spec: WorkerSpec,
           after: Callable[[], None]) -> int:
    """Submit the array, then (unless --no-wait) watch the store until the jobs end, and run `after` (measure,
    leaderboard)."""
    print(format_plan(plan), flush=True)
    todo = [s for s in plan if not s.done]
    if submitit is None:
        print("error: --launcher needs submitit (pip install submitit)", file=sys.stderr)
        return 2
    if args.launcher == "slurm" and shutil.which("sbatch") is None:
        print("error: --launcher slurm: no `sbatch` on this machine (run it on a SLURM login node; "
              "--launcher submitit-local tries the same array here)", file=sys.stderr)
        return 2
    started = time.monotonic()
    n = min(len(todo), args.array_parallelism or DEFAULT_ARRAY)
    codes: list[int] = []
    if todo:
        executor = make_executor(args.launcher, Path(args.slurm_dir), name=f"zoo-{matrix.name}",
                                 time_min=args.time, gpus_per_run=args.gpus_per_run, array=n,
                                 partition=args.partition)
        jobs = executor.submit_array([MatrixWorker(str(Path.cwd()), spec) for _ in range(n)])
        print(f"submitted {n} workers: {', '.join(j.job_id for j in jobs)} (logs in {args.slurm_dir})", flush=True)
        if args.no_wait:
            print("not waiting: when they are done, `python -m zoo.leaderboard` writes the board")
            return 0
        # by label: this node may plan other run ids than the GPU nodes record (ids cover device and precision,
        # which the nodes decide: see Progress)
        progress = Progress(todo, ws.store_dir, spec.since_offset, enabled=matrix.execution.progress, by_label=True)
        codes = _wait(jobs, progress)
        if codes is None:
            return 130
    print(_summary_line(todo, ws, spec.since_offset, time.monotonic() - started, n), flush=True)
    after()
    # each worker's own summary (computed with the run ids of its node) says whether its cells all settled well
    return 0 if all(code == 0 for code in codes) else 1


def _summary_line(todo: list[RunSpec], ws: Workspace, since: int, wall_s: float, workers: int) -> str:
    fresh = newest(ResultsStore(ws.store_dir).since(since)[0], key=lambda record: record.label)
    statuses = [fresh[s.config.label].status if s.config.label in fresh else None for s in todo]
    counts = {k: statuses.count(k) for k in ("finished", "diverged", "failed")}
    rate = 60 * sum(counts.values()) / wall_s if wall_s > 0 else 0.0
    return (f"summary: {len(todo)} cells: {counts['finished']} finished, {counts['diverged']} diverged, "
            f"{counts['failed']} failed in this submission; {wall_s:.0f}s wall, {rate:.2f} cells/min, "
            f"{workers} workers")


def _wait(jobs: list[Any], progress: Progress, poll_s: float = 2.0) -> list[int] | None:
    """Watch until every job ended; their exit codes (1 for a job that raised), None on Ctrl-C (the jobs keep
    running: they are the cluster's now)."""
    try:
        while not all(job.done() for job in jobs):
            progress.refresh()
            time.sleep(poll_s)
    except KeyboardInterrupt:
        progress.bar.write("stopped watching; the jobs keep running (scancel them to stop)")
        return None
    finally:
        progress.close()
    codes = []
    for job in jobs:
        try:
            codes.append(int(job.result()))
        except Exception as err:  # submitit re-raises the job's failure here
            progress.bar.write(f"job {job.job_id} failed: {str(err).splitlines()[0]} (see {job.paths.stderr})")
            codes.append(1)
    return codes
