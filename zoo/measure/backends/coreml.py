"""Core ML: export to an ML program (`.mlpackage`) with coremltools; time `predict` on macOS only.

Path: the `prepare_for_export` copy (as every backend) -> `torch.jit.trace` -> `ct.convert(convert_to=
"mlprogram")`. coremltools converts on Linux but its runtime exists only on macOS, so elsewhere `prepare` exports,
then raises BackendSkip with the package path and size (the record says the export works and where it is, with
no latency).
On macOS the package is timed by the shared loop (`zoo.measure.latency.CallRunner`). No fp32 parity check: an ML
program computes in float16 by default (what the device runs), so its logits are not fp32's to 1e-4. Two
converter fixes for this stack live in `zoo.measure.coreml_compat`.
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
from zoo.measure.backends.common import Calibration, Exported, ExportedBackend, ExportSource
from zoo.measure.backends.spec import BackendSpec
from zoo.measure.latency import BackendSkip

__all__ = ["DECLARED", "CoreMLBackend", "export_coreml", "package_size"]


@contextlib.contextmanager
def _quiet():
    # coremltools prints import warnings and tqdm bars (one per conversion pass) to stderr.
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _import_coremltools():
    with _quiet():  # deferred: coremltools is optional (and slow to import)
        import coremltools

    return coremltools


def package_size(path: Path) -> int:
    """Bytes in a .mlpackage directory (or a file)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def export_coreml(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Trace `model` (prepared for export, eval mode) at `example`'s shape; save an ML program to `path`."""
    ct = _import_coremltools()
    coreml_compat.install()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic; the shape is fixed here
        traced = torch.jit.trace(model, example)
    with _quiet():
        mlmodel = ct.convert(
            traced, inputs=[ct.TensorType(name="input", shape=tuple(example.shape))], convert_to="mlprogram"
        )
        if path.exists():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        mlmodel.save(str(path))
    return path


class CoreMLBackend(ExportedBackend):
    fp32_parity = False  # float16 compute by default (module docstring)

    def available(self) -> tuple[bool, str]:
        try:
            _import_coremltools()
        except ImportError as error:
            return False, f"coremltools not importable: {error}"
        return True, ""

    def export(self, source: ExportSource, workdir: Path, calibration: Calibration | None) -> Exported:
        started = time.perf_counter()
        path = export_coreml(source.exportable, source.example, workdir / "model.mlpackage")
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
        feed = {"input": source.example.numpy()}
        return Exported(run=lambda array: next(iter(mlmodel.predict({"input": array}).values())),
                        call=lambda: mlmodel.predict(feed), details=details)


# Core ML (exported here, timed on macOS only): measured after training; its own export per run (not cached).
DECLARED = (BackendSpec("coreml", make=CoreMLBackend, runtime="coreml", order=60, matrix_default=True),)
