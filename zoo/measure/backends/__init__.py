"""The latency backends by name. Each is a `zoo.measure.latency.LatencyBackend`.

Adding one: a file here with its class (a runtime that times an export subclasses `common.ExportedBackend` and
writes `export`; the preparation, parity check and timing loop come with it) and its line in `_FACTORIES`. A
backend running on another device than this host (e.g. a phone over adb) sets `device_id` (e.g. the serial).
"""
from __future__ import annotations

from collections.abc import Callable

from zoo.measure.latency import LatencyBackend

__all__ = [
    "BACKEND_NAMES", "INT8_BACKENDS", "PHONE_BACKENDS", "UnknownBackendError", "available_backends", "get_backend",
]


def _cpu_eager(threads: int | None) -> Callable[[], LatencyBackend]:
    def make() -> LatencyBackend:
        from zoo.measure.backends.torch_eager import CpuEagerBackend

        return CpuEagerBackend(threads=threads)

    return make


def _onnxruntime(threads: int | None) -> Callable[[], LatencyBackend]:
    def make() -> LatencyBackend:
        from zoo.measure.backends.onnx_runtime import OnnxRuntimeCpuBackend

        return OnnxRuntimeCpuBackend(threads=threads)

    return make


def _cuda(bf16: bool) -> Callable[[], LatencyBackend]:
    def make() -> LatencyBackend:
        import torch

        from zoo.measure.backends.torch_eager import CudaBackend

        return CudaBackend(autocast_dtype=torch.bfloat16 if bf16 else None)

    return make


def _executorch(threads: int | None, int8: bool) -> Callable[..., LatencyBackend]:
    def make(calibration_images=None) -> LatencyBackend:
        from zoo.measure.backends.executorch_xnnpack import ExecuTorchXnnpackBackend

        return ExecuTorchXnnpackBackend(threads=threads, int8=int8, calibration_images=calibration_images)

    return make


def _litert(threads: int | None) -> Callable[..., LatencyBackend]:
    def make(calibration_images=None) -> LatencyBackend:
        from zoo.measure.backends.litert import LiteRTBackend

        return LiteRTBackend(threads=threads)

    return make


def _litert_int8(threads: int | None) -> Callable[..., LatencyBackend]:
    def make(calibration_images=None) -> LatencyBackend:
        from zoo.measure.backends.litert_int8 import LiteRTInt8Backend

        return LiteRTInt8Backend(threads=threads, calibration_images=calibration_images)

    return make


def _onnxruntime_int8(threads: int | None) -> Callable[..., LatencyBackend]:
    def make(calibration_images=None) -> LatencyBackend:
        from zoo.measure.backends.onnx_int8 import OnnxRuntimeInt8Backend

        return OnnxRuntimeInt8Backend(threads=threads, calibration_images=calibration_images)

    return make


def _coreml() -> LatencyBackend:
    from zoo.measure.backends.coreml import CoreMLBackend

    return CoreMLBackend()


# Imports are deferred so that naming a backend never pays for (or fails on) another backend's library.
_FACTORIES: dict[str, Callable[[], LatencyBackend]] = {
    "cpu-eager-1t": _cpu_eager(1),
    "cpu-eager": _cpu_eager(None),
    "onnxruntime-cpu-1t": _onnxruntime(1),
    "onnxruntime-cpu": _onnxruntime(None),
    "cuda": _cuda(bf16=False),
    "cuda-bf16": _cuda(bf16=True),
    "coreml": _coreml,
    # Phone runtimes (optional extra `phone`): fp32 and int8, 1 thread (a phone's big core) and all cores.
    "executorch-xnnpack-1t": _executorch(1, int8=False),
    "executorch-xnnpack": _executorch(None, int8=False),
    "executorch-xnnpack-int8-1t": _executorch(1, int8=True),
    "executorch-xnnpack-int8": _executorch(None, int8=True),
    "litert-1t": _litert(1),
    "litert": _litert(None),
    "litert-int8-1t": _litert_int8(1),
    "litert-int8": _litert_int8(None),
    "onnxruntime-cpu-int8-1t": _onnxruntime_int8(1),
    "onnxruntime-cpu-int8": _onnxruntime_int8(None),
}
# Backends that quantise to int8 and therefore take calibration images.
INT8_BACKENDS: frozenset[str] = frozenset(name for name in _FACTORIES if "-int8" in name)
# The phone-runtime backends (the issue-11 set), in table order.
PHONE_BACKENDS: tuple[str, ...] = tuple(name for name in _FACTORIES if name.startswith(("executorch", "litert")))
BACKEND_NAMES: tuple[str, ...] = tuple(_FACTORIES)


class UnknownBackendError(ValueError):
    """A backend name that is not one of BACKEND_NAMES."""


def get_backend(name: str, calibration_images=None) -> LatencyBackend:
    """The backend called `name`; int8 backends calibrate on `calibration_images` ([N, 3, H, W]; None: synthetic)."""
    if name not in _FACTORIES:
        raise UnknownBackendError(f"unknown backend {name!r}; known: {', '.join(BACKEND_NAMES)}")
    if name in INT8_BACKENDS:
        return _FACTORIES[name](calibration_images=calibration_images)
    return _FACTORIES[name]()


def available_backends() -> list[str]:
    """Names of the backends usable on this machine."""
    return [name for name in BACKEND_NAMES if get_backend(name).available()[0]]
