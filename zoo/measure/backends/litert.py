"""LiteRT (formerly TensorFlow Lite) on CPU with its default XNNPACK delegate, fp32: 'litert-1t' / 'litert'.

Export with Google's own converter, `litert_torch.convert(model, (example,)).export(path)` (after
`prepare_for_export`), run with `ai_edge_litert.interpreter.Interpreter(num_threads=...)`, the interpreter an
Android app embeds. Output checked against PyTorch before timing (`zoo.measure.backends.common`).

Delegation: the interpreter applies XNNPACK by default and replaces each delegated run of ops with one
`DELEGATE` node. Python exposes the node list but not the execution plan, so we record the graph's op counts and
the number of delegate partitions (1 means XNNPACK took one contiguous run; more mean ops it refused in between).
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from zoo.measure.backends.common import Calibration, Exported, ExportedBackend, ExportSource
from zoo.measure.backends.spec import per_thread_count

__all__ = ["DECLARED", "LiteRTBackend", "export_litert", "litert_graph_summary", "make_interpreter", "quiet_converter"]


@contextlib.contextmanager
def quiet_converter() -> Iterator[None]:
    """The converter prints a progress tree on stdout/stderr and logs through absl: keep the CLI output readable
    (and run it without autograd)."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            yield
    finally:
        absl.setLevel(level)


def export_litert(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Convert `model` (prepared for export, eval mode) to a `.tflite` flatbuffer at `path`."""
    import litert_torch  # deferred: an optional runtime (the `phone` extra), loaded only when converting

    path.parent.mkdir(parents=True, exist_ok=True)
    with quiet_converter():
        litert_torch.convert(model, (example,)).export(str(path))


def litert_graph_summary(interpreter) -> dict:
    """Op counts of the primary graph and the number of XNNPACK delegate partitions."""
    ops = Counter(op["op_name"] for op in interpreter._get_ops_details())
    partitions = ops.pop("DELEGATE", 0)
    return {"graph_ops": int(sum(ops.values())), "delegate_partitions": int(partitions),
            "ops": dict(ops.most_common())}


def make_interpreter(path: Path, threads: int):
    from ai_edge_litert.interpreter import Interpreter  # deferred: an optional runtime

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


class LiteRTBackend(ExportedBackend):
    """`litert[-1t]`: batch 1, fp32, 1 thread or every usable core."""

    runtime_packages = ("litert-torch", "ai-edge-litert")

    def available(self) -> tuple[bool, str]:
        try:  # deferred: an optional runtime
            import litert_torch  # noqa: F401
            from ai_edge_litert.interpreter import Interpreter  # noqa: F401
        except ImportError as error:
            return False, f"litert-torch / ai-edge-litert not importable ({error}); pip install -e '.[phone]'"
        return True, ""

    def write_export(self, source: ExportSource, folder: Path, calibration: Calibration | None) -> dict:
        path = folder / "model.tflite"
        export_litert(source.exportable, source.example, path)
        return {"exporter": "litert_torch.convert", "file": path.name}

    def open_export(self, source: ExportSource, folder: Path, details: dict) -> Exported:
        interpreter = make_interpreter(folder / str(details["file"]), source.threads)
        input_index = interpreter.get_input_details()[0]["index"]
        output_index = interpreter.get_output_details()[0]["index"]

        def run(array: np.ndarray) -> np.ndarray:
            interpreter.set_tensor(input_index, array)
            interpreter.invoke()
            return interpreter.get_tensor(output_index)

        details = {"threads": source.threads, **details, "delegation": litert_graph_summary(interpreter)}
        # the timed input is set before each round, outside the timed calls
        return Exported(run=run, call=interpreter.invoke, details=details,
                        before_round=lambda: interpreter.set_tensor(input_index, source.example.numpy()))


# LiteRT (XNNPACK delegate), fp32, the phone runtime: on the architecture board, measured after training and on the
# detector/segmenter rows at 1 thread.
DECLARED = per_thread_count("litert", make=LiteRTBackend, runtime="litert", order=20, phone=True,
                            architecture_board=True, one_thread={"matrix_default": True, "dense_rows": True})
