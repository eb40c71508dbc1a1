"""CPU latency of our MobileViT against timm's, side by side in one process (a benchmark, not a test).

    python benchmarks/bench_mobilevit_vs_timm.py [--variant xxs] [--size 256] [--rounds 5] [--threads 1]

Both models get the same weights (timm's, through our key map), so they do identical arithmetic. The two are
timed in alternating rounds so drifting machine load hits both alike; medians and IQRs over all rounds' samples.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.utils.benchmark as benchmark

# Run as a plain script from a checkout: make the repository's `zoo` importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from zoo.models.mobilevit import build_mobilevit, load_timm_state_dict  # noqa: E402


@dataclass
class Latency:
    name: str
    samples_ms: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def iqr(self) -> float:
        q1, _, q3 = statistics.quantiles(self.samples_ms, n=4)
        return q3 - q1


def time_round(model: torch.nn.Module, x: torch.Tensor, min_run_time: float, threads: int) -> list[float]:
    timer = benchmark.Timer(stmt="model(x)", globals={"model": model, "x": x}, num_threads=threads)
    measurement = timer.blocked_autorange(min_run_time=min_run_time)
    return [t * 1e3 for t in measurement.times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="xxs", choices=["xxs", "xs", "s"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per model")
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds per round per model")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    reference = timm.create_model(f"mobilevit_{args.variant}", pretrained=False).eval()
    ours = build_mobilevit(args.variant).eval()
    load_timm_state_dict(ours, reference.state_dict())
    x = torch.randn(1, 3, args.size, args.size)

    results = {"ours": Latency("ours", []), "timm": Latency("timm", [])}
    models = {"ours": ours, "timm": reference}
    with torch.inference_mode():
        assert torch.allclose(ours(x), reference(x), atol=1e-4), "models disagree: the comparison would be moot"
        for name, model in models.items():  # warm-up
            time_round(model, x, 0.3, args.threads)
        for round_index in range(args.rounds):
            # Swap the order every round so neither model always runs first.
            order = ["ours", "timm"] if round_index % 2 == 0 else ["timm", "ours"]
            for name in order:
                results[name].samples_ms.extend(time_round(models[name], x, args.min_run_time, args.threads))

    print(f"mobilevit_{args.variant}, batch 1, {args.size}x{args.size}, {args.threads} thread(s), torch "
          f"{torch.__version__}, timm {timm.__version__}")
    for result in results.values():
        print(f"  {result.name:5s} median {result.median:8.2f} ms   IQR {result.iqr:6.2f} ms   "
              f"({len(result.samples_ms)} blocks)")
    print(f"  ratio ours/timm (medians): {results['ours'].median / results['timm'].median:.3f}")


if __name__ == "__main__":
    main()
