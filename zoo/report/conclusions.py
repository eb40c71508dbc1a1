"""The board's conclusions in words: only statements the stores support, each with its numbers, and the
differences the data does not support said as such. Accuracy claims need every seed of both cells trained to its
plateau (zoo.report.stats.at_plateau) and Welch's t-test over seeds at p < 0.05: a difference between cells that are
still learning is an effect of the budget, not of the models, recipes or samplers. A cell whose EMA is shorter than
its horizon (`RunRecord.ema_short`) is left out too, and said so: its top-1 is mostly the initial weights, and its
curve (of the EMA) cannot tell a plateau. Latency claims are measured medians at each model's deployment resolution."""
from __future__ import annotations

from dataclasses import dataclass, field

from zoo.report.stats import at_plateau, chance_of, rank_agreement, welch
from zoo.report.tables import SHORT_EMA_MARK, ema_short, ranked_values
from zoo.results import RunRecord

REGIME_CAVEAT = (
    "**Regime.** These accuracies come from the default matrix: scikit-learn's 8×8 handwritten digits upsampled, "
    "trained for minutes on a CPU. That is far from ImageNet: the accuracy ranking here says little about ImageNet "
    "(or even CIFAR), and recipe or sampler effects at this scale need not carry over. The real comparisons are "
    "`runs/cifar.yaml` and `runs/imagenet.yaml`; latency, GMACs and parameter counts, in contrast, are properties of "
    "the architectures at their deployment resolution and carry over as measured on this machine."
)


@dataclass
class Findings:
    supported: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = ["## Conclusions the data supports", ""]
        lines += [f"- {s}" for s in self.supported] or ["- none yet: train at least two seeds per cell"]
        lines += ["", "**Not supported by the data** (within seed noise, a single seed, or not trained to a plateau):",
                  ""]
        lines += [f"- {s}" for s in self.unsupported] or ["- nothing: every tested difference is beyond noise"]
        return "\n".join(lines + ["", REGIME_CAVEAT])


def _top1s(records: list[RunRecord]) -> list[float]:
    return [r.top1 for r in records if r.top1 is not None]


def settled(records: list[RunRecord]) -> bool:
    """Every seed of the cell reached its plateau (curves too short to judge count as not settled)."""
    return bool(records) and all(
        at_plateau([row.val_top1 for row in r.history], chance_of(r.num_classes)) for r in records)


def _pct(values: list[float]) -> str:
    mean = sum(values) / len(values)
    return f"{100 * mean:.1f} %"


SHORT_EMA_NOTE_SHORT = f"EMA shorter than its horizon ({SHORT_EMA_MARK})"


def _short_text(name: str, records: list[RunRecord]) -> str:
    """`mobilevit_xxs (EMA 11.0 %, raw 92.1 %; 120 of ~2,000 updates)`."""
    raw = ranked_values(records)
    updates = sorted({r.updates for r in records if r.ema_short})
    horizons = [r.ema_horizon_updates for r in records if r.ema_short and r.ema_horizon_updates is not None]
    span = f"{updates[0]:,}" if len(updates) == 1 else f"{updates[0]:,}-{updates[-1]:,}"
    horizon = f" of ~{max(horizons):,.0f}" if horizons else ""
    return f"{name} (EMA {_pct(_top1s(records))}, raw {_pct(raw) if raw else '–'}; {span}{horizon} updates)"


def model_findings(groups: dict[tuple[str, str, str], list[RunRecord]], out: Findings) -> None:
    """Per (recipe, sampler): which models the best one beats beyond seed noise, and which it does not."""
    for recipe, sampler in sorted({(r, s) for _, r, s in groups}):
        setting = {name: recs for (name, r, s), recs in groups.items() if (r, s) == (recipe, sampler)}
        where = f"{recipe} recipe, {sampler} sampler"
        short = sorted(name for name, recs in setting.items() if _top1s(recs) and ema_short(recs))
        if short:
            out.unsupported.append(f"{where}: not compared, {SHORT_EMA_NOTE_SHORT}: " + ", ".join(
                _short_text(name, setting[name]) for name in short))
        learning = sorted(name for name, recs in setting.items()
                          if _top1s(recs) and name not in short and not settled(recs))
        if learning:
            out.unsupported.append(f"{where}: not compared, not trained to a plateau: " + ", ".join(
                f"{name} ({_pct(_top1s(setting[name]))})" for name in learning))
        cells = {name: _top1s(recs) for name, recs in setting.items() if name not in learning and name not in short}
        cells = {name: values for name, values in cells.items() if values}
        if len(cells) < 2:
            continue
        best = max(cells, key=lambda name: (sum(cells[name]) / len(cells[name]), name))
        beaten, tied = [], []
        for name in sorted(cells):
            if name == best:
                continue
            cmp = welch(cells[name], cells[best])
            text = f"{name} ({_pct(cells[name])}, {cmp.verdict()})"
            (beaten if cmp.beyond_noise else tied).append(text)
        if beaten:
            out.supported.append(f"{where}: {best} ({_pct(cells[best])}) is more accurate than " + "; ".join(beaten))
        if tied:
            out.unsupported.append(f"{where}: {best} ({_pct(cells[best])}) vs " + "; ".join(tied))


def axis_findings(groups: dict[tuple[str, str, str], list[RunRecord]], axis: str, a: str, b: str,
                  out: Findings) -> None:
    """b − a along one axis ("recipe" or "sampler") for every model and setting of the other axis."""
    moved, flat, learning, short = [], [], [], []
    for key in sorted(groups):
        name, recipe, sampler = key
        if (recipe if axis == "recipe" else sampler) != a:
            continue
        other = (name, b, sampler) if axis == "recipe" else (name, recipe, b)
        va, vb = _top1s(groups[key]), _top1s(groups.get(other, []))
        if not va or not vb:
            continue
        fixed_part = sampler if axis == "recipe" else recipe
        if ema_short(groups[key]) or ema_short(groups[other]):
            short.append(f"{name} ({fixed_part})")
            continue
        if not (settled(groups[key]) and settled(groups[other])):
            learning.append(f"{name} ({fixed_part})")
            continue
        cmp = welch(va, vb)
        text = f"{name} ({fixed_part}): {100 * cmp.delta:+.1f} pts, {cmp.verdict()}"
        (moved if cmp.beyond_noise else flat).append(text)
    label = f"{b} vs {a} {axis}"
    if moved:
        out.supported.append(f"{label} changes top-1 beyond seed noise for {len(moved)} of {len(moved) + len(flat)} "
                             f"model settings: " + "; ".join(moved))
    if flat:
        out.unsupported.append(f"{label}: no effect beyond seed noise for " + "; ".join(flat))
    if learning:
        out.unsupported.append(f"{label}: not compared, a side not trained to a plateau: " + ", ".join(learning))
    if short:
        out.unsupported.append(f"{label}: not compared, a side's {SHORT_EMA_NOTE_SHORT}: " + ", ".join(short))


@dataclass(frozen=True)
class DeployLatency:
    """Latency at each model's deployment resolution: (runtime, model) -> median ms, and GMACs per model there."""

    ms: dict[tuple[str, str], float]
    gmacs: dict[str, float]
    resolution: dict[str, int]

    @property
    def runtimes(self) -> list[str]:
        return sorted({runtime for runtime, _ in self.ms})


def latency_findings(deploy: DeployLatency, out: Findings, reference: str = "mobilenetv2_100") -> None:
    for runtime in deploy.runtimes:
        models = sorted(m for r, m in deploy.ms if r == runtime)
        if len(models) < 2:
            continue
        ms = {m: deploy.ms[(runtime, m)] for m in models}
        fastest = min(models, key=lambda m: (ms[m], m))
        parts = [f"on {runtime}, {fastest} is fastest ({ms[fastest]:.1f} ms)"]
        if reference in ms and fastest != reference:
            parts.append(f"{reference} takes {ms[reference]:.1f} ms")
        if reference in ms:
            others = ", ".join(f"{m} {ms[m] / ms[reference]:.1f}×" for m in models if m != reference)
            parts.append(f"relative to {reference}: {others}")
        out.supported.append("; ".join(parts))
        if {"pit_ti", "deit_tiny"} <= set(ms) and {"pit_ti", "deit_tiny"} <= set(deploy.gmacs):
            g = deploy.gmacs["pit_ti"] / deploy.gmacs["deit_tiny"]
            out.supported.append(f"PiT-Ti has {100 * g:.0f} % of DeiT-Ti's GMACs and {100 * ms['pit_ti'] / ms['deit_tiny']:.0f} % "
                                 f"of its latency on {runtime} (224 px)")
        with_gmacs = [m for m in models if m in deploy.gmacs]
        agreement = rank_agreement([deploy.gmacs[m] for m in with_gmacs], [ms[m] for m in with_gmacs])
        if agreement is not None:
            verdict = "GMACs order latency well" if agreement.spearman >= 0.9 else "GMACs do not order latency"
            out.supported.append(f"{verdict} on {runtime}: Spearman ρ = {agreement.spearman:+.2f} over "
                                 f"{agreement.n} models")


def conclusions(groups: dict[tuple[str, str, str], list[RunRecord]], deploy: DeployLatency | None) -> Findings:
    out = Findings()
    model_findings(groups, out)
    axis_findings(groups, "recipe", "basic", "advanced", out)
    axis_findings(groups, "sampler", "fixed", "multiscale", out)
    if deploy is not None:
        latency_findings(deploy, out)
    return out
