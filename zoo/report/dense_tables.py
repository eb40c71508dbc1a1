"""The board's dense section: detection mAP and segmentation mIoU per backbone (mean ± std over seeds, Welch's
test against the next row, as the classification boards), and whether the backbones' order carries over from
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
from zoo.report.stats import SeedStat, at_plateau, chance_of, welch
from zoo.report.tables import DASH, Table, md
from zoo.results import RunRecord

DENSE_TASKS = ("detection", "segmentation")
METRIC_TEXT = {"detection": "box mAP@[.5:.95] (COCO, %)", "segmentation": "mIoU (%)"}


def dense_runs(runs: list[RunRecord]) -> list[RunRecord]:
    return [r for r in runs if r.task in DENSE_TASKS and r.metric is not None]


def _cells(runs: list[RunRecord], task: str) -> dict[tuple[str, str], dict[str, list[RunRecord]]]:
    cells: dict[tuple[str, str], dict[str, list[RunRecord]]] = defaultdict(lambda: defaultdict(list))
    for run in sorted(runs, key=lambda r: (r.model, r.seed, r.run_id)):
        if run.task == task:
            cells[(run.recipe, run.sampler)][run.model].append(run)
    return cells


def task_table(runs: list[RunRecord], task: str, recipe: str, sampler: str) -> Table:
    """One task's board under one recipe and sampler, sorted by the metric's mean over seeds."""
    by_model = _cells(runs, task)[(recipe, sampler)]
    stats = {m: SeedStat.of([r.metric for r in recs]) for m, recs in by_model.items()}  # type: ignore[misc]
    order = sorted(stats, key=lambda m: (-stats[m].mean, m))
    rows = []
    for i, model in enumerate(order):
        recs = by_model[model]
        text = stats[model].format() + ("¹" if stats[model].n == 1 else "")
        verdict = DASH
        if i + 1 < len(order):
            nxt = welch([r.metric for r in by_model[order[i + 1]]], [r.metric for r in recs])  # type: ignore[misc]
            verdict = ("≈ " if nxt.p is not None and not nxt.beyond_noise else "") + nxt.verdict()
        extra = []
        if task == "detection":
            fifty = [r.dense_metrics.get("map_50") for r in recs if r.dense_metrics.get("map_50") is not None]
            extra = [SeedStat.of(fifty).format() if fifty else DASH]
        params = f"{recs[0].params / 1e6:.2f}" if recs[0].params else DASH
        rows.append([i + 1, model, text, *extra, verdict, params])
    headers = ["#", "backbone", METRIC_TEXT[task], *(["mAP@.5 (%)"] if task == "detection" else []),
               "vs next (Welch)", "params (M, with head)"]
    return md(rows, headers)


def _metrics(recs: list[RunRecord]) -> list[float]:
    return [r.metric for r in recs if r.metric is not None]


def dense_findings(runs: list[RunRecord]) -> list[str]:
    """What the dense runs support, per task and (recipe, sampler) cell: every pair of backbones whose gap is beyond
    seed noise (Welch, as the classification board), else that the cell's order is not established."""
    findings = []
    for task in DENSE_TASKS:
        for (recipe, sampler), by_model in sorted(_cells(runs, task).items()):
            scores = {m: values for m, recs in by_model.items() if (values := _metrics(recs))}
            order = sorted(scores, key=lambda m: (-sum(scores[m]) / len(scores[m]), m))
            leads = []
            for i, ahead in enumerate(order):
                for behind in order[i + 1:]:
                    gap = welch(scores[behind], scores[ahead])
                    if gap.beyond_noise:
                        leads.append(f"{ahead} above {behind} by {gap.delta * 100:.1f} pts ({gap.verdict()})")
            where = f"{task}, {recipe} recipe, {sampler} sampler"
            findings.append(f"{where}: " + "; ".join(leads) if leads else
                            f"{where}: no gap between the {len(order)} backbones is beyond seed noise (Welch, "
                            "p ≥ 0.05, or a single seed): their order is not established")
    return findings


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
             "recipe has EMA. `¹` = a single seed; `≈` = within seed noise (Welch, p ≥ 0.05)."]
    if note:
        parts.append(f"\n- {note}.")
    parts.append("")
    for task in DENSE_TASKS:
        for recipe, sampler in sorted(_cells(dense, task)):
            parts += [f"### {task}: {recipe} recipe, {sampler} sampler\n",
                      task_table(dense, task, recipe, sampler).markdown(), ""]
    ranks, taus = rank_table(dense, classification)
    where = (f"classification top-1 from the classification runs of {classification_from} in the same recipe and "
             "sampler cells (`*`: a run of that cell not at its plateau)"
             if task_means(matched_classification(dense, classification), "classification")
             else "no classification runs of these backbones and cells: train the "
             "classification matrix into the same store_dir (or name its store as `classification_store:` in "
             "runs.yaml, `--classification-store` here) for that column")
    parts += ["### Does the order carry over? Classification rank vs detection rank vs segmentation rank\n",
              f"Each backbone's mean over every cell of the task; {where}.\n", ranks.markdown(), "",
              taus.markdown(), ""]
    return "\n".join(parts)
