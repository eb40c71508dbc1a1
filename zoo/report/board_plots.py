"""Plots of the architecture board: published top-1 vs measured latency per runtime with the Pareto front marked.

PNG through matplotlib's Agg backend with metadata stripped, so the same store gives the same bytes.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from zoo.report.atomic import savefig_atomic  # noqa: E402
from zoo.report.stats import pareto_front  # noqa: E402

__all__ = ["top1_vs_latency_panels"]

_SAVE = {"dpi": 110, "metadata": {"Software": None}, "bbox_inches": "tight"}


def top1_vs_latency_panels(points: Mapping[str, Sequence[tuple[str, float, float]]], title: str,
                           path: Path) -> Path:
    """points: backend -> [(label, latency_ms, published top-1 %)]; one panel per backend, front dashed and red."""
    backends = [b for b, series in points.items() if series]
    cols = min(3, max(1, len(backends)))
    rows = -(-max(1, len(backends)) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 3.9 * rows), squeeze=False)
    for ax, backend in zip(axes.flat, backends):
        series = sorted(points[backend], key=lambda p: p[1])
        xs, ys = [p[1] for p in series], [p[2] for p in series]
        front = set(pareto_front(list(zip(xs, ys))))
        ax.scatter(xs, ys, s=20, color="tab:blue")
        ordered = sorted(front, key=lambda i: xs[i])
        ax.plot([xs[i] for i in ordered], [ys[i] for i in ordered], "--o", color="tab:red", lw=1, ms=4)
        for i, (label, x, y) in enumerate(series):
            ax.annotate(label, (x, y), fontsize=5.5, xytext=(3, 2), textcoords="offset points",
                        color="tab:red" if i in front else "black")
        ax.set_xscale("log")
        ax.set_xlabel("measured latency (ms, log)")
        ax.set_ylabel("published ImageNet top-1 (%)")
        ax.set_title(backend, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(backends):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    savefig_atomic(fig, path, **_SAVE)
    plt.close(fig)
    return path
