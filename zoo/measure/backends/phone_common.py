"""What the phone-runtime backends share: calibration data, export checks against PyTorch, a timing loop.

Every export is checked before it is timed:
- fp32: the runtime's logits on a random input against the eager model's; the max abs error goes in the record
  and must be within `FP32_RTOL` of the logits' scale (max |ref|, at least 1).
- int8: top-1 agreement with the fp32 eager model on a check batch that is *not* the calibration batch
  (different seed), recorded; quantisation is expected to move logits, so agreement is reported, not enforced.

Calibration: int8 backends are given images (a [N, 3, H, W] tensor, e.g. training images) by the caller; they are
resized to the export size if needed. With none, a seeded synthetic batch is used and the record says so, since
random images calibrate activation ranges poorly and the int8 figures then bound the speed, not the accuracy.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.measure.latency import TimingConfig

__all__ = [
    "FP32_RTOL",
    "Calibration",
    "CallRunner",
    "ExportInputs",
    "ParityError",
    "check_fp32",
    "check_batch",
    "eager_logits",
    "export_inputs",
    "make_calibration",
    "top1_agreement",
]

FP32_RTOL = 1e-4
CHECK_BATCH = 8
SYNTHETIC_CALIBRATION = 8


class ExportInputs(NamedTuple):
    """What every phone export starts from: the thread count, the export-ready copy of the model, an example input."""

    threads: int
    exportable: nn.Module
    example: torch.Tensor


def export_inputs(model: nn.Module, input_shape: tuple[int, ...], threads: int | None) -> ExportInputs:
    from zoo.measure.machine import usable_cpus
    from zoo.models.export import prepare_for_export

    return ExportInputs(threads or usable_cpus(), prepare_for_export(model, int(input_shape[-1])),
                        torch.randn(input_shape))


class ParityError(RuntimeError):
    """The exported model's output differs from PyTorch's beyond tolerance."""


@dataclass(frozen=True)
class Calibration:
    """Calibration images at the export size and where they came from ('given' or 'synthetic')."""

    images: torch.Tensor
    source: str

    def batches(self, size: int = 1) -> list[torch.Tensor]:
        return list(self.images.split(size))


def _to_size(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    images = images.float()
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


def make_calibration(images: torch.Tensor | None, input_shape: Sequence[int]) -> Calibration:
    """The calibration set for an export of `input_shape`: the caller's images, else synthetic ones."""
    size = (int(input_shape[-2]), int(input_shape[-1]))
    if images is not None and len(images):
        return Calibration(_to_size(images, size), f"given ({len(images)} images)")
    generator = torch.Generator().manual_seed(1234)
    synthetic = torch.randn((SYNTHETIC_CALIBRATION, int(input_shape[1]), *size), generator=generator)
    return Calibration(synthetic, f"synthetic ({SYNTHETIC_CALIBRATION} random images)")


def check_batch(input_shape: Sequence[int], count: int = CHECK_BATCH) -> torch.Tensor:
    """Images for the int8 agreement check: a seed different from the calibration batch's."""
    generator = torch.Generator().manual_seed(4321)
    return torch.randn((count, *input_shape[1:]), generator=generator)


def eager_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return torch.cat([model(x).float() for x in images.split(1)])
    finally:
        model.train(was_training)


def check_fp32(run: Callable[[np.ndarray], np.ndarray], model: nn.Module, example: torch.Tensor) -> dict:
    """Run the export on `example`, compare with eager PyTorch; raise ParityError beyond tolerance."""
    reference = eager_logits(model, example).numpy()
    output = np.asarray(run(example.numpy()), dtype=np.float32).reshape(reference.shape)
    error = float(np.abs(output - reference).max())
    tolerance = FP32_RTOL * max(1.0, float(np.abs(reference).max()))
    if not error <= tolerance:  # also catches NaN
        raise ParityError(f"output differs from PyTorch: max abs err {error:.3g} > {tolerance:.3g}")
    return {"parity_max_abs_err": error, "parity_tolerance": tolerance}


def top1_agreement(run: Callable[[np.ndarray], np.ndarray], model: nn.Module, images: torch.Tensor) -> float:
    """Fraction of `images` (run one at a time, batch-1 export) whose top-1 equals the fp32 eager model's."""
    reference = eager_logits(model, images).argmax(dim=1).numpy()
    predicted = np.array([int(np.asarray(run(x.numpy())).reshape(-1).argmax()) for x in images.split(1)])
    return float((predicted == reference).mean())


class CallRunner:
    """A prepared model timed through one call on a fixed input (the PreparedModel protocol)."""

    def __init__(self, call: Callable[[], object], details: dict, config: TimingConfig,
                 close: Callable[[], None] | None = None) -> None:
        self.call = call
        self.details = details
        self._close = close
        for _ in range(max(config.warmup_calls, 3)):  # first runs allocate buffers / pack weights
            call()

    def time_round(self, config: TimingConfig) -> list[float]:
        times: list[float] = []
        started = time.perf_counter()
        while time.perf_counter() - started < config.min_round_s or len(times) < config.min_samples_per_round:
            t0 = time.perf_counter()
            self.call()
            times.append(time.perf_counter() - t0)
        return times

    def close(self) -> None:
        if self._close is not None:
            self._close()
        self.call = lambda: None
