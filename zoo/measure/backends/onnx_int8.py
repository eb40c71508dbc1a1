"""ONNX Runtime int8 on CPU ('onnxruntime-cpu-int8-1t' / 'onnxruntime-cpu-int8'): the second int8 runtime.

The fp32 ONNX export (`onnx_runtime.export_onnx`, of the `prepare_for_export` copy) is quantised with ONNX
Runtime's own static quantiser (`onnxruntime.quantization.quantize_static`: QDQ format, per-channel int8 weights,
uint8 activations, MinMax calibration on the caller's images), then timed like the fp32 backend. The export is
checked by top-1 agreement with the fp32 eager model on a batch that is not the calibration batch.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from zoo.measure.backends.phone_common import (CallRunner, check_batch, export_inputs, make_calibration,
                                               top1_agreement)
from zoo.measure.latency import TimedBackend, TimingConfig

__all__ = ["OnnxRuntimeInt8Backend", "quantize_onnx"]


class _Reader:
    """The CalibrationDataReader protocol ONNX Runtime's quantiser pulls batches from."""

    def __init__(self, input_name: str, batches: list[torch.Tensor]) -> None:
        self._feeds = iter([{input_name: b.numpy()} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantize_onnx(fp32_path: Path, int8_path: Path, calibration: list[torch.Tensor]) -> None:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    input_name = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(fp32_path), str(int8_path), _Reader(input_name, calibration),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)


class OnnxRuntimeInt8Backend(TimedBackend):
    def __init__(self, threads: int | None = None, calibration_images: torch.Tensor | None = None) -> None:
        self.threads = threads
        self.calibration_images = calibration_images
        self.name = "onnxruntime-cpu-int8-1t" if threads == 1 else "onnxruntime-cpu-int8"
        self.batch_sizes = (1,)

    def available(self) -> tuple[bool, str]:
        try:
            import onnxruntime.quantization  # noqa: F401
        except ImportError as error:
            return False, f"onnxruntime quantization not importable: {error}"
        return True, ""

    def prepare(self, model: nn.Module, input_shape: tuple[int, ...], workdir: Path,
                config: TimingConfig) -> CallRunner:
        from zoo.measure.backends.onnx_runtime import OnnxRuntimeCpuBackend, export_onnx
        threads, exportable, example = export_inputs(model, input_shape, self.threads)
        fp32_path, int8_path = workdir / "model.fp32.onnx", workdir / "model.int8.onnx"
        with torch.no_grad():
            exporter = export_onnx(exportable, example, fp32_path)
        calibration = make_calibration(self.calibration_images, input_shape)
        quantize_onnx(fp32_path, int8_path, calibration.batches(1))
        session = OnnxRuntimeCpuBackend(threads=threads)._session(int8_path)
        input_name = session.get_inputs()[0].name

        def run(array: np.ndarray) -> np.ndarray:
            return session.run(None, {input_name: array})[0]

        details = {
            "threads": threads,
            "exporter": f"{exporter} + onnxruntime.quantization.quantize_static (QDQ, per-channel)",
            "artifact": str(int8_path),
            "calibration": calibration.source,
            "int8_top1_agreement": top1_agreement(run, exportable, check_batch(input_shape)),
        }
        feed = {input_name: example.numpy()}
        return CallRunner(lambda: session.run(None, feed), details, config)
