"""Markdown tables of the leaderboard, built from plain inputs so they are easy to test and deterministic."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from tabulate import tabulate

from zoo.models import model_label
from zoo.models.registry import fused_for_export
from zoo.report.comparisons import axis_label, ema_short, pair_outcome, why_not_comparable
from zoo.report.inference import Outcome, Outcomes
from zoo.report.stats import (PLATEAU_POINTS, SeedStat, at_plateau, chance_of, last_quarter_gain, near_chance,
                              rank_agreement, ranks)
from zoo.results import RunRecord

DASH = "–"


@dataclass(frozen=True)
class Cost:
    """A model's size and work at one resolution, as measured by zoo.measure."""

    params_m: float | None = None
    gmacs: float | None = None
    resolution: int | None = None


@dataclass(frozen=True)
class Latency:
    median_ms: float
    iqr_ms: float
    runs: int


@dataclass
class BoardInputs:
    runs: list[RunRecord]  # finished records of the results store
    costs: dict[str, Cost] = field(default_factory=dict)  # model -> cost at its deployment resolution, 1000 classes
    paper_costs: dict[str, Cost] = field(default_factory=dict)  # model -> cost at the paper's resolution, 1000 classes
    latency: dict[tuple[str, str], Latency] = field(default_factory=dict)  # (model, backend) -> latency
    backends: list[str] = field(default_factory=list)  # latency columns, in order
    published: dict[str, Any] = field(default_factory=dict)  # model -> registry Published
    outcomes: Outcomes | None = None  # the board's family of comparisons, tested (zoo.report.comparisons)


@dataclass(frozen=True)
class Table:
    """Rows of strings under headers: rendered as markdown for the README and sent as-is to W&B."""

    headers: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        return tabulate(self.rows, headers=self.headers, tablefmt="github", disable_numparse=True)


def md(rows: list[list[Any]], headers: list[str]) -> Table:
    return Table(list(headers), [[str(cell) for cell in row] for row in rows])


def _num(value: float | None, fmt: str) -> str:
    return DASH if value is None else format(value, fmt)


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value, sort_keys=True)
    return flat


def _variants(records: list[RunRecord]) -> dict[str, str]:
    """run_id -> what its config (seed aside) changes against the cell's most common config ("" for that one):
    the points of a sweep or a knob variant become rows of their own instead of passing for extra seeds."""
    flats = {r.run_id: {k: v for k, v in _flat(r.config_json()).items() if k != "seed"} for r in records}
    shapes = Counter(json.dumps(flat, sort_keys=True) for flat in flats.values())
    common = json.loads(min(shapes, key=lambda shape: (-shapes[shape], shape)))
    labels = {}
    for run_id, flat in flats.items():
        changed = sorted(k for k in set(flat) | set(common) if flat.get(k) != common.get(k))
        labels[run_id] = ", ".join(f"{k}={json.loads(flat[k]) if k in flat else DASH}" for k in changed)
    return labels


def row_name(model: str, variant: str) -> str:
    return f"{model} [{variant}]" if variant else model


def cost_key(record: RunRecord) -> str:
    """Where a run's architecture is measured: its model with its knobs (`zoo.models.model_label`)."""
    kwargs = record.config.model_kwargs if record.config is not None else None  # None: another version's config
    return model_label(record.model, kwargs or None)


def group_runs(runs: list[RunRecord]) -> dict[tuple[str, str, str], list[RunRecord]]:
    """(row name, recipe, sampler) -> the records of one config across seeds, sorted by seed. Runs differing in
    anything but the seed are separate rows, named by what they change (e.g. `mobilevit_xs [lr=0.004]`)."""
    cells: dict[tuple[str, str, str], list[RunRecord]] = defaultdict(list)
    for record in runs:
        cells[(record.model, record.recipe, record.sampler)].append(record)
    groups: dict[tuple[str, str, str], list[RunRecord]] = defaultdict(list)
    for (model, recipe, sampler), records in cells.items():
        labels = _variants(records)
        for record in records:
            groups[(row_name(model, labels[record.run_id]), recipe, sampler)].append(record)
    return {key: sorted(recs, key=lambda r: r.seed) for key, recs in sorted(groups.items())}


def top1_stat(records: list[RunRecord], key: str = "top1") -> SeedStat | None:
    values = [getattr(r, key) for r in records if getattr(r, key) is not None]
    return SeedStat.of(values) if values else None


SHORT_EMA_MARK = "†"
SHORT_EMA_NOTE = (f"`{SHORT_EMA_MARK}` = the EMA is shorter than its horizon (the run took fewer updates than "
                  "1/(1 − decay)): its top-1 is mostly the initial weights, so the raw weights' top-1 is shown beside "
                  "it and the cell is ranked by that; it is left out of every comparison and conclusion")


def ranked_values(records: list[RunRecord]) -> list[float]:
    """The top-1 a cell is ranked by: the EMA's (or the model's), or the raw weights' where the EMA is short."""
    key = "top1_raw" if ema_short(records) else "top1"
    return [getattr(r, key) for r in records if getattr(r, key) is not None]


def top1_text(records: list[RunRecord], mark: str = "") -> str:
    """A cell's reported top-1 with `mark` (¹, ≈) on the value it is ranked by; a short EMA's cell shows the raw
    weights' top-1 beside it: `11.0 ± 0.5 (n=2) †, raw 92.1 ± 0.4 ≈`."""
    stat = top1_stat(records)
    if stat is None:
        return DASH
    if not ema_short(records):
        return stat.format() + mark
    raw = ranked_values(records)
    raw_text = SeedStat.of(raw).format().rsplit(" (n=", 1)[0] if raw else DASH
    return f"{stat.format()} {SHORT_EMA_MARK}, raw {raw_text}{mark}"


def _mean(records: list[RunRecord], key: str) -> float | None:
    values = [getattr(r, key) for r in records if getattr(r, key) is not None]
    return sum(values) / len(values) if values else None


def main_boards(data: BoardInputs) -> list[tuple[str, Table]]:
    """One board per (recipe, sampler), sorted by top-1 (best first). Returns (title, markdown) pairs."""
    groups = group_runs(data.runs)
    cells = sorted({(recipe, sampler) for (_, recipe, sampler) in groups})
    boards = []
    for recipe, sampler in cells:
        # ranked by `ranked_values`: a cell whose EMA had no time to average by its raw weights' top-1
        entries = [(model, recs, SeedStat.of(v) if (v := ranked_values(recs)) else None)
                   for (model, r, s), recs in groups.items() if (r, s) == (recipe, sampler)]
        entries.sort(key=lambda e: (-(e[2].mean if e[2] else -1.0), e[0]))
        rows = []
        for i, (model, recs, stat) in enumerate(entries):
            cost = data.costs.get(cost_key(recs[0]), Cost())
            mark = ""
            if stat and stat.n == 1:
                mark = " ¹"
            elif stat and i + 1 < len(entries) and entries[i + 1][2]:
                below = pair_outcome(data.outcomes, recipe, sampler, model, entries[i + 1][0])
                mark = "" if below is not None and below.claimed else " ≈"
            latencies = [data.latency.get((cost_key(recs[0]), b)) for b in data.backends]
            train_time = _mean(recs, "train_time_s")
            rows.append([
                i + 1, model, _num(cost.params_m, ".3f"), _num(cost.gmacs, ".4f"), top1_text(recs, mark),
                _num(100 * m if (m := _mean(recs, "top5")) is not None else None, ".1f"),
                *[_num(lat.median_ms if lat else None, ".2f") for lat in latencies],
                _num(_mean(recs, "train_img_per_s"), ".0f"),
                _num(train_time / 60 if train_time is not None else None, ".1f"),
            ])
        headers = ["#", "model", "params (M)", "GMACs", "top-1 %", "top-5 %",
                   *[f"{b} (ms)" for b in data.backends], "train img/s", "train (min)"]
        boards.append((f"{recipe} recipe, {sampler} sampler", md(rows, headers)))
    return boards


def _values(records: list[RunRecord]) -> list[float]:
    return [r.top1 for r in records if r.top1 is not None]


NOT_COMPARED_SHORT_EMA = f"not compared: EMA shorter than its horizon ({SHORT_EMA_MARK})"


def _verdict(data: BoardInputs, axis: str, name: str, fixed_part: str, a: list[RunRecord],
             b: list[RunRecord]) -> str:
    """The family's test of b against a along `axis`, in words; why not, where the family left the pair out."""
    if not _values(a) or not _values(b):
        return ""
    if ema_short(a) or ema_short(b):
        return NOT_COMPARED_SHORT_EMA
    found: Outcome | None = data.outcomes.of(axis, axis_label(axis, name, fixed_part)) if data.outcomes else None
    if found is None:
        reasons = dict.fromkeys(why for why in (why_not_comparable(a), why_not_comparable(b)) if why)
        return f"not compared: {'; '.join(reasons) or 'untested'}"
    return ("**established**: " if found.claimed else "") + found.verdict()


def _delta(a: list[RunRecord], b: list[RunRecord]) -> float | None:
    """b − a in top-1 points; None when a side is missing or its EMA is short (left out of comparisons)."""
    stat_a, stat_b = top1_stat(a), top1_stat(b)
    if stat_a is None or stat_b is None or ema_short(a) or ema_short(b):
        return None
    return (stat_b.mean - stat_a.mean) * 100


def recipe_table(data: BoardInputs) -> Table:
    """Top-1 per model under each recipe (same sampler), and advanced − basic with Welch's test over seeds."""
    groups = group_runs(data.runs)
    rows = []
    for model, sampler in sorted({(m, s) for (m, _, s) in groups}):
        basic_runs, advanced_runs = groups.get((model, "basic", sampler), []), groups.get((model, "advanced", sampler), [])
        rows.append([model, sampler, top1_text(basic_runs), top1_text(advanced_runs),
                     _num(_delta(basic_runs, advanced_runs), "+.1f"),
                     _verdict(data, "recipe", model, sampler, basic_runs, advanced_runs)])
    return md(rows, ["model", "sampler", "basic top-1 %", "advanced top-1 %", "Δ (pts)",
                     "effect, 95 % interval, Holm-corrected test"])


def plateau_table(data: BoardInputs) -> tuple[str, Table]:
    """Top-1 gained over the last quarter of epochs, per run: a run gaining more was not trained to its plateau."""
    rows, judged, flat = [], 0, 0
    for (model, recipe, sampler), recs in group_runs(data.runs).items():
        for r in recs:
            curve, chance = [row.val_top1 for row in r.history], chance_of(r.num_classes)
            gain, plateau = last_quarter_gain(curve), at_plateau(curve, chance)
            judged += plateau is not None
            flat += bool(plateau)
            verdict = "yes" if plateau else ("**no** (near chance)" if near_chance(curve, chance) else "**no**")
            rows.append([model, recipe, sampler, r.seed, len(curve), _num(100 * curve[-1] if curve else None, ".1f"),
                         _num(gain, "+.1f"), DASH if plateau is None else verdict])
    summary = (f"{flat} of {judged} runs are at their plateau: they gained at most {PLATEAU_POINTS:g} top-1 points "
               f"over their last quarter of epochs and ended clear of chance (at least twice 1/classes); the final "
               f"epoch is reported, never the best one. Accuracy conclusions compare only cells whose every seed "
               f"is at its plateau.")
    return summary, md(rows, ["model", "recipe", "sampler", "seed", "epochs", "final top-1 %",
                              "last-quarter gain (pts)", "at plateau"])


def sampler_table(data: BoardInputs) -> Table:
    """Fixed vs multi-scale: accuracy, optimiser updates and training time per model and recipe."""
    groups = group_runs(data.runs)
    rows = []
    for model, recipe in sorted({(m, r) for (m, r, _) in groups}):
        fixed, multi = groups.get((model, recipe, "fixed"), []), groups.get((model, recipe, "multiscale"), [])
        f_time, m_time = _mean(fixed, "train_time_s"), _mean(multi, "train_time_s")
        rows.append([
            model, recipe, top1_text(fixed), top1_text(multi), _num(_delta(fixed, multi), "+.1f"),
            _verdict(data, "sampler", model, recipe, fixed, multi),
            _num(_mean(fixed, "updates"), ".0f"), _num(_mean(multi, "updates"), ".0f"),
            _num(f_time, ".0f"), _num(m_time, ".0f"),
        ])
    return md(rows, ["model", "recipe", "fixed top-1 %", "multi-scale top-1 %", "Δ (pts)",
                     "effect, 95 % interval, Holm-corrected test",
                     "fixed updates", "multi-scale updates", "fixed train (s)", "multi-scale train (s)"])


def flops_latency_table(data: BoardInputs) -> tuple[Table, Table]:
    """Per backend: rank by GMACs vs rank by measured latency, latency per GMAC, and the rank correlations."""
    rows, summary = [], []
    for backend in data.backends:
        models = sorted(m for m in data.costs if data.costs[m].gmacs and (m, backend) in data.latency)
        if not models:
            continue
        gmacs = [data.costs[m].gmacs for m in models]
        lat = [data.latency[(m, backend)].median_ms for m in models]
        g_rank, l_rank = ranks(gmacs), ranks(lat)
        for m, g, l, gr, lr in sorted(zip(models, gmacs, lat, g_rank, l_rank), key=lambda t: (t[3], t[0])):
            rows.append([backend, m, f"{g:.4f}", f"{gr:g}", f"{l:.2f}", f"{lr:g}", f"{l / g:.1f}"])
        agreement = rank_agreement(gmacs, lat)
        summary.append([backend, len(models), _num(agreement.spearman if agreement else None, "+.2f"),
                        _num(agreement.kendall if agreement else None, "+.2f")])
    table = md(rows, ["backend", "model", "GMACs", "GMACs rank", "latency (ms)", "latency rank", "ms per GMAC"])
    corr = md(summary, ["backend", "models", "Spearman ρ", "Kendall τ"])
    return table, corr


def reproduction_table(data: BoardInputs) -> Table:
    """Our params and GMACs (1000-class head, the paper's resolution) against the papers' figures."""
    rows = []
    for model in sorted(data.paper_costs):
        cost, pub = data.paper_costs[model], data.published.get(model)
        p_params, p_gmacs = getattr(pub, "params_m", None), getattr(pub, "gmacs", None)
        rows.append([
            model, _num(cost.resolution, "d"), _num(cost.params_m, ".3f"), _num(p_params, ".3f"),
            _num(100 * (cost.params_m / p_params - 1) if cost.params_m and p_params else None, "+.1f"),
            _num(cost.gmacs, ".3f"), _num(p_gmacs, ".2f"),
            _num(100 * (cost.gmacs / p_gmacs - 1) if cost.gmacs and p_gmacs else None, "+.1f"),
            getattr(pub, "source", "") or DASH,
        ])
    return md(rows, ["model", "res", "params (M)", "paper params (M)", "Δ %", "GMACs", "paper GMACs", "Δ %",
                     "source"])


def fused_note(labels: list[str]) -> list[str]:
    """The board's line on reparameterised architectures (none: no line, so other boards stay as they were)."""
    fused = fused_for_export(labels)
    if not fused:
        return []
    return [f"- **Fused**: {', '.join(fused)} are exported and timed reparameterised (parallel branches fused into "
            "one convolution, timm's `reparameterize_model`, before every export and latency, eager included); "
            "their accuracy and checkpoints are the trained, unfused model's."]
