"""The board's dense section: detection mAP and segmentation mIoU per backbone (mean ± std over seeds; the order
against the next row from the dense runs' one family of comparisons, tested as the classification boards' are:
`dense_family`), and whether the backbones' order carries over from
classification to detection and segmentation (Kendall τ between the tasks' rankings).

A backbone's score in a task is the mean over its seeds in one (recipe, sampler) cell; the rank table uses each
backbone's mean over every cell of the task, and its classification column only the classification runs of the
(recipe, sampler) cells the dense runs trained, so the columns compare the same backbones under the same recipes
and samplers. A classification score whose runs did not all reach their plateau (`zoo.report.stats.at_plateau`)
is marked `*`: the default board compares only plateaued cells, and a rank from an unfinished run is weaker.
"""
from __future__ import annotations

from collections import defaultdict

from zoo.report.architectures import kendall_tau
from zoo.report.inference import Family, Outcome, Outcomes
from zoo.report.stats import SeedStat, at_plateau, chance_of
from zoo.report.tables import DASH, Table, md
from zoo.results import RunRecord

DENSE_TASKS = ("detection", "segmentation")
METRIC_TEXT = {"detection": "box mAP@[.5:.95] (COCO, %)", "segmentation": "mIoU (%)"}


def dense_runs(runs: list[RunRecord]) -> list[RunRecord]:
    return [r for r in runs if r.task in DENSE_TASKS and r.metric is not None]


def init_of(run: RunRecord) -> str:
    """Where the run's backbone started: "scratch", or its source's kind and where ("matrix runs.yaml",
    "file model.safetensors", "timm"), so that runs fine-tuned from different sources are separate settings."""
    if run.init_kind == "scratch":
        return "scratch"
    return f"{run.init_kind} {run.init_from}" if run.init_from else run.init_kind


Setting = tuple[str, str, str]  # (recipe, sampler, init)


def _cells(runs: list[RunRecord], task: str) -> dict[Setting, dict[str, list[RunRecord]]]:
    cells: dict[Setting, dict[str, list[RunRecord]]] = defaultdict(lambda: defaultdict(list))
    for run in sorted(runs, key=lambda r: (r.model, r.seed, r.run_id)):
        if run.task == task:
            cells[(run.recipe, run.sampler, init_of(run))][run.model].append(run)
    return cells


def _where(task: str, setting: Setting) -> str:
    recipe, sampler, init = setting
    return f"{task}, {recipe} recipe, {sampler} sampler, {init}"


def _pair(task: str, setting: Setting, a: str, b: str) -> str:
    return f"{_where(task, setting)}: " + " vs ".join(sorted((a, b)))


def dense_family(runs: list[RunRecord]) -> Outcomes:
    """Every comparison the dense section makes: each pair of backbones per task and setting, and for each backbone
    and task fine-tuned − scratch where both were trained; tested together (`zoo.report.inference`)."""
    family = Family("dense runs")
    for task in DENSE_TASKS:
        cells = _cells(runs, task)
        for setting, by_model in sorted(cells.items()):
            scores = {m: v for m, recs in by_model.items() if len(v := _metrics(recs)) >= 2}
            for m in sorted(scores):
                family.add_cell(scores[m])
            names = sorted(scores)
            for i, a in enumerate(names):
                for b in names[i + 1:]:
                    family.add("backbones", _pair(task, setting, a, b), a, scores[a], b, scores[b])
            recipe, sampler, init = setting
            scratch = cells.get((recipe, sampler, "scratch"), {})
            for m in names if init != "scratch" else []:
                if len(base := _metrics(scratch.get(m, []))) >= 2:
                    family.add("transfer", f"{_where(task, setting)}: {m}", "scratch", base, init, scores[m])
    return family.outcomes()


def task_table(runs: list[RunRecord], task: str, setting: Setting, outcomes: Outcomes) -> Table:
    """One task's board in one setting, sorted by the metric's mean over seeds."""
    by_model = _cells(runs, task)[setting]
    stats = {m: SeedStat.of(_metrics(recs)) for m, recs in by_model.items()}
    order = sorted(stats, key=lambda m: (-stats[m].mean, m))
    rows = []
    for i, model in enumerate(order):
        recs = by_model[model]
        text = stats[model].format() + ("¹" if stats[model].n == 1 else "")
        verdict = DASH
        if i + 1 < len(order):
            found = outcomes.of("backbones", _pair(task, setting, model, order[i + 1]))
            verdict = "untested: a single seed" if found is None else (
                ("" if found.claimed else "≈ ") + found.towards(model).verdict())
        extra = []
        if task == "detection":
            fifty = [r.dense_metrics.get("map_50") for r in recs if r.dense_metrics.get("map_50") is not None]
            extra = [SeedStat.of(fifty).format() if fifty else DASH]
        params = f"{recs[0].params / 1e6:.2f}" if recs[0].params else DASH
        rows.append([i + 1, model, text, *extra, verdict, params])
    headers = ["#", "backbone", METRIC_TEXT[task], *(["mAP@.5 (%)"] if task == "detection" else []),
               "vs next (effect, 95 % interval, Holm)", "params (M, with head)"]
    return md(rows, headers)


def transfer_table(outcomes: Outcomes) -> Table | None:
    """Fine-tuned − scratch per backbone, task and setting (None when no backbone was trained both ways)."""
    found = [o for o in outcomes.results if o.test.kind == "transfer"]
    if not found:
        return None
    rows = [[o.test.label.rsplit(": ", 1)[0], o.test.label.rsplit(": ", 1)[1], SeedStat.of(list(o.test.a)).format(),
             SeedStat.of(list(o.test.b)).format(), ("**established**: " if o.claimed else "") + o.verdict(),
             f"{o.p_improvement:.2f}"] for o in found]
    return md(rows, ["task and setting", "backbone", "scratch (%)", "fine-tuned (%)", "Δ, 95 % interval, Holm",
                     "P(fine-tuned > scratch)"])


def _metrics(recs: list[RunRecord]) -> list[float]:
    return [r.metric for r in recs if r.metric is not None]


def dense_findings(runs: list[RunRecord], outcomes: Outcomes | None = None) -> list[str]:
    """What the dense runs support: the family's line, then per task and setting every pair of backbones the
    family establishes (else that the order is not established), and every established transfer effect."""
    outcomes = outcomes if outcomes is not None else dense_family(runs)
    findings = [outcomes.summary()]
    for task in DENSE_TASKS:
        for setting, by_model in sorted(_cells(runs, task).items()):
            scores = {m: values for m, recs in by_model.items() if (values := _metrics(recs))}
            order = sorted(scores, key=lambda m: (-sum(scores[m]) / len(scores[m]), m))
            leads = []
            for i, ahead in enumerate(order):
                for behind in order[i + 1:]:
                    found = outcomes.of("backbones", _pair(task, setting, ahead, behind))
                    if found is not None and found.claimed:
                        leads.append(f"{ahead} above {behind}: {found.towards(ahead).verdict()}")
            where = _where(task, setting)
            findings.append(f"{where}: " + "; ".join(leads) if leads else
                            f"{where}: no gap between the {len(order)} backbones is established (after the "
                            "correction, or a single seed): their order is not established")
    findings += [f"{o.test.label}: fine-tuned − scratch {o.verdict()}" for o in outcomes.claims
                 if o.test.kind == "transfer"]
    return findings


def ranked_runs(dense: list[RunRecord]) -> list[RunRecord]:
    """The dense runs the rank table reads: the fine-tuned ones where there are any (the papers fine-tune a
    pretrained backbone), else the scratch ones."""
    tuned = [r for r in dense if init_of(r) != "scratch"]
    return tuned or dense


def task_means(runs: list[RunRecord], task: str) -> dict[str, float]:
    """Each backbone's mean score in `task` over its runs (top-1 for classification, the metric otherwise)."""
    values: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        if run.task != task or run.status != "finished":
            continue
        value = run.top1 if task == "classification" else run.metric
        if value is not None:
            values[run.model].append(value)
    return {m: sum(v) / len(v) for m, v in values.items()}


def matched_classification(runs: list[RunRecord], classification: list[RunRecord]) -> list[RunRecord]:
    """The classification runs of the backbones and (recipe, sampler) cells that `runs` (dense) trained."""
    cells = {(r.recipe, r.sampler) for r in runs}
    backbones = {r.model for r in runs}
    return [r for r in classification if (r.recipe, r.sampler) in cells and r.model in backbones]


def unfinished_backbones(classification: list[RunRecord]) -> set[str]:
    """Backbones some classification run of which did not reach its plateau (or is too short to tell)."""
    return {r.model for r in classification
            if not at_plateau([row.val_top1 for row in r.history], chance_of(r.num_classes))}


def rank_table(runs: list[RunRecord], classification: list[RunRecord]) -> tuple[Table, Table]:
    """Per backbone its rank in each task (1 = best), and Kendall τ between each pair of tasks; `classification`
    is narrowed to `matched_classification`."""
    classification = matched_classification(runs, classification)
    means = {"classification": task_means(classification, "classification"),
             **{task: task_means(runs, task) for task in DENSE_TASKS}}
    tasks = [t for t in means if means[t]]
    models = sorted({m for t in tasks for m in means[t]})
    ranked = {t: {m: i + 1 for i, m in enumerate(sorted(means[t], key=lambda m: (-means[t][m], m)))} for t in tasks}
    unfinished = unfinished_backbones(classification)

    def cell(task: str, model: str) -> str:
        if model not in ranked[task]:
            return DASH
        mark = "*" if task == "classification" and model in unfinished else ""
        return f"{ranked[task][model]} ({means[task][model] * 100:.1f}{mark})"

    rows = [[m, *[cell(t, m) for t in tasks]] for m in models]
    ranks = md(rows, ["backbone", *[f"{t} rank (score %)" for t in tasks]])
    pairs = []
    for i, a in enumerate(tasks):
        for b in tasks[i + 1:]:
            tau, n = kendall_tau(means[a], means[b])
            # nan: one task's scores all tie (no order to compare), shown as undefined, not as a number
            pairs.append([f"{a} vs {b}", DASH if tau is None or tau != tau else f"{tau:.2f}", n])
    return ranks, md(pairs, ["tasks", "Kendall τ (1: same order)", "backbones in both"])


def dense_section(runs: list[RunRecord], classification: list[RunRecord], note: str | None,
                  classification_from: str = "this store") -> str:
    """The README's dense section (empty when the store has no dense run); `classification_from` says where the
    classification runs came from."""
    dense = dense_runs(runs)
    if not dense:
        return ""
    parts = ["## Detection and segmentation over the same backbones\n",
             "SSDLite (torchvision's head over the backbone's stride-16/32 maps plus extra layers) and DeepLabv3 "
             "(ASPP at output stride 16), the same recipe for every backbone; scores of the EMA weights when the "
             "recipe has EMA. `¹` = a single seed; `≈` = the order against the next row is not established (see the "
             "dense family's line in the conclusions: every comparison below is tested together, Holm-corrected)."]
    if note:
        parts.append(f"\n- {note}.")
    parts.append("")
    outcomes = dense_family(dense)
    for task in DENSE_TASKS:
        for setting in sorted(_cells(dense, task)):
            recipe, sampler, init = setting
            parts += [f"### {task}: {recipe} recipe, {sampler} sampler, backbone from {init}\n",
                      task_table(dense, task, setting, outcomes).markdown(), ""]
    transfer = transfer_table(outcomes)
    if transfer is not None:
        parts += ["### Fine-tuned against scratch, per backbone (the same budget)\n", transfer.markdown(), ""]
    ranked = ranked_runs(dense)
    ranks, taus = rank_table(ranked, classification)
    where = (f"classification top-1 from the classification runs of {classification_from} in the same recipe and "
             "sampler cells (`*`: a run of that cell not at its plateau)"
             if task_means(matched_classification(dense, classification), "classification")
             else "no classification runs of these backbones and cells: train the "
             "classification matrix into the same store_dir (or name its store as `classification_store:` in "
             "runs.yaml, `--classification-store` here) for that column")
    inits = sorted({init_of(r) for r in ranked})
    protocol = "" if "scratch" in inits else " (the papers' protocol: fine-tuned)"
    parts += ["### Does the order carry over? Classification rank vs detection rank vs segmentation rank\n",
              f"Each backbone's mean over every cell of the task, dense runs whose backbone started from "
              f"{', '.join(inits)}{protocol}; "
              f"{where}.\n", ranks.markdown(), "",
              taus.markdown(), ""]
    return "\n".join(parts)
