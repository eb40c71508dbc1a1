"""int8 accuracy of a trained model: fp32 top-1 and int8 top-1 per int8 runtime, from plain tensors.

`int8_accuracy(model, calibration_images, val_images, val_labels)` quantises `model` through the int8 latency
backends themselves (each runtime's all-core int8 backend, as declared: `zoo.measure.backends.
int8_accuracy_backends`, e.g. "executorch-xnnpack" -> `executorch-xnnpack-int8`, "onnxruntime" ->
`onnxruntime-cpu-int8`), so the accuracy is that of the very graph their latency columns time: the same export
preparation, export and runtime. Calibrated on `calibration_images` (training images, [N, 3, H, W]), the export is evaluated
image by image (batch-1 graphs, as deployed) on the validation tensors, at the validation images' resolution.
The fp32 figure is the eager PyTorch model on the same images. A runtime that is not installed or fails to
export gives a row with its status and reason, not an exception.
"""
from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from zoo.measure.backends import default_int8_runtimes, get_backend, int8_accuracy_backends
from zoo.measure.backends.common import ExportedBackend, eager_logits, predictions

__all__ = ["Int8Accuracy", "int8_accuracy"]


@dataclass(frozen=True)
class Int8Accuracy:
    runtime: str
    status: str  # "ok", "skipped" (runtime missing) or "failed"
    fp32_top1: float
    int8_top1: float | None
    images: int
    calibration_images: int
    reason: str = ""

    @property
    def drop(self) -> float | None:
        """fp32 top-1 minus int8 top-1, in points (%)."""
        return None if self.int8_top1 is None else self.fp32_top1 - self.int8_top1

    def as_dict(self) -> dict:
        return {**asdict(self), "drop": self.drop}


def _top1(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * float((predicted == labels).float().mean())


def _int8_top1(backend: ExportedBackend, model: nn.Module, val_images: torch.Tensor, val_labels: torch.Tensor,
               workdir: Path) -> float:
    exported = backend.load(model, (1, *val_images.shape[1:]), workdir, check_int8=False)
    return _top1(predictions(exported.run, model, val_images), val_labels)


def int8_accuracy(
    model: nn.Module,
    calibration_images: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    runtimes: Sequence[str] | None = None,
    workdir: Path | None = None,
) -> list[Int8Accuracy]:
    """fp32 and int8 top-1 (%) of `model` on (`val_images`, `val_labels`), one row per int8 runtime (default:
    the int8 runtimes a matrix evaluates by default)."""
    backend_of = int8_accuracy_backends()
    runtimes = default_int8_runtimes() if runtimes is None else runtimes
    unknown = set(runtimes) - set(backend_of)
    if unknown:
        raise ValueError(f"unknown int8 runtimes {sorted(unknown)}; known: {list(backend_of)}")
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="zoo-int8-") as scratch:
            return int8_accuracy(model, calibration_images, val_images, val_labels, runtimes, Path(scratch))
    fp32_top1 = _top1(eager_logits(model, val_images.float()).argmax(dim=1), val_labels)
    rows: list[Int8Accuracy] = []
    for runtime in runtimes:
        common = dict(runtime=runtime, fp32_top1=fp32_top1, images=len(val_images),
                      calibration_images=len(calibration_images))
        backend = get_backend(backend_of[runtime], calibration_images=calibration_images)
        ok, why_not = backend.available()
        if not ok:
            rows.append(Int8Accuracy(status="skipped", int8_top1=None, reason=f"not installed: {why_not}", **common))
            continue
        try:
            int8_top1 = _int8_top1(backend, model, val_images, val_labels, workdir / runtime)
        except Exception as error:  # one runtime failing must not hide the others' figures
            rows.append(Int8Accuracy(status="failed", int8_top1=None, reason=f"{type(error).__name__}: "
                                     f"{str(error)[:200]}", **common))
            continue
        rows.append(Int8Accuracy(status="ok", int8_top1=int8_top1, **common))
    return rows
