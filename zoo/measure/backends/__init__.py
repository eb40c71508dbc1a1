"""The latency backends, by name, from their declarations. Each is a `zoo.measure.latency.LatencyBackend`.

A backend declares itself once, in its own file, as `DECLARED` (`zoo.measure.backends.spec.BackendSpec`: runtime,
dtype, threads, fp32 partner, export kind, display order, phone runtime or not, which defaults and boards it
joins). Every list, order, pairing and default the rest of zoo uses is derived here from those declarations.

Adding one: a file here with its class (a runtime that times an export subclasses `common.ExportedBackend` and
writes `write_export` / `open_export`; the preparation, parity check, cache and timing loop come with it) and its
`DECLARED`, plus its module in `_DECLARING` below. A backend running on another device than this host (e.g. a
phone over adb) sets `device_id` (e.g. the serial).

The backend modules import their runtimes (executorch, litert, onnxruntime, coremltools) only when asked to
export or load, so naming one backend never pays for (or fails on) another's library.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch

from zoo.measure.backends import coreml, executorch_xnnpack, litert, litert_int8, onnx_int8, onnx_runtime, torch_eager
from zoo.measure.backends.spec import BackendSpec
from zoo.measure.latency import LatencyBackend

__all__ = [
    "BackendSpec", "UnknownBackendError", "architecture_board_backends", "available_backends", "backend_names",
    "default_int8_runtimes", "dense_row_backends", "display_order", "get_backend", "int8_accuracy_backends",
    "int8_backends", "int8_pairs", "matrix_default_backends", "phone_backends", "register", "registered", "spec_of",
]


class UnknownBackendError(ValueError):
    """A backend name that is not registered."""


_REGISTRY: dict[str, BackendSpec] = {}


def register(*specs: BackendSpec) -> None:
    """Add declarations to the registry, all or none (a name may be declared once)."""
    names = [spec.name for spec in specs]
    for spec in specs:
        if spec.name in _REGISTRY or names.count(spec.name) > 1:
            raise ValueError(f"backend {spec.name!r} is declared twice")
        if spec.fp32_partner is not None and not spec.int8:
            raise ValueError(f"{spec.name}: only an int8 backend has an fp32 partner")
    _REGISTRY.update((spec.name, spec) for spec in specs)


@contextmanager
def registered(*specs: BackendSpec) -> Iterator[None]:
    """`specs` registered for the duration of the block (tests declare a fake backend this way)."""
    register(*specs)
    try:
        yield
    finally:
        for spec in specs:
            _REGISTRY.pop(spec.name, None)


# The registration: each module's declarations, in this order (the order of `backend_names()`).
_DECLARING = (torch_eager, onnx_runtime, coreml, executorch_xnnpack, litert, litert_int8, onnx_int8)
for _module in _DECLARING:
    register(*_module.DECLARED)


def spec_of(name: str) -> BackendSpec:
    """The declaration of backend `name`; UnknownBackendError naming the known ones otherwise."""
    if name not in _REGISTRY:
        raise UnknownBackendError(f"unknown backend {name!r}; known: {', '.join(backend_names())}")
    return _REGISTRY[name]


def backend_names() -> tuple[str, ...]:
    """Every registered backend, in registration order."""
    return tuple(_REGISTRY)


def display_order(names: Iterable[str]) -> list[str]:
    """`names` (duplicates dropped) in table order: registered ones by their declared place (1-thread backends
    first), then any unregistered name (an old store's) alphabetically."""
    names = list(dict.fromkeys(names))
    known = sorted((n for n in names if n in _REGISTRY), key=lambda n: _REGISTRY[n].sort_key)
    return known + sorted(n for n in names if n not in _REGISTRY)


def _chosen(keep) -> tuple[str, ...]:
    return tuple(display_order(name for name, spec in _REGISTRY.items() if keep(spec)))


def int8_backends() -> tuple[str, ...]:
    """The backends that quantise to int8 (and so take calibration images), in table order."""
    return _chosen(lambda spec: spec.int8)


def phone_backends() -> tuple[str, ...]:
    """The runtimes a phone app embeds, in table order."""
    return _chosen(lambda spec: spec.phone)


def matrix_default_backends() -> tuple[str, ...]:
    """What a matrix measures after training unless runs.yaml names `measure.backends`."""
    return _chosen(lambda spec: spec.matrix_default)


def architecture_board_backends() -> tuple[str, ...]:
    """The architecture board's columns for its classifier rows."""
    return _chosen(lambda spec: spec.architecture_board)


def dense_row_backends() -> tuple[str, ...]:
    """The architecture board's columns for its whole detectors and segmenters."""
    return _chosen(lambda spec: spec.dense_rows)


def int8_pairs(names: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """(fp32, int8) of every int8 backend with its declared fp32 partner, both among `names` (default: all), in
    table order of the int8 backend."""
    chosen = set(_REGISTRY if names is None else names)
    return [(_REGISTRY[n].fp32_partner, n) for n in display_order(chosen)
            if n in _REGISTRY and _REGISTRY[n].fp32_partner in chosen]


def int8_accuracy_backends() -> dict[str, str]:
    """int8 runtime name (as int8_accuracy.jsonl and runs.yaml's `int8_runtimes` say it) -> the int8 backend that
    evaluates it: the runtime's all-core int8 backend (its 1-thread one when it declares no other)."""
    chosen: dict[str, str] = {}
    for name in display_order(int8_backends()):
        spec = _REGISTRY[name]
        if spec.threads is None or spec.runtime not in chosen:
            chosen[spec.runtime] = name
    return chosen


def default_int8_runtimes() -> tuple[str, ...]:
    """The int8 runtimes a matrix evaluates for accuracy unless runs.yaml names them: those of its default
    backends."""
    return tuple(dict.fromkeys(_REGISTRY[n].runtime for n in matrix_default_backends() if _REGISTRY[n].int8))


def get_backend(name: str, calibration_images: torch.Tensor | None = None) -> LatencyBackend:
    """The backend called `name`; int8 backends calibrate on `calibration_images` ([N, 3, H, W]; None: synthetic)."""
    spec = spec_of(name)
    return spec.make(spec, calibration_images)


def available_backends() -> list[str]:
    """Names of the backends usable on this machine."""
    return [name for name in backend_names() if get_backend(name).available()[0]]
