"""Core ML: export to an ML program (`.mlpackage`) with coremltools; time `predict` on macOS only.

Path: eval model -> `torch.jit.trace` -> `ct.convert(convert_to="mlprogram")`. coremltools converts on Linux but
its runtime exists only on macOS, so elsewhere `prepare` exports, then raises BackendSkip with the package path
and size (the record says the export works and where it is, with no latency). Two converter fixes for this
stack live in `zoo.measure.coreml_compat`.
"""
from __future__ import annotations

import contextlib
import io
import platform
import shutil
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from zoo.measure import coreml_compat
from zoo.measure.latency import BackendSkip, TimedBackend, TimingConfig

__all__ = ["CoreMLBackend", "export_coreml", "package_size"]


@contextlib.contextmanager
def _quiet():
    # coremltools prints import warnings and tqdm bars (one per conversion pass) to stderr.
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _import_coremltools():
    with _quiet():
        import coremltools

    return coremltools


def package_size(path: Path) -> int:
    """Bytes in a .mlpackage directory (or a file)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def export_coreml(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
    """Trace `model` at `input_shape` and save a Core ML ML program to `path` (a .mlpackage directory)."""
    ct = _import_coremltools()
    coreml_compat.install()
    was_training = model.training
    model.eval()
    try:
        example = torch.randn(input_shape)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic; the shape is fixed here
            model(example)  # fill per-size caches with real tensors before tracing
            traced = torch.jit.trace(model, example)
    finally:
        model.train(was_training)
    with _quiet():
        mlmodel = ct.convert(
            traced, inputs=[ct.TensorType(name="input", shape=input_shape)], convert_to="mlprogram"
        )
        if path.exists():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        mlmodel.save(str(path))
    return path


class _PredictRunner:
    def __init__(self, mlmodel, input_shape: tuple[int, ...], details: dict, config: TimingConfig) -> None:
        self.mlmodel = mlmodel
        self.feed = {"input": torch.randn(input_shape).numpy()}
        self.details = details
        for _ in range(config.warmup_calls):
            mlmodel.predict(self.feed)

    def time_round(self, config: TimingConfig) -> list[float]:
        times: list[float] = []
        started = time.perf_counter()
        while time.perf_counter() - started < config.min_round_s or len(times) < config.min_samples_per_round:
            t0 = time.perf_counter()
            self.mlmodel.predict(self.feed)
            times.append(time.perf_counter() - t0)
        return times

    def close(self) -> None:
        self.mlmodel = None


class CoreMLBackend(TimedBackend):
    name = "coreml"
    batch_sizes = (1,)

    def available(self) -> tuple[bool, str]:
        try:
            _import_coremltools()
        except ImportError as error:
            return False, f"coremltools not importable: {error}"
        return True, ""

    def prepare(
        self, model: nn.Module, input_shape: tuple[int, ...], workdir: Path, config: TimingConfig
    ) -> _PredictRunner:
        started = time.perf_counter()
        from zoo.models.export import prepare_for_export

        # Core ML has no antialiased bicubic resize: DeiT/PiT export with their position embeddings baked.
        exportable = prepare_for_export(model, int(input_shape[-1]))
        path = export_coreml(exportable, input_shape, workdir / "model.mlpackage")
        details = {
            "exported": True,
            "artifact": str(path),
            "size_bytes": package_size(path),
            "export_s": round(time.perf_counter() - started, 1),
        }
        if platform.system() != "Darwin":
            raise BackendSkip(f"Core ML export ok; prediction needs macOS (this is {platform.system()})", details)
        ct = _import_coremltools()
        mlmodel = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.ALL)
        return _PredictRunner(mlmodel, input_shape, details, config)
