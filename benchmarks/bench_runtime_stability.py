"""Is latency on the phone runtimes stable? Two timing runs back to back on the same exports.

    python benchmarks/bench_runtime_stability.py [--models ...] [--backends executorch-xnnpack-1t litert-1t]

Unlike bench_latency_stability.py (which re-prepares per run), an export here takes 10-60 s per model, and the
export is not what is measured: each backend exports and checks every model once, then the same prepared models
are timed twice in interleaved rounds. Printed per backend: both medians, their difference (target within 5%),
and whether the ranking is the same; then GMACs against latency. Runtime versions and the machine are printed.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_latency_stability import report_backend, report_gmacs_vs_latency  # noqa: E402

from zoo.measure.backends import get_backend  # noqa: E402
from zoo.measure.flops import count_macs  # noqa: E402
from zoo.measure.latency import Outcome, PreparedModel, TimingConfig, summarize_rounds  # noqa: E402
from zoo.measure.machine import machine_info, software_versions  # noqa: E402
from zoo.measure.suite import resolve_resolutions  # noqa: E402
from zoo.models import create  # noqa: E402

DEFAULT_MODELS = ["mobilenetv2_100", "mobilevit_xxs", "pit_ti", "deit_tiny", "aft_conv_tiny", "coatnet_pico"]


def time_prepared(prepared: dict[str, PreparedModel], timing: TimingConfig) -> dict[str, Outcome]:
    """Interleaved rounds (A, B, C, A, B, C...) over already prepared models, as measure_interleaved times them."""
    samples: dict[str, list[list[float]]] = {name: [] for name in prepared}
    for _ in range(timing.rounds):
        for name, runner in prepared.items():
            samples[name].append(runner.time_round(timing))
    return {name: Outcome("ok", stats=summarize_rounds(samples[name], 1), details=prepared[name].details)
            for name in prepared}


def prepare_all(backend_name: str, models: dict[str, torch.nn.Module], shapes: dict, timing: TimingConfig,
                workdir: Path) -> tuple[dict[str, PreparedModel], dict[str, Outcome]]:
    backend = get_backend(backend_name)
    ok, why = backend.available()
    if not ok:
        return {}, {name: Outcome("skipped", why) for name in models}
    prepared, failed = {}, {}
    for name, model in models.items():
        try:
            prepared[name] = backend.prepare(model, shapes[name], workdir / backend_name / name, timing)
        except Exception as error:  # a failed export is reported beside the others
            failed[name] = Outcome("failed", f"{type(error).__name__}: {str(error)[:120]}")
    return prepared, failed


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--backends", nargs="+", default=["executorch-xnnpack-1t", "litert-1t"])
    parser.add_argument("--res", type=int, help="one resolution for all (default: each model's deployment one)")
    parser.add_argument("--rounds", type=int, default=TimingConfig.rounds)
    parser.add_argument("--round-seconds", type=float, default=TimingConfig.min_round_s)
    args = parser.parse_args(argv)

    resolutions = resolve_resolutions(args.models, args.res)
    timing = TimingConfig(rounds=args.rounds, min_round_s=args.round_seconds)
    models = {name: create(name).eval() for name in args.models}
    shapes = {name: (1, 3, resolutions[name], resolutions[name]) for name in args.models}
    gmacs = {name: count_macs(models[name], resolutions[name]).gmacs for name in args.models}
    info = machine_info()
    versions = {k: v for k, v in software_versions().items() if v}
    print(f"machine {info.machine_id}: {info.cpu_model}, {info.cpus} usable cores; {versions}; {timing}")

    all_runs: dict[str, list[dict[str, Outcome]]] = {}
    with tempfile.TemporaryDirectory(prefix="zoo-stability-") as scratch:
        for backend_name in args.backends:
            started = time.perf_counter()
            prepared, failed = prepare_all(backend_name, models, shapes, timing, Path(scratch))
            print(f"{backend_name}: exported and checked {len(prepared)} models in "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
            runs = []
            for index in (1, 2):
                started = time.perf_counter()
                runs.append({**time_prepared(prepared, timing), **failed})
                print(f"{backend_name} run {index}: {time.perf_counter() - started:.0f} s", flush=True)
            for runner in prepared.values():
                runner.close()
            all_runs[backend_name] = runs
            report_backend(backend_name, runs, gmacs, resolutions)
    report_gmacs_vs_latency(all_runs, gmacs, resolutions)


if __name__ == "__main__":
    main()
