"""ONNX Runtime on CPU, one thread ('onnxruntime-cpu-1t') or all usable cores ('onnxruntime-cpu').

Export: torch 2.14's default, the dynamo exporter (`torch.onnx.export(..., dynamo=True)`, opset 18), which
exports every zoo model; if it fails on some model we fall back to the TorchScript exporter (opset 17) and record
which one produced the file. The graph has a static input shape: latency is measured at one shape anyway.
The model is run eagerly once before export, which gives the parity reference and also fills any per-size
caches the model keeps with real tensors (CoAtNet caches its relative-position tables per size, and a first
call under the exporter's fake tensors would otherwise cache fake ones).

Parity: the ONNX output must match PyTorch within 1e-4 of the output's scale (max |ref|, at least 1).
Timing: InferenceSession.run in a perf_counter loop, after warm-up (the first runs allocate the arena).
"""
from __future__ import annotations

import contextlib
import io
import time
import warnings
import weakref
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from zoo.measure.latency import TimedBackend, TimingConfig
from zoo.measure.machine import usable_cpus

__all__ = ["OnnxRuntimeCpuBackend", "ParityError", "export_onnx", "PARITY_RTOL"]

PARITY_RTOL = 1e-4
DYNAMO_OPSET = 18
TORCHSCRIPT_OPSET = 17

# Both ONNX backends time the same exported file: export once per (model object, input shape).
_exports: "weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], tuple[Path, str]]]" = weakref.WeakKeyDictionary()


class ParityError(RuntimeError):
    """The ONNX Runtime output differs from PyTorch's beyond tolerance."""


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


class _SessionRunner:
    def __init__(self, session, feed: dict[str, np.ndarray], details: dict, config: TimingConfig) -> None:
        self.session = session
        self.feed = feed
        self.details = details
        for _ in range(max(config.warmup_calls, 3)):
            session.run(None, feed)

    def time_round(self, config: TimingConfig) -> list[float]:
        times: list[float] = []
        started = time.perf_counter()
        while time.perf_counter() - started < config.min_round_s or len(times) < config.min_samples_per_round:
            t0 = time.perf_counter()
            self.session.run(None, self.feed)
            times.append(time.perf_counter() - t0)
        return times

    def close(self) -> None:
        self.session = None


class OnnxRuntimeCpuBackend(TimedBackend):
    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self.name = "onnxruntime-cpu-1t" if threads == 1 else "onnxruntime-cpu"
        self.batch_sizes = (1,)

    def available(self) -> tuple[bool, str]:
        try:
            import onnxruntime
        except ImportError as error:
            return False, f"onnxruntime not importable: {error}"
        if "CPUExecutionProvider" not in onnxruntime.get_available_providers():
            return False, "onnxruntime has no CPUExecutionProvider"
        return True, ""

    def _session(self, path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads or usable_cpus()
        options.inter_op_num_threads = 1  # batch 1, sequential graph: parallelism within ops only, like torch
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    def prepare(
        self, model: nn.Module, input_shape: tuple[int, ...], workdir: Path, config: TimingConfig
    ) -> _SessionRunner:
        was_training = model.training
        model.eval()
        try:
            example = torch.randn(input_shape)
            with torch.inference_mode():
                reference = model(example).float().numpy()
            cached = _exports.get(model, {}).get(tuple(input_shape))
            if cached is None or not cached[0].exists():
                path = workdir / "model.onnx"
                with torch.no_grad():
                    exporter = export_onnx(model, example, path)
                _exports.setdefault(model, {})[tuple(input_shape)] = (path, exporter)
            else:
                path, exporter = cached
        finally:
            model.train(was_training)
        session = self._session(path)
        feed = {session.get_inputs()[0].name: example.numpy()}
        output = session.run(None, feed)[0]
        error = float(np.abs(output - reference).max())
        tolerance = PARITY_RTOL * max(1.0, float(np.abs(reference).max()))
        details = {
            "threads": self.threads or usable_cpus(),
            "exporter": exporter,
            "onnx_path": str(path),
            "parity_max_abs_err": error,
            "parity_tolerance": tolerance,
        }
        if not error <= tolerance:  # also catches NaN
            raise ParityError(f"ONNX output differs from PyTorch: max abs err {error:.3g} > {tolerance:.3g}")
        return _SessionRunner(session, feed, details, config)
