"""ONNX Runtime int8 on CPU ('onnxruntime-cpu-int8-1t' / 'onnxruntime-cpu-int8'): the second int8 runtime.

The fp32 ONNX export (`onnx_runtime.onnx_file`, of the `prepare_for_export` copy: the very file the fp32 backend
times) is quantised with ONNX Runtime's own static quantiser (`onnxruntime.quantization.quantize_static`: QDQ
format, per-channel int8 weights, uint8 activations, MinMax calibration on the caller's images), then timed like
the fp32 backend. The export is
checked by top-1 agreement with the fp32 eager model on a batch that is not the calibration batch (`common`).
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from zoo.measure.backends.common import Calibration, Exported, ExportedBackend, ExportSource
from zoo.measure.backends.onnx_runtime import loaded_session, onnx_file
from zoo.measure.backends.spec import per_thread_count

__all__ = ["DECLARED", "OnnxRuntimeInt8Backend", "quantize_onnx"]


class _Reader:
    """The CalibrationDataReader protocol ONNX Runtime's quantiser pulls batches from."""

    def __init__(self, input_name: str, batches: list[torch.Tensor]) -> None:
        self._feeds = iter([{input_name: b.numpy()} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantize_onnx(fp32_path: Path, int8_path: Path, calibration: list[torch.Tensor]) -> None:
    import onnxruntime as ort  # deferred: an optional runtime, loaded only when quantising
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    input_name = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(fp32_path), str(int8_path), _Reader(input_name, calibration),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)


class OnnxRuntimeInt8Backend(ExportedBackend):
    runtime_packages = ("onnx", "onnxruntime", "onnxscript")

    def available(self) -> tuple[bool, str]:
        try:  # deferred: an optional runtime
            import onnxruntime.quantization  # noqa: F401
        except ImportError as error:
            return False, f"onnxruntime quantization not importable: {error}"
        return True, ""

    def write_export(self, source: ExportSource, folder: Path, calibration: Calibration | None) -> dict:
        if calibration is None:
            raise ValueError(f"{self.name} quantises: it needs a calibration set")
        fp32_path, exporter = onnx_file(source, folder)
        int8_path = folder / "model.int8.onnx"
        quantize_onnx(fp32_path, int8_path, calibration.batches(1))
        return {"exporter": f"{exporter} + onnxruntime.quantization.quantize_static (QDQ, per-channel)",
                "file": int8_path.name}

    def open_export(self, source: ExportSource, folder: Path, details: dict) -> Exported:
        return loaded_session(folder / str(details["file"]), source, {"threads": source.threads, **details})


# ONNX Runtime CPU, static int8 (QDQ): beside the fp32 backend of the same thread count; the 1-thread one is
# measured after training, and int8 accuracy evaluates the all-core one (runtime "onnxruntime").
DECLARED = per_thread_count("onnxruntime-cpu-int8", make=OnnxRuntimeInt8Backend, runtime="onnxruntime", dtype="int8",
                            fp32_partner="onnxruntime-cpu", order=31, architecture_board=True,
                            one_thread={"matrix_default": True})
