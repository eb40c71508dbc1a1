"""LiteRT int8 on CPU with its default XNNPACK delegate: 'litert-int8-1t' / 'litert-int8'.

Quantisation is litert-torch's own post-training static int8 path (its README's PT2E recipe): `torch.export` of
the `prepare_for_export` copy → `prepare_pt2e` with litert-torch's `PT2EQuantizer` (per-channel symmetric int8
weights, per-tensor int8 activations from histogram observers) → calibration on the caller's images (synthetic
when none, `common.make_calibration`) → `convert_pt2e(fold_quantize=False)` → `litert_torch.convert(...,
quant_config=QuantConfig(pt2e_quantizer=...))`, which turns the quantise/dequantise pairs into int8 kernels.

The converter folds the input's quantise and the output's dequantise into the model's signature, so the file
takes and returns int8 tensors (as an int8 app's does). `run` quantises the float image with the input tensor's
scale/zero point and dequantises the logits; the timed call gets the example quantised once, before each round,
so the timing is the graph alone, as for the fp32 backend. An op the quantiser does not annotate (e.g. some
residual adds) stays float between a DEQUANTIZE and a QUANTIZE: the graph's op counts (`litert_graph_summary`)
and its tensor dtypes go in the record, so a slow int8 export shows why.

Checked like every int8 export (`common`): top-1 agreement with the fp32 eager model on a batch that is not the
calibration batch, recorded, not enforced. A model the PT2E path cannot quantise or convert raises
`LiteRTQuantizationError` naming the model and the stage: the harness records it as a failed cell.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from zoo.measure.backends.common import Calibration, Exported, ExportedBackend, ExportSource
from zoo.measure.backends.litert import litert_graph_summary, make_interpreter, quiet_converter
from zoo.measure.backends.spec import per_thread_count

__all__ = ["DECLARED", "LiteRTInt8Backend", "LiteRTQuantizationError", "export_litert_int8", "tensor_dtypes"]


class LiteRTQuantizationError(RuntimeError):
    """litert-torch's PT2E int8 path failed on a model (the message names the model and the stage)."""


def _quantizer():
    # deferred here and below: litert-torch is an optional runtime (the `phone` extra)
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    return PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))


def _stage(name: str, model: nn.Module, step):
    """Run one step of the export; a failure becomes one line naming the model and the step."""
    try:
        return step()
    except Exception as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise LiteRTQuantizationError(f"litert int8 export of {type(model).__name__} failed in {name}: "
                                      f"{type(error).__name__}: {message}") from error


def export_litert_int8(model: nn.Module, example: torch.Tensor, path: Path,
                       calibration: list[torch.Tensor]) -> None:
    """Quantise `model` (prepared for export, eval mode) to static int8 and write the `.tflite` at `path`."""
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    path.parent.mkdir(parents=True, exist_ok=True)
    quantizer = _quantizer()
    with quiet_converter():
        graph = _stage("torch.export", model, lambda: torch.export.export(model, (example,), strict=False).module())
        prepared = _stage("prepare_pt2e", model, lambda: prepare_pt2e(graph, quantizer))
        _stage("calibration", model, lambda: [prepared(batch) for batch in calibration])
        # fold_quantize=False: the converter wants the float weights with their q/dq pair, and folds them itself
        quantized = _stage("convert_pt2e", model, lambda: convert_pt2e(prepared, fold_quantize=False))
        edge = _stage("litert_torch.convert", model, lambda: litert_torch.convert(
            quantized, (example,), quant_config=QuantConfig(pt2e_quantizer=quantizer)))
        _stage("export", model, lambda: edge.export(str(path)))


def tensor_dtypes(interpreter) -> dict[str, int]:
    """How many of the graph's tensors have each dtype (an int8 export is mostly int8, with int32 biases)."""
    return dict(Counter(np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()).most_common())


def _quantize(array: np.ndarray, detail: dict) -> np.ndarray:
    """`array` in the dtype the tensor wants: float as is, integer with the tensor's scale and zero point."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return array.astype(dtype, copy=False)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(array / scale) + zero_point, info.min, info.max).astype(dtype)


def _dequantize(array: np.ndarray, detail: dict) -> np.ndarray:
    if np.dtype(detail["dtype"]).kind == "f":
        return array.astype(np.float32, copy=False)
    scale, zero_point = detail["quantization"]
    return ((array.astype(np.float32) - zero_point) * scale).astype(np.float32)


class LiteRTInt8Backend(ExportedBackend):
    """`litert-int8[-1t]`: batch 1, PT2E static int8, 1 thread or every usable core (one export for both)."""

    runtime_packages = ("litert-torch", "ai-edge-litert", "torchao")

    def available(self) -> tuple[bool, str]:
        try:  # deferred: an optional runtime
            import litert_torch  # noqa: F401
            from ai_edge_litert.interpreter import Interpreter  # noqa: F401
            from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer  # noqa: F401
            from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e  # noqa: F401
        except ImportError as error:
            return False, f"litert-torch / ai-edge-litert / torchao not importable ({error}); pip install -e '.[phone]'"
        return True, ""

    def write_export(self, source: ExportSource, folder: Path, calibration: Calibration | None) -> dict:
        if calibration is None:
            raise ValueError(f"{self.name} quantises: it needs a calibration set")
        path = folder / "model.int8.tflite"
        export_litert_int8(source.exportable, source.example, path, calibration.batches(1))
        return {"exporter": "litert_torch PT2EQuantizer (per-channel symmetric, static) + litert_torch.convert",
                "file": path.name}

    def open_export(self, source: ExportSource, folder: Path, details: dict) -> Exported:
        interpreter = make_interpreter(folder / str(details["file"]), source.threads)
        input_detail = interpreter.get_input_details()[0]
        output_detail = interpreter.get_output_details()[0]
        input_index, output_index = input_detail["index"], output_detail["index"]

        def run(array: np.ndarray) -> np.ndarray:
            interpreter.set_tensor(input_index, _quantize(array, input_detail))
            interpreter.invoke()
            return _dequantize(interpreter.get_tensor(output_index), output_detail)

        timed_input = _quantize(source.example.numpy(), input_detail)
        details = {"threads": source.threads, **details, "delegation": litert_graph_summary(interpreter),
                   "io_dtypes": [np.dtype(input_detail["dtype"]).name, np.dtype(output_detail["dtype"]).name],
                   "tensor_dtypes": tensor_dtypes(interpreter)}
        # the timed input is set (already quantised) before each round, outside the timed calls
        return Exported(run=run, call=interpreter.invoke, details=details,
                        before_round=lambda: interpreter.set_tensor(input_index, timed_input))


# LiteRT static int8 beside LiteRT fp32 of the same thread count, on the architecture board (not measured after
# training by default; int8 accuracy can evaluate it as runtime "litert").
DECLARED = per_thread_count("litert-int8", make=LiteRTInt8Backend, runtime="litert", dtype="int8",
                            fp32_partner="litert", order=21, phone=True, architecture_board=True)
