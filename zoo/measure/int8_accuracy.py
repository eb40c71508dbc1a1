"""int8 accuracy of a trained model: fp32 top-1 and int8 top-1 per int8 runtime, from plain tensors.

`int8_accuracy(model, calibration_images, val_images, val_labels)` quantises `model` with each runtime's own int8
path (ExecuTorch/XNNPACK PT2E; ONNX Runtime static QDQ), calibrated on `calibration_images` (training images,
[N, 3, H, W]), and evaluates the quantised export image by image (batch-1 graphs, as deployed) on the validation
tensors, at the validation images' resolution. The fp32 figure is the eager PyTorch model on the same images.
A runtime that is not installed or fails to export gives a row with its status and reason, not an exception.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from zoo.measure.backends.phone_common import eager_logits

__all__ = ["INT8_RUNTIMES", "Int8Accuracy", "int8_accuracy"]

INT8_RUNTIMES = ("executorch-xnnpack", "onnxruntime")
Runner = Callable[[np.ndarray], np.ndarray]


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


def _executorch_runner(model: nn.Module, example: torch.Tensor, calibration: list[torch.Tensor], workdir: Path
                       ) -> Runner:
    from zoo.measure.backends.executorch_xnnpack import export_executorch, load_executorch

    path = workdir / "model.int8.pte"
    export_executorch(model, example, path, calibration)
    method, _program = load_executorch(path)
    return lambda array: method.execute([torch.from_numpy(array)])[0].numpy()


def _onnxruntime_runner(model: nn.Module, example: torch.Tensor, calibration: list[torch.Tensor], workdir: Path
                        ) -> Runner:
    import onnxruntime as ort

    from zoo.measure.backends.onnx_int8 import quantize_onnx
    from zoo.measure.backends.onnx_runtime import export_onnx

    fp32_path, int8_path = workdir / "model.fp32.onnx", workdir / "model.int8.onnx"
    with torch.no_grad():
        export_onnx(model, example, fp32_path)
    quantize_onnx(fp32_path, int8_path, calibration)
    session = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda array: session.run(None, {name: array})[0]


_RUNNERS: dict[str, Callable[..., Runner]] = {
    "executorch-xnnpack": _executorch_runner,
    "onnxruntime": _onnxruntime_runner,
}


def _top1(predicted: np.ndarray, labels: torch.Tensor) -> float:
    return 100.0 * float((predicted == labels.numpy()).mean())


def int8_accuracy(
    model: nn.Module,
    calibration_images: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    runtimes: Sequence[str] = INT8_RUNTIMES,
    workdir: Path | None = None,
) -> list[Int8Accuracy]:
    """fp32 and int8 top-1 (%) of `model` on (`val_images`, `val_labels`), one row per int8 runtime."""
    from zoo.models.export import prepare_for_export

    unknown = set(runtimes) - set(_RUNNERS)
    if unknown:
        raise ValueError(f"unknown int8 runtimes {sorted(unknown)}; known: {list(_RUNNERS)}")
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="zoo-int8-") as scratch:
            return int8_accuracy(model, calibration_images, val_images, val_labels, runtimes, Path(scratch))
    resolution = int(val_images.shape[-1])
    exportable = prepare_for_export(model, resolution)
    fp32_top1 = _top1(eager_logits(exportable, val_images).argmax(dim=1).numpy(), val_labels)
    calibration = [x.float() for x in calibration_images.split(1)]
    example = val_images[:1].float()
    rows: list[Int8Accuracy] = []
    for runtime in runtimes:
        common = dict(runtime=runtime, fp32_top1=fp32_top1, images=len(val_images),
                      calibration_images=len(calibration_images))
        try:
            folder = workdir / runtime
            folder.mkdir(parents=True, exist_ok=True)
            run = _RUNNERS[runtime](exportable, example, calibration, folder)
        except ImportError as error:
            rows.append(Int8Accuracy(status="skipped", int8_top1=None, reason=f"not installed: {error}", **common))
            continue
        except Exception as error:  # one runtime failing must not hide the others' figures
            rows.append(Int8Accuracy(status="failed", int8_top1=None, reason=f"{type(error).__name__}: "
                                     f"{str(error)[:200]}", **common))
            continue
        predicted = np.array([int(np.asarray(run(x.float().numpy())).reshape(-1).argmax())
                              for x in val_images.split(1)])
        rows.append(Int8Accuracy(status="ok", int8_top1=_top1(predicted, val_labels), **common))
    return rows
