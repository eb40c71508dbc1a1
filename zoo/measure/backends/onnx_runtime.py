"""ONNX Runtime on CPU, one thread ('onnxruntime-cpu-1t') or all usable cores ('onnxruntime-cpu').

Export: of the `prepare_for_export` copy, as every backend (so DeiT's graph has no run-time position-embedding
`Resize`), with torch 2.14's default, the dynamo exporter (`torch.onnx.export(..., dynamo=True)`, opset 18),
which exports every zoo model; if it fails on some model we fall back to the TorchScript exporter (opset 17) and
record which one produced the file. The graph has a static input shape: latency is measured at one shape anyway.
The file is exported once per (model, input shape) and shared by both thread counts and by the int8 backend,
which quantises this very graph.

Parity and timing: `zoo.measure.backends.common` (fp32 check against PyTorch) and `zoo.measure.latency.CallRunner`
(InferenceSession.run in a perf_counter loop, after warm-up: the first runs allocate the arena).
"""
from __future__ import annotations

import contextlib
import io
import shutil
import warnings
import weakref
from pathlib import Path

import torch
import torch.nn as nn

from zoo.measure.backends.common import Calibration, Exported, ExportedBackend, ExportSource
from zoo.measure.backends.spec import per_thread_count

__all__ = ["DECLARED", "OnnxRuntimeCpuBackend", "export_onnx", "onnx_file", "onnx_session"]

DYNAMO_OPSET = 18
TORCHSCRIPT_OPSET = 17

# One export per (caller's model object, input shape), reused by every ONNX backend in the process.
_exports: "weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], tuple[Path, str]]]" = weakref.WeakKeyDictionary()


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> str:
    """Export `model` (eval mode) for `example`'s shape to `path`; return the exporter used."""
    path.parent.mkdir(parents=True, exist_ok=True)
    quiet = contextlib.redirect_stdout(io.StringIO())  # the dynamo exporter prints its progress
    try:
        with quiet, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=DYNAMO_OPSET,
                              external_data=False)
        return f"dynamo (opset {DYNAMO_OPSET})"
    except Exception as dynamo_error:
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=TORCHSCRIPT_OPSET)
        except Exception as torchscript_error:
            raise RuntimeError(
                f"ONNX export failed: dynamo: {dynamo_error!s:.200}; torchscript: {torchscript_error!s:.200}"
            ) from torchscript_error
        return f"torchscript (opset {TORCHSCRIPT_OPSET}; dynamo failed: {type(dynamo_error).__name__})"


def onnx_file(source: ExportSource, workdir: Path) -> tuple[Path, str]:
    """(path, exporter) of the fp32 ONNX export of `source.exportable`, exported on the first call only."""
    shape = tuple(source.example.shape)
    cached = _exports.get(source.model, {}).get(shape)
    if cached is not None and cached[0].exists():
        return cached
    path = workdir / "model.onnx"
    with torch.no_grad():
        exporter = export_onnx(source.exportable, source.example, path)
    _exports.setdefault(source.model, {})[shape] = (path, exporter)
    return path, exporter


def onnx_session(path: Path, threads: int):
    """A CPU InferenceSession with `threads` intra-op threads and every graph optimisation."""
    import onnxruntime as ort  # deferred: an optional runtime, loaded only by the backends that use it

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # batch 1, sequential graph: parallelism within ops only, like torch
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def loaded_session(path: Path, source: ExportSource, details: dict) -> Exported:
    """An ONNX file loaded for the source's threads: run on any image, timed on the source's input."""
    session = onnx_session(path, source.threads)
    input_name = session.get_inputs()[0].name
    feed = {input_name: source.example.numpy()}
    return Exported(run=lambda array: session.run(None, {input_name: array})[0],
                    call=lambda: session.run(None, feed), details=details)


class OnnxRuntimeCpuBackend(ExportedBackend):
    runtime_packages = ("onnx", "onnxruntime", "onnxscript")

    def available(self) -> tuple[bool, str]:
        try:  # deferred: onnxruntime is an optional runtime, imported only when this backend is asked for
            import onnxruntime
        except ImportError as error:
            return False, f"onnxruntime not importable: {error}"
        if "CPUExecutionProvider" not in onnxruntime.get_available_providers():
            return False, "onnxruntime has no CPUExecutionProvider"
        return True, ""

    def write_export(self, source: ExportSource, folder: Path, calibration: Calibration | None) -> dict:
        path, exporter = onnx_file(source, folder)
        if path.parent != folder:  # exported earlier in this process for another folder: keep a copy here
            shutil.copyfile(path, folder / path.name)
        return {"exporter": exporter, "file": path.name}

    def open_export(self, source: ExportSource, folder: Path, details: dict) -> Exported:
        path = folder / str(details["file"])
        return loaded_session(path, source, {"threads": source.threads, **details, "onnx_path": str(path)})


# ONNX Runtime CPU, fp32: on the architecture board and measured after training (1 thread), not a phone runtime.
DECLARED = per_thread_count("onnxruntime-cpu", make=OnnxRuntimeCpuBackend, runtime="onnxruntime", order=30,
                            architecture_board=True, one_thread={"matrix_default": True, "dense_rows": True})
