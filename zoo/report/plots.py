"""Leaderboard plots (PNG, matplotlib's Agg backend; metadata stripped so the same data give the same bytes)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from zoo.report.stats import pareto_front  # noqa: E402

_SAVE = {"dpi": 110, "metadata": {"Software": None}, "bbox_inches": "tight"}


def accuracy_vs_latency(
    points: dict[str, list[tuple[str, float, float]]], backend: str, path: Path
) -> Path:
    """points: series label (recipe/sampler) -> [(model, latency_ms, top1)]. The Pareto front of each is drawn."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, series in sorted(points.items()):
        if not series:
            continue
        xs, ys = [p[1] for p in series], [100 * p[2] for p in series]
        scatter = ax.scatter(xs, ys, label=label, s=28)
        front = pareto_front(list(zip(xs, ys)))
        ax.plot([xs[i] for i in front], [ys[i] for i in front], "--", color=scatter.get_facecolor()[0], lw=1)
        for model, x, y in zip((p[0] for p in series), xs, ys):
            ax.annotate(model, (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel(f"latency on {backend} (ms, log scale)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Accuracy vs measured latency (dashed: Pareto front)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.savefig(path, **_SAVE)
    plt.close(fig)
    return path


def gmacs_vs_latency(points: dict[str, list[tuple[str, float, float]]], path: Path) -> Path:
    """points: backend -> [(model, gmacs, latency_ms)]: one panel per backend, so FLOPs and latency are compared."""
    backends = sorted(b for b, series in points.items() if series)
    fig, axes = plt.subplots(1, max(1, len(backends)), figsize=(4.2 * max(1, len(backends)), 3.8), squeeze=False)
    for ax, backend in zip(axes[0], backends):
        series = sorted(points[backend])
        ax.scatter([p[1] for p in series], [p[2] for p in series], s=24)
        for model, g, ms in series:
            ax.annotate(model, (g, ms), fontsize=6, xytext=(3, 2), textcoords="offset points")
        ax.set_xlabel("GMACs")
        ax.set_ylabel("latency (ms)")
        ax.set_title(backend, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle("FLOPs are not latency: GMACs vs measured latency per backend", fontsize=10)
    fig.savefig(path, **_SAVE)
    plt.close(fig)
    return path
