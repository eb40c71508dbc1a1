"""Run a zoo command (`python -m zoo.run ...`) as a new process forked from the server of tests/_ranks.py, which
imported torch, timm, torchmetrics and zoo once: the process is real (its own pid, to kill -9; its own W&B service,
signals, exit code and output files), only the 6-7 CPU-seconds of imports a new interpreter pays on the 2-core
development machine are skipped.

For the second and later processes of a test. Each entry point keeps at least one test that starts it as a new
interpreter, exactly as a user types it (tests/test_matrix_e2e.py, test_train_cli.py, test_sweep.py,
test_measure_resume.py, test_layout.py, test_gpu_check.py).
"""
from __future__ import annotations

import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path

from _ranks import _forkserver


def _command_main(module: str, argv: list[str], cwd: str, env: dict[str, str], out: str, err: str) -> None:
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for path, fd in ((out, 1), (err, 2)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = [module, *argv]
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a new interpreter
    sys.exit(importlib.import_module(module).main(list(argv)))


class Forked:
    """The parts of `subprocess.Popen` the tests use, for a command forked from the preloaded server."""

    def __init__(self, module: str, argv: list[str], cwd: Path, env: dict[str, str] | None = None):
        self._dir = tempfile.mkdtemp(prefix="zoo-cli-")  # its output files, removed with this object
        weakref.finalize(self, shutil.rmtree, self._dir, True)
        self._out, self._err = os.path.join(self._dir, "stdout"), os.path.join(self._dir, "stderr")
        self.args = [module, *argv]
        self._process = _forkserver().Process(
            target=_command_main, args=(module, list(argv), str(cwd), dict(os.environ if env is None else env),
                                        self._out, self._err))
        self._process.start()

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self._process.exitcode

    def kill(self) -> None:
        if self._process.exitcode is None:
            self._process.kill()

    def output(self) -> tuple[str, str]:
        return Path(self._out).read_text(errors="replace"), Path(self._err).read_text(errors="replace")

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait()
            raise
        return self.output()


def run_command(module: str, *argv: str, cwd: Path, env: dict[str, str] | None = None,
                timeout: float = 600) -> subprocess.CompletedProcess:
    """`subprocess.run([python, -m, module, *argv], capture_output=True, text=True)`, forked."""
    process = Forked(module, list(argv), cwd, env)
    out, err = process.communicate(timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)
