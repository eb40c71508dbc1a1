"""PyTorch eager backends: CPU with one thread or all usable threads; CUDA in fp32 or bf16 autocast.

Like every backend they time `zoo.models.export.prepare_for_export(model, resolution)`: the family's fused
(reparameterised) inference model with its per-size constants baked, which is what a deployment runs; the
caller's model is left as it was.

Timed with `torch.utils.benchmark.Timer.blocked_autorange`, which picks a block size so that timer overhead is
negligible, sets the thread count for the measurement and restores it, and synchronises the accelerator around
each block (so CUDA timings are of finished work, not of queued kernels). Under a protocol that counts runs
(`TimingConfig.runs_per_round`, the architecture board's), single calls are timed instead, as every other backend
does, so p90 and the trimmed mean are of calls, not of block averages.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils import benchmark

from zoo.measure.backends.spec import BackendSpec, per_thread_count
from zoo.measure.latency import TimedBackend, TimingConfig
from zoo.measure.machine import usable_cpus
from zoo.measure.memory import RSS_KIND, PeakRss
from zoo.models.export import prepare_for_export

__all__ = ["DECLARED", "CpuEagerBackend", "CudaBackend", "torch_threads"]


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run with `count` intra-op threads and restore the previous count afterwards, even on error."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _EagerRunner:
    def __init__(
        self,
        model: nn.Module,
        example: torch.Tensor,
        threads: int,
        autocast_dtype: torch.dtype | None,
        config: TimingConfig,
    ) -> None:
        self.model = model  # an eval-mode prepared copy
        self.threads = threads
        device_type = example.device.type

        def run() -> None:
            autocast = (
                torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
            )
            with torch.inference_mode(), autocast:
                model(example)

        with torch_threads(threads):
            for _ in range(config.warmup_calls):
                run()
        self.run = run
        self.sync = torch.cuda.synchronize if device_type == "cuda" else (lambda: None)
        self.timer = benchmark.Timer(stmt="run()", globals={"run": run}, num_threads=threads)
        self.details: dict = {"threads": threads, "device": str(example.device)}
        if autocast_dtype is not None:
            self.details["autocast"] = str(autocast_dtype).removeprefix("torch.")

    def time_round(self, config: TimingConfig) -> list[float]:
        if config.runs_per_round is not None:  # the board's protocol: single calls, counted (no blocks)
            return self._counted_round(config)
        times = list(self.timer.blocked_autorange(min_run_time=config.min_round_s).times)
        # A model slower than the round time yields one block: add single calls up to the minimum sample count.
        while len(times) < config.min_samples_per_round:
            times.extend(self.timer.timeit(number=1).times)
        return times

    def _counted_round(self, config: TimingConfig) -> list[float]:
        times: list[float] = []
        with torch_threads(self.threads):
            started = time.perf_counter()
            while not config.round_done(len(times), time.perf_counter() - started):
                self.sync()
                t0 = time.perf_counter()
                self.run()
                self.sync()
                times.append(time.perf_counter() - t0)
        return times

    def close(self) -> None:
        self.model = self.timer = self.run = None  # drop the copy (the timer's closure holds it too)


class CpuEagerBackend(TimedBackend):
    """PyTorch eager on CPU, batch 1: `threads=1` ('cpu-eager-1t') or all usable cores ('cpu-eager')."""

    def __init__(self, spec: BackendSpec, calibration_images: torch.Tensor | None = None) -> None:
        self.spec, self.name, self.threads, self.batch_sizes = spec, spec.name, spec.threads, spec.batch_sizes

    def _thread_count(self) -> int:
        return self.threads or usable_cpus()

    def prepare(
        self, model: nn.Module, input_shape: tuple[int, ...], workdir: Path, config: TimingConfig
    ) -> _EagerRunner:
        device = next(model.parameters()).device
        if device.type != "cpu":
            raise ValueError(f"{self.name} times CPU models; this one is on {device}")
        example = torch.randn(input_shape)
        with PeakRss() as rss:  # the prepared copy (its weights) and the warm-up calls' activations
            prepared = prepare_for_export(model, int(input_shape[-1]))
            runner = _EagerRunner(prepared, example, self._thread_count(), None, config)
        if rss.increase_mb is not None:
            runner.details.update(peak_memory_mb=rss.increase_mb, memory_kind=RSS_KIND)
        return runner


class CudaBackend(TimedBackend):
    """PyTorch eager on the first CUDA device, batch 1 and 32, fp32 ('cuda') or bf16 autocast ('cuda-bf16').

    The prepared copy is moved to the GPU, so the caller's CPU model is left as it was.
    """

    def __init__(self, spec: BackendSpec, calibration_images: torch.Tensor | None = None) -> None:
        self.spec, self.name, self.batch_sizes = spec, spec.name, spec.batch_sizes
        self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16}[spec.dtype]

    def available(self) -> tuple[bool, str]:
        if not torch.cuda.is_available():
            return False, "no CUDA device"
        if self.autocast_dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            return False, f"{torch.cuda.get_device_name(0)} has no bf16 support"
        return True, ""

    def prepare(
        self, model: nn.Module, input_shape: tuple[int, ...], workdir: Path, config: TimingConfig
    ) -> _EagerRunner:
        gpu_model = prepare_for_export(model, int(input_shape[-1])).to("cuda")
        example = torch.randn(input_shape, device="cuda")
        runner = _EagerRunner(gpu_model, example, torch.get_num_threads(), self.autocast_dtype, config)
        runner.details.update(gpu=torch.cuda.get_device_name(0), matmul_precision=torch.get_float32_matmul_precision())
        return runner


# Eager PyTorch on CPU (the reference every export is checked against): on the architecture board, measured after
# training and on the detector/segmenter rows at 1 thread. CUDA: batch 1 and 32, fp32 and bf16 autocast.
DECLARED = (
    *per_thread_count("cpu-eager", make=CpuEagerBackend, runtime="pytorch", exports=False, order=40,
                      architecture_board=True, one_thread={"matrix_default": True, "dense_rows": True}),
    BackendSpec("cuda", make=CudaBackend, runtime="pytorch-cuda", order=50, batch_sizes=(1, 32), matrix_default=True),
    BackendSpec("cuda-bf16", make=CudaBackend, runtime="pytorch-cuda", dtype="bf16", order=51, batch_sizes=(1, 32)),
)
