"""Where an ExecuTorch/XNNPACK export's time goes (the floor under a first architecture board), and what
`shared_provenance` saves: per model and dtype, the phases quantize (PT2E export → prepare → calibrate →
convert), torch.export, lowering (`to_edge_transform_and_lower` with the XNNPACK partitioner) and
`to_executorch`, with the provenance chain shared and deep-copied, side by side in one process, in the order
shared, copied, copied, shared (so warm-up and drift fall on both), the best of each pair, their ratio, and
whether the two `.pte` files are the same bytes. One torch thread, as the board's export pool runs.

    python benchmarks/bench_export_phases.py --models mobilevit_xxs mobilenetv2_100 --dtypes int8
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import sys
import time
from pathlib import Path

import torch
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.measure.backends import executorch_xnnpack as et  # noqa: E402
from zoo.measure.backends.common import export_source, make_calibration  # noqa: E402
from zoo.measure.suite import build_model  # noqa: E402
from zoo.models.export import xnnpack_friendly_ops  # noqa: E402
from zoo.models.registry import deploy_resolution  # noqa: E402

PHASES = ("quantize", "export", "lower", "to_executorch")


def export_phases(source, calibration: list[torch.Tensor] | None, shared: bool) -> tuple[dict[str, float], str]:
    """Seconds per phase of one export, and the program's sha256 (first 16 hex digits)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    seconds: dict[str, float] = {}

    def timed(phase, work):
        start = time.perf_counter()
        result = work()
        seconds[phase] = seconds.get(phase, 0.0) + time.perf_counter() - start
        return result

    provenance = et.shared_provenance() if shared else contextlib.nullcontext()
    with et._quiet(), torch.no_grad(), xnnpack_friendly_ops(), provenance:
        model = source.exportable
        if calibration is not None:
            model = timed("quantize", lambda: et.quantize_pt2e_xnnpack(model, source.example, calibration))
        program = timed("export", lambda: torch.export.export(model, (source.example,), strict=False))
        edge = timed("lower", lambda: to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]))
        buffer = timed("to_executorch", lambda: edge.to_executorch().buffer)
    return seconds, hashlib.sha256(buffer).hexdigest()[:16]


def bench(model_name: str, int8: bool) -> list:
    resolution = deploy_resolution(model_name)
    shape = (1, 3, resolution, resolution)
    source = export_source(build_model(model_name, {}).eval(), shape, threads=1)
    calibration = make_calibration(None, shape).batches(1) if int8 else None
    runs = {True: [], False: []}
    for shared in (True, False, False, True):
        runs[shared].append(export_phases(source, calibration, shared))
    best = {shared: min(runs[shared], key=lambda run: sum(run[0].values())) for shared in runs}
    same = len({digest for pair in runs.values() for _, digest in pair}) == 1
    rows = []
    for phase in (*PHASES, "total"):
        shared_s, copied_s = (sum(best[s][0].values()) if phase == "total" else best[s][0].get(phase)
                              for s in (True, False))
        if shared_s is None:
            continue
        rows.append([model_name, "int8" if int8 else "fp32", phase, f"{shared_s:.1f}", f"{copied_s:.1f}",
                     f"{copied_s / shared_s:.2f}x", "yes" if same else "NO"])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilevit_xxs"])
    parser.add_argument("--dtypes", nargs="+", choices=["fp32", "int8"], default=["fp32", "int8"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [row for name in args.models for dtype in args.dtypes for row in bench(name, dtype == "int8")]
    print(tabulate(rows, headers=["model", "dtype", "phase", "shared s", "copied s", "copied/shared",
                                  "same .pte"], tablefmt="github"))
    return 0 if all(row[-1] == "yes" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
