"""Is the latency measurement stable? Two independent runs, back to back, of every zoo model at its eval resolution.

    python benchmarks/bench_latency_stability.py [--models ...] [--backends cpu-eager-1t onnxruntime-cpu-1t]

For each backend: both medians per model, their relative difference (target: within 5%), and whether the two
runs rank the models the same way (swapped pairs are listed with their gap). Then GMACs against latency.
Each run prepares its own sessions and times all models in interleaved rounds (zoo.measure.latency); ONNX files
are exported once per model and reused by the second run (export is not what is being measured).
"""
from __future__ import annotations

import argparse
import itertools
import math
import time
from collections.abc import Sequence

import torch
from tabulate import tabulate

from zoo.measure.flops import count_macs
from zoo.measure.latency import Outcome, TimingConfig, measure_interleaved
from zoo.measure.backends import get_backend
from zoo.measure.machine import machine_info
from zoo.measure.suite import resolve_resolutions
from zoo.models import create, list_models

TARGET_RELATIVE_DIFFERENCE = 0.05


def swapped_pairs(first: dict[str, float], second: dict[str, float]) -> list[tuple[str, str]]:
    """Pairs of models that the two runs order differently."""
    return [
        (a, b)
        for a, b in itertools.combinations(first, 2)
        if (first[a] - first[b]) * (second[a] - second[b]) < 0
    ]


def run_once(backend_name: str, models: dict[str, torch.nn.Module], shapes: dict, timing: TimingConfig):
    started = time.perf_counter()
    outcomes = measure_interleaved(get_backend(backend_name), models, shapes, timing)
    return outcomes, time.perf_counter() - started


def _ok_medians(outcomes: dict[str, Outcome]) -> dict[str, float]:
    return {name: o.stats.median_ms for name, o in outcomes.items() if o.status == "ok" and o.stats}


def _geometric_mean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _summary(label: str, diffs: Sequence[float]) -> str:
    within = sum(abs(d) <= TARGET_RELATIVE_DIFFERENCE for d in diffs)
    return f"{label}: max |diff| {100 * max(abs(d) for d in diffs):.1f}%, within 5% {within}/{len(diffs)}"


def report_backend(backend_name: str, runs: Sequence[dict[str, Outcome]], gmacs: dict[str, float],
                   resolutions: dict[str, int]) -> None:
    """Per model: medians of both runs and their difference; also the difference of the minimum, and of the
    median relative to the run's geometric mean over all models (what is left once load drift common to every
    model is divided out: what a ranking depends on)."""
    first, second = (_ok_medians(r) for r in runs)
    common = [name for name in first if name in second]
    mins = [{n: r[n].stats.min_ms for n in common} for r in runs]
    if common:
        drift = _geometric_mean([second[n] for n in common]) / _geometric_mean([first[n] for n in common])
    diffs, min_diffs, relative_diffs, rows = [], [], [], []
    for name in common:
        diff = second[name] / first[name] - 1
        min_diff = mins[1][name] / mins[0][name] - 1
        relative_diff = second[name] / first[name] / drift - 1
        diffs.append(diff), min_diffs.append(min_diff), relative_diffs.append(relative_diff)
        rows.append([name, resolutions[name], f"{gmacs[name]:.3f}", f"{first[name]:.2f}", f"{second[name]:.2f}",
                     f"{100 * diff:+.1f}%", f"{runs[0][name].stats.iqr_ms:.2f}", f"{100 * min_diff:+.1f}%",
                     f"{100 * relative_diff:+.1f}%"])
    for name, outcome in runs[0].items():
        if name not in common:
            rows.append([name, resolutions[name], f"{gmacs[name]:.3f}", "", "", "", "", "", outcome.reason[:60]])
    print(f"\n## {backend_name}")
    print(tabulate(rows, headers=["model", "res", "GMACs", "run 1 median ms", "run 2 median ms", "diff",
                                  "IQR ms (run 1)", "min diff", "diff / drift"], disable_numparse=True))
    if not common:
        return
    swaps = swapped_pairs({n: first[n] for n in common}, {n: second[n] for n in common})
    print(_summary("median", diffs))
    print(_summary("min", min_diffs))
    print(_summary(f"median / common drift ({100 * (drift - 1):+.1f}%)", relative_diffs))
    print(f"same ranking (medians): {'yes' if not swaps else 'NO'}")
    for a, b in swaps:
        gap = abs(first[a] - first[b]) / min(first[a], first[b])
        print(f"  swapped: {a} / {b} (run-1 gap {100 * gap:.1f}%)")


def report_gmacs_vs_latency(all_runs: dict[str, list[dict[str, Outcome]]], gmacs: dict[str, float],
                            resolutions: dict[str, int]) -> None:
    backends = list(all_runs)
    rows = []
    for name in sorted(gmacs, key=gmacs.get):
        row = [name, resolutions[name], f"{gmacs[name]:.3f}"]
        for backend in backends:
            medians = [_ok_medians(run).get(name) for run in all_runs[backend]]
            medians = [m for m in medians if m is not None]
            row.append(f"{sum(medians) / len(medians):.2f}" if medians else "")
            row.append(f"{sum(medians) / len(medians) / gmacs[name]:.1f}" if medians else "")
        rows.append(row)
    headers = ["model", "res", "GMACs"] + [h for b in backends for h in (f"{b} ms", "ms/GMAC")]
    print("\n## GMACs vs latency (mean of the two runs' medians)")
    print(tabulate(rows, headers=headers, disable_numparse=True))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=None, help="default: every registered model")
    parser.add_argument("--backends", nargs="+", default=["cpu-eager-1t", "onnxruntime-cpu-1t"])
    parser.add_argument("--rounds", type=int, default=TimingConfig.rounds)
    parser.add_argument("--round-seconds", type=float, default=TimingConfig.min_round_s)
    args = parser.parse_args(argv)

    names = args.models or list_models()
    resolutions = resolve_resolutions(names, None)
    timing = TimingConfig(rounds=args.rounds, min_round_s=args.round_seconds)
    models = {name: create(name).eval() for name in names}
    shapes = {name: (1, 3, resolutions[name], resolutions[name]) for name in names}
    gmacs = {name: count_macs(models[name], resolutions[name]).gmacs for name in names}
    info = machine_info()
    print(f"machine {info.machine_id}: {info.cpu_model}, {info.cpus} usable cores, torch {info.torch_version}, "
          f"onnxruntime {info.onnxruntime_version}; {timing}")

    all_runs: dict[str, list[dict[str, Outcome]]] = {}
    for backend_name in args.backends:
        runs = []
        for index in (1, 2):
            outcomes, seconds = run_once(backend_name, models, shapes, timing)
            print(f"{backend_name} run {index}: {seconds:.0f} s", flush=True)
            runs.append(outcomes)
        all_runs[backend_name] = runs
        report_backend(backend_name, runs, gmacs, resolutions)
    report_gmacs_vs_latency(all_runs, gmacs, resolutions)


if __name__ == "__main__":
    main()
