"""Leaderboard plots (PNG, matplotlib's Agg backend; metadata stripped so the same data give the same bytes)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from zoo.report.atomic import savefig_atomic  # noqa: E402
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
    savefig_atomic(fig, path, **_SAVE)
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
    savefig_atomic(fig, path, **_SAVE)
    plt.close(fig)
    return path


def learning_curves(curves: dict[tuple[str, str], dict[str, list[list[float]]]], path: Path) -> Path:
    """curves: (recipe, sampler) -> model -> one validation top-1 curve per seed. One panel per (recipe, sampler),
    the mean over seeds as a line and the seeds' range shaded, so "trained to a plateau" can be seen."""
    panels = sorted(curves)
    cols = min(2, max(1, len(panels)))
    rows = -(-max(1, len(panels)) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), squeeze=False, sharey=True)
    models = sorted({model for panel in curves.values() for model in panel})
    colours = {model: plt.get_cmap("tab10")(i % 10) for i, model in enumerate(models)}  # one colour per model
    for ax, (recipe, sampler) in zip(axes.flat, panels):
        for model, seeds in sorted(curves[(recipe, sampler)].items()):
            length = min(len(c) for c in seeds)
            if not length:
                continue
            epochs = list(range(1, length + 1))
            per_epoch = [[100 * c[i] for c in seeds] for i in range(length)]
            mean = [sum(v) / len(v) for v in per_epoch]
            ax.plot(epochs, mean, lw=1.2, color=colours[model], label=model)
            if len(seeds) > 1:
                ax.fill_between(epochs, [min(v) for v in per_epoch], [max(v) for v in per_epoch],
                                color=colours[model], alpha=0.15, lw=0)
        ax.set_title(f"{recipe} recipe, {sampler} sampler", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("val top-1 (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=colours[m], lw=1.5) for m in models]
    fig.legend(handles, models, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle("Learning curves (mean over seeds; shade: min-max)", fontsize=10)
    fig.tight_layout()
    savefig_atomic(fig, path, **_SAVE)
    plt.close(fig)
    return path
