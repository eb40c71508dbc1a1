"""ExecuTorch with the XNNPACK delegate (the CPU path of ExecuTorch on Android/iOS), fp32 or int8.

Export, with ExecuTorch's own API: `prepare_for_export` (bakes resized position embeddings) → `torch.export` →
`to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])` → `.pte`, run from Python by
`executorch.runtime.Runtime`. int8: PT2E static quantisation with ExecuTorch's `XNNPACKQuantizer` (symmetric,
per-channel weights), calibrated on the caller's images, before lowering. Preparation, parity and int8 checks:
`zoo.measure.backends.common`; timing: `zoo.measure.latency.CallRunner`.

Why a model is slow: `get_delegation_info` counts the graph nodes XNNPACK took and those left to ExecuTorch's
portable (reference) kernels, by op; the counts go in the record's details. A non-delegated op runs on portable
kernels, typically many times slower than XNNPACK's, and splits the graph into several delegate calls.

Export time: ExecuTorch's lowering re-traces the whole graph once per pass (17 XNNPACK passes, ~9 decompositions),
and each re-trace deep-copies every node's provenance chain (`torch.fx.traceback.NodeSource.from_node`), which
grows with every pass. `shared_provenance` shares the chain instead of copying it: the same `.pte`, byte for byte
(tested), about 10 % less lowering time on MobileViT-XXS int8 (`benchmarks/bench_export_phases.py`).

Threads: XNNPACK runs on ExecuTorch's process-wide threadpool, which we size before every timing round (1 thread,
or every usable core).
"""
from __future__ import annotations

import contextlib
import io
import warnings
import copy
import types
from collections import Counter
from pathlib import Path

import torch
import torch.fx.traceback as fx_traceback
import torch.nn as nn

from zoo.measure.backends.common import Calibration, Exported, ExportedBackend, ExportSource
from zoo.measure.backends.spec import per_thread_count
from zoo.models.export import xnnpack_friendly_ops

__all__ = ["DECLARED", "ExecuTorchXnnpackBackend", "delegation_summary", "export_executorch", "load_executorch"]


def _quiet():
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


@contextlib.contextmanager
def shared_provenance():
    """While lowering, a node's provenance list is copied shallowly (its NodeSource entries shared, never mutated
    after creation) instead of deep-copied per node per pass. Only `torch.fx.traceback`'s own `copy` name is
    swapped, and restored after; a torch without it is left alone."""
    real = getattr(fx_traceback, "copy", None)
    if real is not copy:
        yield
        return
    fx_traceback.copy = types.SimpleNamespace(deepcopy=lambda chain, memo=None: list(chain), copy=copy.copy)
    try:
        yield
    finally:
        fx_traceback.copy = real


def delegation_summary(graph_module: torch.fx.GraphModule) -> dict:
    """Delegated vs non-delegated node counts, and the non-delegated ones by op name."""
    from executorch.devtools.backend_debug import get_delegation_info  # deferred: an optional runtime

    info = get_delegation_info(graph_module)
    left = Counter({op: b.non_delegated for op, b in info.delegation_by_operator.items() if b.non_delegated})
    return {
        "delegated_nodes": int(info.num_delegated_nodes),
        "non_delegated_nodes": int(info.num_non_delegated_nodes),
        "delegated_subgraphs": int(info.num_delegated_subgraphs),
        "non_delegated_ops": dict(left.most_common()),
    }


def quantize_pt2e_xnnpack(model: nn.Module, example: torch.Tensor, calibration: list[torch.Tensor]) -> nn.Module:
    """PT2E static int8 with XNNPACK's quantizer: export → prepare → calibrate → convert."""
    # deferred: executorch (the `phone` extra) and torchao are optional runtimes
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    graph = torch.export.export(model, (example,), strict=False).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
    return convert_pt2e(prepared)


def export_executorch(
    model: nn.Module, example: torch.Tensor, path: Path, calibration: list[torch.Tensor] | None = None,
    friendly_ops: bool = True,
) -> dict:
    """Export `model` (already prepared for export, eval mode) to an XNNPACK-lowered `.pte` at `path`.

    Returns the delegation summary. `calibration` given → int8 (PT2E), else fp32. `friendly_ops`: trace
    attention and layer norm with ops XNNPACK delegates (`zoo.models.export.xnnpack_friendly_ops`).
    """
    # deferred: executorch is an optional runtime (the `phone` extra), loaded only when exporting
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    path.parent.mkdir(parents=True, exist_ok=True)
    rewrite = xnnpack_friendly_ops() if friendly_ops else contextlib.nullcontext()
    with _quiet(), torch.no_grad(), rewrite, shared_provenance():
        if calibration is not None:
            model = quantize_pt2e_xnnpack(model, example, calibration)
        program = torch.export.export(model, (example,), strict=False)
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        summary = delegation_summary(edge.exported_program().graph_module)
        executorch_program = edge.to_executorch()
        path.write_bytes(executorch_program.buffer)
    _last_arena[path] = planned_arena_bytes(executorch_program)
    return summary


_last_arena: dict[Path, int | None] = {}  # path -> planned arena of the export last written there


def planned_arena_bytes(executorch_program) -> int | None:
    """Bytes of ExecuTorch's memory plan for `forward` (its non-constant buffers: the activations between
    delegate calls, inputs, outputs). XNNPACK's own workspace inside a delegate call is not in the plan."""
    try:
        return int(sum(executorch_program.executorch_program.execution_plan[0].non_const_buffer_sizes))
    except (AttributeError, IndexError, TypeError):
        return None


def set_threads(threads: int) -> None:
    from executorch.extension.pybindings import portable_lib  # deferred: an optional runtime

    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)


def load_executorch(path: Path, enable_etdump: bool = False):
    """(method, program): the loaded `forward` of a `.pte` (the program keeps the ETDump when enabled)."""
    from executorch.runtime import Runtime  # deferred: an optional runtime

    program = Runtime.get().load_program(path, enable_etdump=enable_etdump, debug_buffer_size=1 << 24)
    return program.load_method("forward"), program


class ExecuTorchXnnpackBackend(ExportedBackend):
    """`executorch-xnnpack[-int8][-1t]`: batch 1, fp32 or PT2E int8, 1 thread or all usable cores."""

    runtime_packages = ("executorch", "torchao")

    def available(self) -> tuple[bool, str]:
        try:  # deferred: an optional runtime
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner  # noqa: F401
            from executorch.runtime import Runtime
        except ImportError as error:
            return False, f"executorch not importable ({error}); pip install -e '.[phone]'"
        if not Runtime.get().backend_registry.is_available("XnnpackBackend"):
            return False, "this executorch build has no XnnpackBackend"
        return True, ""

    def write_export(self, source: ExportSource, folder: Path, calibration: Calibration | None) -> dict:
        path = folder / "model.pte"
        batches = calibration.batches(1) if calibration is not None else None
        delegation = export_executorch(source.exportable, source.example, path, batches)
        return {"exporter": "torch.export → to_edge_transform_and_lower(XNNPACK)",
                "export_rewrite": "xnnpack_friendly_ops (attention: bmm-softmax-bmm; layer norm: 4-D means)",
                "delegation": delegation, "planned_arena_bytes": _last_arena.pop(path, None), "file": path.name}

    def open_export(self, source: ExportSource, folder: Path, details: dict) -> Exported:
        threads = source.threads
        set_threads(threads)
        method, _program = load_executorch(folder / str(details["file"]))
        inputs = [source.example]
        details = {"threads": threads, **details}
        return Exported(run=lambda array: method.execute([torch.from_numpy(array)])[0].numpy(),
                        call=lambda: method.execute(inputs), details=details,
                        # the pool is process-wide: another backend may have resized it between rounds
                        before_round=lambda: set_threads(threads))


# ExecuTorch/XNNPACK, the phone runtime: fp32 and PT2E int8, both on the architecture board and (1 thread) measured
# after training and on the board's detectors and segmenters; int8 accuracy evaluates the all-core int8 one.
DECLARED = (
    *per_thread_count("executorch-xnnpack", make=ExecuTorchXnnpackBackend, runtime="executorch-xnnpack", order=10,
                      phone=True, architecture_board=True, one_thread={"matrix_default": True, "dense_rows": True}),
    *per_thread_count("executorch-xnnpack-int8", make=ExecuTorchXnnpackBackend, runtime="executorch-xnnpack",
                      dtype="int8", fp32_partner="executorch-xnnpack", order=11, phone=True, architecture_board=True,
                      one_thread={"matrix_default": True, "dense_rows": True}),
)
