"""Where the time goes: latency by operator class from ONNX Runtime's own profiler, beside GMACs by class.

`op_class_breakdown(model, resolution)` takes the `onnxruntime-cpu-1t` backend's own export, through its public API
(`ExportedBackend.written`: from the export cache when given one, so the architecture board profiles the very
file its cells time), runs it `runs` times at 1 thread with `SessionOptions.enable_profiling`, reads the
profiler's JSON (one `Node` event per kernel call, with its op type and node name) and sums kernel time per class:

  convolution, depthwise conv, matmul/linear, attention, normalization, reshape/transpose (unfold/fold,
  concat, slice...), resize, elementwise, other.

A MatMul whose second input is a weight is matmul/linear; one between two activations (QKᵀ, AV) is attention, as
is Softmax. Conv with group == input channels is depthwise. The GMACs of the same classes come from
`zoo.measure.flops.macs_by_class`. The result is one `zoo.measure.store.Breakdown`; `breakdown_or_failure` makes a
failure a record too (both the trained board's measurement step and the architecture board profile through it).
`python -m zoo.measure.breakdown` prints records.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch.nn as nn

from zoo.measure.backends import get_backend
from zoo.measure.backends.common import export_source
from zoo.measure.flops import OP_CLASSES, macs_by_class
from zoo.measure.store import Breakdown
from zoo.measure.suite import build_model, resolve_resolutions
from zoo.results import append_jsonl

__all__ = ["OP_CLASSES", "PROFILED_BACKEND", "breakdown_or_failure", "classify_onnx_node", "op_class_breakdown",
           "profile_onnxruntime"]

PROFILED_BACKEND = "onnxruntime-cpu-1t"  # whose export is profiled (the graph its latency column times)

_RESHAPE = {"Reshape", "Transpose", "Concat", "Slice", "Gather", "Split", "Squeeze", "Unsqueeze", "Expand",
            "Flatten", "Shape", "Identity", "Tile", "GatherElements", "ScatterND", "Cast", "Pad"}
_NORM = {"LayerNormalization", "BatchNormalization", "InstanceNormalization", "SkipLayerNormalization",
         "ReduceMean", "Pow", "Sqrt", "SimplifiedLayerNormalization"}
_ELEMENTWISE = {"Add", "Mul", "Sub", "Div", "Sigmoid", "Relu", "Clip", "Exp", "Erf", "Gelu", "FastGelu",
                "Tanh", "HardSigmoid", "HardSwish", "Where", "Max", "Min", "Neg", "BiasGelu", "QuickGelu",
                "ReduceMax", "ReduceSum", "Equal", "Not", "And", "Or", "Softplus", "Mish"}


def classify_onnx_node(node, initializers: set[str], channels_of: dict[str, int]) -> str:
    """The op class of one ONNX graph node (see the module docstring)."""
    op = node.op_type
    if op in {"Conv", "FusedConv", "QLinearConv", "ConvInteger"}:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        return "depthwise conv" if group > 1 and group == channels_of.get(node.input[1], -1) else "convolution"
    if op in {"MatMul", "FusedMatMul", "MatMulInteger", "QLinearMatMul"}:
        return "matmul/linear" if node.input[1] in initializers else "attention"
    if op in {"Gemm"}:
        return "matmul/linear"
    if op in {"Softmax", "Attention", "MultiHeadAttention"}:
        return "attention"
    if op in {"Resize", "Upsample"}:
        return "resize"
    if op in _NORM:
        return "normalization"
    if op in _RESHAPE:
        return "reshape/transpose"
    if op in _ELEMENTWISE:
        return "elementwise"
    return "other"


def _optimized_graph_classes(optimized_path: Path) -> dict[str, str]:
    import onnx  # deferred: onnx / onnxruntime are optional runtimes, loaded only when profiling

    graph = onnx.load(str(optimized_path)).graph
    initializers = {t.name for t in graph.initializer}
    # A depthwise conv has group == channels; the weight's first dim is the output channels (= groups there).
    channels_of = {t.name: int(t.dims[0]) for t in graph.initializer if len(t.dims) == 4}
    return {node.name: classify_onnx_node(node, initializers, channels_of) for node in graph.node}


def profile_onnxruntime(onnx_path: Path, example: np.ndarray, runs: int, workdir: Path) -> dict[str, float]:
    """Mean ms per inference by op class, from ONNX Runtime's profiler (1 thread, all graph optimisations)."""
    import onnxruntime as ort  # deferred: an optional runtime

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(workdir / "optimized.onnx")  # the graph the profiler names nodes of
    options.enable_profiling = True
    options.log_severity_level = 3  # the optimised-graph dump warns that it is machine-specific: we know
    options.profile_file_prefix = str(workdir / "ort_profile")
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: example}
    for _ in range(runs + 1):  # the first call (arena allocation) is profiled too: it is averaged in
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    classes = _optimized_graph_classes(workdir / "optimized.onnx")
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        node = event["name"].removesuffix("_kernel_time")
        totals[classes.get(node, "other")] += event["dur"] / 1e3  # µs → ms
    # `runs + 1` calls were profiled: report the mean per call.
    return {name: round(totals.get(name, 0.0) / (runs + 1), 4) for name in OP_CLASSES}


def op_class_breakdown(model: nn.Module, resolution: int, runs: int = 20, name: str = "",
                       workdir: Path | None = None, cache_dir: Path | None = None) -> Breakdown:
    """ms per op class (ONNX Runtime, 1 thread) and GMACs per class of `model` at `resolution`, from
    `PROFILED_BACKEND`'s export (its cached one under `cache_dir` when given; else exported into `workdir`)."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="zoo-breakdown-") as scratch:
            return op_class_breakdown(model, resolution, runs, name, Path(scratch), cache_dir)
    backend = get_backend(PROFILED_BACKEND)
    backend.export_cache_dir = cache_dir
    source = export_source(model, (1, 3, resolution, resolution), threads=1)
    written = backend.written(source, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ms = profile_onnxruntime(written.folder / str(written.details["file"]), source.example.numpy(), runs, workdir)
    gmacs = {k: round(v / 1e9, 6) for k, v in macs_by_class(source.exportable, resolution).items()}
    return Breakdown(model=name, resolution=resolution, runtime=f"{PROFILED_BACKEND} (profiler)", ms_by_class=ms,
                     total_kernel_ms=round(sum(ms.values()), 4), gmacs_by_class=gmacs, runs=runs)


def breakdown_or_failure(build: Callable[[], nn.Module], name: str, resolution: int, runs: int, workdir: Path,
                         cache_dir: Path | None = None) -> Breakdown:
    """`op_class_breakdown` of the model `build()` makes; a failure (to build, export or profile) is a record too,
    with its reason: a profiler failure is a row of the board, not the end of measuring."""
    try:
        return op_class_breakdown(build(), resolution, runs, name, workdir, cache_dir)
    except Exception as error:
        return Breakdown(model=name, resolution=resolution, status="failed",
                         reason=f"{type(error).__name__}: {str(error)[:200]}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.measure.breakdown", description=__doc__)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--res", type=int, help="resolution (default: each model's deployment resolution)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", help="append the records to this JSON-lines file")
    args = parser.parse_args(argv)
    resolution_of = resolve_resolutions(args.models, args.res)
    for model_name in args.models:
        record = op_class_breakdown(build_model(model_name, {}), resolution_of[model_name], args.runs, model_name)
        print(json.dumps(record.to_dict()))
        if args.out:
            append_jsonl(Path(args.out), record.to_dict())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
