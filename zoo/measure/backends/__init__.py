"""The latency backends by name. Each is a `zoo.measure.latency.LatencyBackend`."""
from __future__ import annotations

from collections.abc import Callable

from zoo.measure.latency import LatencyBackend

__all__ = ["BACKEND_NAMES", "UnknownBackendError", "available_backends", "get_backend"]


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
}
BACKEND_NAMES: tuple[str, ...] = tuple(_FACTORIES)


class UnknownBackendError(ValueError):
    """A backend name that is not one of BACKEND_NAMES."""


def get_backend(name: str) -> LatencyBackend:
    if name not in _FACTORIES:
        raise UnknownBackendError(f"unknown backend {name!r}; known: {', '.join(BACKEND_NAMES)}")
    return _FACTORIES[name]()


def available_backends() -> list[str]:
    """Names of the backends usable on this machine."""
    return [name for name in BACKEND_NAMES if get_backend(name).available()[0]]
