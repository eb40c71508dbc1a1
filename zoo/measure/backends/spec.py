"""What a backend declares about itself, once, in its own file: `BackendSpec`.

Everything the rest of zoo asks about a backend is a field here (its runtime, dtype, thread count, the fp32 backend
an int8 one is compared with, the export file it shares, where it sits in a table, whether it is a phone runtime,
which boards and defaults it joins); the registry (`zoo.measure.backends`) derives every list, order, pairing and
default from these declarations, so no name string is ever parsed for a fact.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

__all__ = ["BackendSpec", "Dtype", "per_thread_count"]

Dtype = Literal["fp32", "int8", "bf16"]


@dataclass(frozen=True)
class BackendSpec:
    """One backend's declaration. `make(spec, calibration_images)` builds it (the images only matter to int8)."""

    name: str
    make: Callable[..., Any]
    runtime: str  # the runtime's name: int8_accuracy.jsonl rows and runs.yaml's `int8_runtimes` use it
    dtype: Dtype = "fp32"
    threads: int | None = None  # None: every usable core
    fp32_partner: str | None = None  # int8: the fp32 backend of the same runtime and threads it is compared with
    export_kind: str | None = None  # backends of one kind share an exported file (cache folder); None: no export
    order: int = 1000  # place in tables: 1-thread backends first, then the rest, each by this number
    phone: bool = False  # a runtime a phone app embeds (ExecuTorch, LiteRT)
    batch_sizes: tuple[int, ...] = (1,)
    matrix_default: bool = False  # measured after training unless runs.yaml names its backends
    architecture_board: bool = False  # a column of the architecture board's classifier rows
    dense_rows: bool = False  # also times the board's whole detectors and segmenters

    @property
    def int8(self) -> bool:
        return self.dtype == "int8"

    @property
    def sort_key(self) -> tuple[int, int, str]:
        return (0 if self.threads == 1 else 1, self.order, self.name)


def per_thread_count(name: str, *, fp32_partner: str | None = None, exports: bool = True,
                     one_thread: dict[str, Any] | None = None, **facts: Any) -> tuple[BackendSpec, BackendSpec]:
    """The two declarations of one runtime setting: `NAME-1t` (1 thread, a phone's big core) and `NAME` (every
    usable core). Both share one export (`export_kind` NAME); an int8 pair's partner follows the thread count.
    `one_thread`: facts of the 1-thread declaration only (e.g. which defaults it joins)."""
    every = BackendSpec(name, threads=None, fp32_partner=fp32_partner, export_kind=name if exports else None,
                        **facts)
    one = replace(every, name=f"{name}-1t", threads=1,
                  fp32_partner=f"{fp32_partner}-1t" if fp32_partner else None, **(one_thread or {}))
    return one, every
