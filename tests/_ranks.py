"""Start the gloo ranks of a test's DDP worker the way torchrun describes them (RANK, WORLD_SIZE, MASTER_ADDR/PORT
in the environment, `env://` rendezvous), but forked from a server that imported torch, timm, torchmetrics and
zoo once.

Why not torchrun here: each of its ranks is a new interpreter, and importing torch + timm + torchmetrics + zoo costs
6-7 CPU-seconds per process on the 2-core development machine (measured with -X importtime: torchvision pulls in
torch._dynamo, torchmetrics pulls in transformers). The DDP tests started 26 such interpreters, most of the
multiprocess group's time. What the ranks run is unchanged: `init_distributed` reads the same variables torchrun
sets, and each rank is a fresh process (the resume test's "new process" still holds). torchrun itself stays
covered where zoo launches it: `zoo.run --gpus-per-run 2` in tests/test_dense_ddp.py.
"""
from __future__ import annotations

import importlib
import multiprocessing
import os
import socket
import traceback
from pathlib import Path

PRELOAD = ["torch", "timm", "torchmetrics", "zoo.training.engine", "zoo.runner.execute", "zoo.runner.plan", "zoo.run",
           "zoo.measure.__main__"]  # the last two for tests/_cli.py's commands
_context: multiprocessing.context.BaseContext | None = None


def _forkserver() -> multiprocessing.context.BaseContext:
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(env: dict[str, str], target: str, args: tuple, error_file: str) -> None:
    os.environ.update(env)
    import torch

    torch.set_num_threads(1)  # one thread a rank, as OMP_NUM_THREADS=1 gives under torchrun
    try:
        module, function = target.split(":")
        getattr(importlib.import_module(module), function)(*args)
    except BaseException:
        # The forkserver's stderr is whatever the first test's capture left: the parent reads this file instead.
        Path(error_file).write_text(traceback.format_exc())
        raise


def run_ranks(target: str, nproc: int, *args: object, error_dir: Path, timeout: float = 300) -> None:
    """Run `module:function(*args)` on `nproc` ranks of one gloo group; fail with the first failing rank's
    traceback. nproc=1 is a plain single-process run (WORLD_SIZE 1, no process group)."""
    context = _forkserver()
    port = str(_free_port())
    error_dir.mkdir(parents=True, exist_ok=True)
    processes = []
    for rank in range(nproc):
        env = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc),
               "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
               "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
        process = context.Process(target=_rank_main, args=(env, target, args, str(error_dir / f"rank{rank}.err")),
                                  daemon=True)
        process.start()
        processes.append(process)
    try:
        for process in processes:
            process.join(timeout)
    finally:
        for process in processes:  # a rank stuck in a collective after its peer died
            if process.is_alive():
                process.kill()
                process.join()
    failed = [(rank, p.exitcode) for rank, p in enumerate(processes) if p.exitcode != 0]
    if failed:
        errors = [(error_dir / f"rank{rank}.err") for rank, _ in failed]
        detail = "\n".join(e.read_text()[-3000:] for e in errors if e.is_file())
        raise AssertionError(f"{target} on {nproc} ranks: exit codes {failed}\n{detail}")
