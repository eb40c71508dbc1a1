"""The board's conclusions in words: only statements the stores support, each with its effect and interval, and the
differences the data does not support said as such, with the smallest gap its seeds could have detected.

Accuracy claims come from the board's one family of comparisons (`zoo.report.comparisons`), tested together with
Holm's correction (`zoo.report.inference`): a claim is stated only where the corrected p-value is below 0.05. Cells
still learning (not every seed at its plateau) or whose EMA is shorter than its horizon (`RunRecord.ema_short`) are
left out of the family and said so: a difference between cells that are still learning is an effect of the budget,
not of the models, recipes or samplers. Latency claims are measured medians at each model's deployment resolution.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from zoo.models import paper_comparisons
from zoo.report.comparisons import AXES, Groups, axis_label, board_family, pair_outcome, settled, top1s
from zoo.report.inference import Outcomes
from zoo.report.stats import rank_agreement
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
    family: str = ""  # the family's line: its size, correction, spread model and resolution

    def markdown(self) -> str:
        lines = ["## Conclusions the data supports", ""] + ([self.family, ""] if self.family else [])
        lines += [f"- {s}" for s in self.supported] or ["- none yet: train at least two seeds per cell"]
        lines += ["", "**Not supported by the data** (not established after the correction, a single seed, or not "
                  "trained to a plateau; effects are b − a with 95 % intervals):", ""]
        lines += [f"- {s}" for s in self.unsupported] or ["- nothing: every tested difference is established"]
        return "\n".join(lines + ["", REGIME_CAVEAT])


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
    return f"{name} (EMA {_pct(top1s(records))}, raw {_pct(raw) if raw else '–'}; {span}{horizon} updates)"


def _cell_text(name: str, values: list[float]) -> str:
    return f"{name} ({_pct(values)})"


def _excluded(where: str, setting: dict[str, list[RunRecord]], out: Findings) -> set[str]:
    """Say which cells of one group are left out of the comparisons, and why; return their names."""
    short = sorted(name for name, recs in setting.items() if top1s(recs) and ema_short(recs))
    if short:
        out.unsupported.append(f"{where}: not compared, {SHORT_EMA_NOTE_SHORT}: " + ", ".join(
            _short_text(name, setting[name]) for name in short))
    learning = sorted(name for name, recs in setting.items()
                      if top1s(recs) and name not in short and not settled(recs))
    if learning:
        out.unsupported.append(f"{where}: not compared, not trained to a plateau: " + ", ".join(
            _cell_text(name, top1s(setting[name])) for name in learning))
    return set(short) | set(learning)


def model_findings(groups: Groups, outcomes: Outcomes, out: Findings) -> None:
    """Per (recipe, sampler): every model pair the family claims, and the best model against the others it does
    not claim (with the gap those seeds could have detected)."""
    for recipe, sampler in sorted({(r, s) for _, r, s in groups}):
        setting = {name: recs for (name, r, s), recs in groups.items() if (r, s) == (recipe, sampler)}
        where = f"{recipe} recipe, {sampler} sampler"
        left_out = _excluded(where, setting, out)
        cells = {name: top1s(recs) for name, recs in setting.items() if name not in left_out and top1s(recs)}
        order = sorted(cells, key=lambda name: (-sum(cells[name]) / len(cells[name]), name))
        for i, ahead in enumerate(order):
            beaten, tied = [], []
            for behind in order[i + 1:]:
                found = pair_outcome(outcomes, recipe, sampler, ahead, behind)
                if found is None:
                    tied.append(f"{_cell_text(behind, cells[behind])}: untested, a single seed")
                    continue
                text = f"{_cell_text(behind, cells[behind])}: {found.towards(ahead).verdict()}"
                (beaten if found.claimed else tied).append(text)
            if beaten:
                out.supported.append(f"{where}: {_cell_text(ahead, cells[ahead])} is more accurate than "
                                     + "; ".join(beaten))
            if tied and i == 0:
                out.unsupported.append(f"{where}: {_cell_text(ahead, cells[ahead])} vs " + "; ".join(tied))


def axis_findings(groups: Groups, outcomes: Outcomes, axis: str, out: Findings) -> None:
    """second − first along one axis ("recipe" or "sampler") for every model and setting of the other axis."""
    first, second = AXES[axis]
    moved, flat, learning, short = [], [], [], []
    for key in sorted(groups):
        name, recipe, sampler = key
        if (recipe if axis == "recipe" else sampler) != first:
            continue
        other = (name, second, sampler) if axis == "recipe" else (name, recipe, second)
        if not top1s(groups[key]) or not top1s(groups.get(other, [])):
            continue
        fixed_part = sampler if axis == "recipe" else recipe
        if ema_short(groups[key]) or ema_short(groups[other]):
            short.append(f"{name} ({fixed_part})")
            continue
        if not (settled(groups[key]) and settled(groups[other])):
            learning.append(f"{name} ({fixed_part})")
            continue
        found = outcomes.of(axis, axis_label(axis, name, fixed_part))
        if found is None:
            flat.append(f"{name} ({fixed_part}): untested, a single seed")
            continue
        text = f"{name} ({fixed_part}): {found.verdict()}, P({second} > {first}) = {found.p_improvement:.2f}"
        (moved if found.claimed else flat).append(text)
    label = f"{second} vs {first} {axis}"
    if moved:
        out.supported.append(f"{label} changes top-1 for {len(moved)} of {len(moved) + len(flat)} model settings: "
                             + "; ".join(moved))
    if flat:
        out.unsupported.append(f"{label}: no effect established for " + "; ".join(flat))
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
        for model, other in paper_comparisons():  # pairs a paper set side by side (PiT-Ti against DeiT-Ti)
            if {model, other} <= set(ms) and {model, other} <= set(deploy.gmacs):
                out.supported.append(
                    f"{model} has {100 * deploy.gmacs[model] / deploy.gmacs[other]:.0f} % of {other}'s GMACs and "
                    f"{100 * ms[model] / ms[other]:.0f} % of its latency on {runtime} (at "
                    f"{deploy.resolution.get(model, '?')} px)")
        with_gmacs = [m for m in models if m in deploy.gmacs]
        agreement = rank_agreement([deploy.gmacs[m] for m in with_gmacs], [ms[m] for m in with_gmacs])
        if agreement is not None:
            gmacs = {m: deploy.gmacs[m] for m in with_gmacs}
            out.supported.append(f"GMACs against latency on {runtime}: Spearman ρ = {agreement.spearman:+.2f} over "
                                 f"{agreement.n} models; " + inversions_text(gmacs, {m: ms[m] for m in with_gmacs}))


SHOWN_INVERSIONS = 4


def inversions_text(gmacs: dict[str, float], ms: dict[str, float]) -> str:
    """Which pairs GMACs put in the wrong order (fewer GMACs, more latency) and by how much, worst first."""
    wrong = sorted(((ms[a] / ms[b], a, b) for a in gmacs for b in gmacs
                    if gmacs[a] < gmacs[b] and ms[a] > ms[b]), reverse=True)
    total = len(gmacs) * (len(gmacs) - 1) // 2
    if not wrong:
        return f"GMACs order all {total} pairs as latency does"
    shown = "; ".join(f"{a} has {gmacs[a] / gmacs[b]:.2f}× {b}'s GMACs but {ratio:.2f}× its latency"
                      for ratio, a, b in wrong[:SHOWN_INVERSIONS])
    more = f" (and {len(wrong) - SHOWN_INVERSIONS} more)" if len(wrong) > SHOWN_INVERSIONS else ""
    return f"GMACs put {len(wrong)} of {total} pairs in the wrong order: {shown}{more}"


def conclusions(groups: Groups, deploy: DeployLatency | None, outcomes: Outcomes | None = None) -> Findings:
    outcomes = outcomes if outcomes is not None else board_family(groups)
    out = Findings(family=outcomes.summary())
    model_findings(groups, outcomes, out)
    axis_findings(groups, outcomes, "recipe", out)
    axis_findings(groups, outcomes, "sampler", out)
    if deploy is not None:
        latency_findings(deploy, out)
    return out
