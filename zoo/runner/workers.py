"""`python -m zoo.run runs.yaml --workers N [--gpus-per-run K]`: N worker processes on this machine.

Each worker is a `python -m zoo.run runs.yaml --worker` child (or, with K > 1, a `torchrun --nproc_per_node K`
group of them) that runs the shared claim loop (zoo/runner/matrix.py), so local workers, separately started
`zoo.run` processes and SLURM jobs all split one matrix through the results store. A worker gets its own GPUs
(`CUDA_VISIBLE_DEVICES`) or, on a CPU machine, its share of the cores (threads = cores // (N·K)): small models do
not use many cores well, so two 1-thread processes train more images/s than one 2-thread process.

The parent only watches: one progress view from the results store and the claims directory, one summary, then
(in zoo/run.py) measurement and the leaderboard, once. Workers run in their own sessions, so a Ctrl-C reaches the
parent alone and it forwards exactly one SIGTERM to each worker (recorded `interrupted`, resumable).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from zoo.config.recipes import REPO_ROOT
from zoo.config.typed import ConfigError
from zoo.runner.matrix import Progress

STOP_GRACE_S = 60.0  # how long interrupted workers get to write their `interrupted` records


@dataclass(frozen=True)
class Resources:
    gpus: tuple[str, ...]  # CUDA device ids this process may hand out
    cores: int


@dataclass(frozen=True)
class WorkerSlot:
    index: int
    command: tuple[str, ...]
    env: dict[str, str]  # set on top of this process's environment
    log_path: Path
    describe: str


def detect_resources() -> Resources:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(count)]
    return Resources(tuple(ids[:count]), cores)


def plan_slots(
    n: int,
    gpus_per_run: int,
    res: Resources,
    worker_args: list[str],
    log_dir: Path,
    warn=lambda line: print(line, file=sys.stderr),
) -> list[WorkerSlot]:
    """The command and environment of each of `n` workers. Raises ConfigError when the GPUs do not divide."""
    if n < 1 or gpus_per_run < 1:
        raise ConfigError("--workers and --gpus-per-run must be at least 1")
    if res.gpus and n * gpus_per_run > len(res.gpus):
        raise ConfigError(f"--workers {n} x --gpus-per-run {gpus_per_run} needs {n * gpus_per_run} GPUs; "
                          f"this machine shows {len(res.gpus)} ({','.join(res.gpus)})")
    if not res.gpus and gpus_per_run > 1:
        warn(f"warning: no CUDA GPU here: --gpus-per-run {gpus_per_run} is meant for GPUs; each cell runs as "
             f"{gpus_per_run} gloo CPU processes instead (a functional test, not a speed-up)")
    per_process = n * gpus_per_run if not res.gpus else n
    threads = max(1, res.cores // per_process)
    slots = []
    for i in range(n):
        env = {"OMP_NUM_THREADS": str(threads),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        if res.gpus:
            devices = res.gpus[i * gpus_per_run:(i + 1) * gpus_per_run]
            env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
            describe = f"GPU {','.join(devices)}"
        else:
            describe = f"{threads} CPU thread{'s' if threads > 1 else ''}" + (
                f" x {gpus_per_run} processes" if gpus_per_run > 1 else "")
        zoo_run = ["-m", "zoo.run", *worker_args, "--threads", str(threads)]
        if gpus_per_run > 1:  # one torchrun group per worker; rank 0 claims, every rank trains the cell
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                       "--nproc_per_node", str(gpus_per_run), *zoo_run]
        else:
            command = [sys.executable, *zoo_run]
        slots.append(WorkerSlot(i, tuple(command), env, log_dir / f"worker-{i}.log", describe))
    return slots


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)  # zoo.run turns it into KeyboardInterrupt: recorded, resumable
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_workers(slots: list[WorkerSlot], progress: Progress, poll_s: float = 1.0) -> tuple[list[int], bool]:
    """Start the workers, show progress until all exit; returns their exit codes and whether we were interrupted."""
    slots[0].log_path.parent.mkdir(parents=True, exist_ok=True)
    for slot in slots:
        progress.bar.write(f"worker {slot.index}: {slot.describe}, log {slot.log_path}")
    procs: list[subprocess.Popen] = []
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    interrupted = False
    try:
        for slot in slots:
            with open(slot.log_path, "ab") as log:
                procs.append(subprocess.Popen(list(slot.command), env={**os.environ, **slot.env}, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True))
        while any(p.poll() is None for p in procs):
            progress.refresh()
            time.sleep(poll_s)
    except KeyboardInterrupt:
        interrupted = True
        progress.bar.write("interrupted: stopping the workers (each records its run as interrupted)")
        _stop(procs)
    finally:
        signal.signal(signal.SIGTERM, previous)
    progress.close()
    return [p.returncode for p in procs], interrupted


def report_crashes(slots: list[WorkerSlot], codes: list[int]) -> list[str]:
    """Lines for workers that ended other than 0 (all settled) or 1 (some run failed)."""
    return [f"worker {s.index} exited with code {c}: see {s.log_path}" for s, c in zip(slots, codes)
            if c not in (0, 1)]
