"""`python -m zoo.leaderboard [STORE_DIR]`: regenerate STORE_DIR/README.md and its plots from the stores.

Reads `results.jsonl` (training) and the measurement stores (`measurements.jsonl`: params, FLOPs, latency; int8
accuracy; the op-class breakdown; see `zoo.report.measured` for which records are shown) and nothing else, so the
same stores always give a byte-identical README (no timestamps; rows and columns in a fixed order).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from zoo.config import WandbConfig, available_recipes, load_recipe, to_dict
from zoo.config.tasks import dense_recipe_note
from zoo.models import get_entry, list_models, model_name
from zoo.tracking.wandb_sink import WandbSink
from zoo.measure.backends import backend_names, display_order, spec_of
from zoo.measure.store import Measurement
from zoo.report.atomic import write_text_atomic
from zoo.report.comparisons import board_family
from zoo.report.conclusions import conclusions
from zoo.report.dense_tables import dense_findings, dense_runs, dense_section
from zoo.report.measured import BoardMeasurements, deploy_latency, load_measurements
from zoo.report.plots import accuracy_vs_latency, gmacs_vs_latency, learning_curves
from zoo.report.tables import (
    BoardInputs,
    Cost,
    Latency,
    SHORT_EMA_NOTE,
    Table,
    flops_latency_table,
    fused_note,
    cost_key,
    group_runs,
    main_boards,
    plateau_table,
    recipe_table,
    reproduction_table,
    sampler_table,
    top1_stat,
)
from zoo.report.runtime_tables import (
    breakdown_table,
    delegation_table,
    export_status_table,
    int8_accuracy_table,
    relative_to_mobilenet_table,
    runtime_latency_table,
)
from zoo.results import ResultsStore, RunRecord

def backend_order() -> list[str]:
    """The latency columns in the order the backends declare (`zoo.measure.backends.display_order`), each batch
    size a backend times beside it."""
    return [column_name(name, batch) for name in display_order(backend_names()) for batch in spec_of(name).batch_sizes]


def column_name(backend: str, batch: int) -> str:
    return backend if batch == 1 else f"{backend} b{batch}"


def _cell_order(record: Measurement) -> str:
    # The order costs have always been filled in (the last record of a model wins): keeps boards byte-identical.
    return str((record.model, record.resolution, record.backend, record.batch_size, record.num_classes))


def _params_m(record: Measurement) -> float | None:
    """Millions of parameters with a 1000-class head (the head it was built with when that is all we have)."""
    count = record.params_1k or record.params
    return count / 1e6 if count else None


def load_inputs(store_dir: Path) -> tuple[BoardInputs, BoardMeasurements]:
    """The finished runs, plus each trained architecture's costs and latency at its deployment resolution (1000
    classes, batch 1 and up) and its paper figures."""
    # The classification boards read classification runs only; the dense section (`zoo.report.dense_tables`)
    # reads the store again for the detection and segmentation runs.
    runs = [r for r in ResultsStore(store_dir).finished() if r.task == "classification"]
    measured = load_measurements(store_dir, {cost_key(r) for r in runs})
    costs: dict[str, Cost] = {}
    paper_costs: dict[str, Cost] = {}
    latency: dict[tuple[str, str], Latency] = {}
    columns: set[str] = set()
    for rec in sorted(measured.paper, key=_cell_order):
        paper_costs[rec.model] = Cost(_params_m(rec), rec.gmacs, rec.resolution)
    for rec in sorted(measured.deployed, key=_cell_order):
        if rec.gmacs is not None:
            costs[rec.model] = Cost(_params_m(rec), rec.gmacs, rec.resolution)
        if rec.timed:
            name = column_name(rec.backend, rec.batch_size)
            latency[(rec.model, name)] = Latency(rec.median_ms, rec.iqr_ms or 0.0, rec.runs or 0)
            columns.add(name)
    known = set(list_models())
    published = {m: get_entry(model_name(m)).published for m in set(costs) | set(paper_costs)
                 if model_name(m) in known}
    order = backend_order()
    ordered = [b for b in order if b in columns] + sorted(columns - set(order))
    outcomes = board_family(group_runs(runs))
    return BoardInputs(runs, costs, paper_costs, latency, ordered, published, outcomes), measured


def adaptations(runs: list[RunRecord]) -> list[str]:
    """What the runs changed in the stock recipes (every recipe alike, or it would be listed per recipe) and in the
    EMA time constants: the board must state any adaptation of the ImageNet recipes to its data set."""
    changed: set[str] = set()
    stock = {name: to_dict(load_recipe(name)) for name in available_recipes()}
    configs = [r.config for r in runs if r.config is not None]  # None: written by another zoo version
    for cfg in configs:
        base = stock.get(cfg.recipe.name, {})
        changed |= {f"{k}={json.dumps(v)}" for k, v in to_dict(cfg.recipe).items() if k in base and base[k] != v}
    scales = sorted({cfg.ema_time_scale for cfg in configs} - {1.0})
    notes = [f"recipe fields changed for this data set: {', '.join(sorted(changed))}"] if changed else []
    return notes + [f"EMA time constants scaled by {scale:g} (decay' = 1 − (1 − decay)/scale), every recipe alike"
                    for scale in scales]


def budget_lines(runs: list[RunRecord]) -> list[str]:
    budgets = sorted({(r.epochs, r.global_batch, r.config.lr) for r in runs if r.config is not None})
    commits = sorted({r.git_commit or "?" for r in runs})
    return ["- **Budget**: " + ("; ".join(f"{e} epochs, global batch {b}, lr {lr:g}" for e, b, lr in budgets) or "–")
            + ". Every model, recipe and sampler shares it: only regularisation (recipe) or sampling differs.",
            f"- **Runs**: {len(runs)} finished, seeds {sorted({r.seed for r in runs}) or '–'}; "
            f"commit(s) {', '.join(commits) or '–'}."]


def dense_board(title: str, dense: list[RunRecord], section: str, measured: BoardMeasurements) -> str:
    """A store of detection/segmentation runs only: what they support and their section, without the
    classification boards (empty tables, and "train at least two seeds" beside seeded dense runs)."""
    parts = [f"# zoo leaderboard: {title}", "", "Generated by `python -m zoo.leaderboard` from `results.jsonl` in "
             "this folder; do not edit by hand. Latency of the whole detectors and segmenters is on the "
             "architecture board (`python -m zoo.measure --board DIR --dense`).", "",
             f"- **Data set**: {', '.join(sorted({r.dataset for r in dense}))}; scores at the matrix's evaluation "
             "resolution.", *budget_lines(dense), "", "## Conclusions the data supports\n",
             *[f"- {finding}" for finding in dense_findings(dense)], "", section]
    for heading, _, table in runtime_sections(measured) if measured.batch1 else []:
        parts += [heading + "\n" if heading else "", table.markdown(), ""]
    return "\n".join(parts).rstrip() + "\n"


def _header(inputs: BoardInputs, measured: BoardMeasurements, title: str) -> str:
    runs = inputs.runs
    datasets = sorted({r.dataset for r in runs})
    machines = {f"{m.machine.get('cpu_model', '?')} ({m.machine.get('cpus', '?')} cores"
                + (f", {m.machine['gpu']}" if m.machine.get("gpu") else "") + ")"
                for m in measured.deployed if m.timed and isinstance(m.machine, dict)}
    lines = [
        f"# zoo leaderboard: {title}",
        "",
        "Generated by `python -m zoo.leaderboard` from `results.jsonl` and `measurements.jsonl` in this folder; "
        "do not edit by hand.",
        "",
        f"- **Data set**: {', '.join(datasets) or '–'}; accuracy at the matrix's evaluation resolution; params, "
        "GMACs and latency of each architecture at its deployment resolution (the paper's: 256 px for MobileViT, "
        "224 px for the others) with a 1000-class head, independent of the resolution it was trained at.",
        *budget_lines(runs),
        *[f"- **Adapted**: {note}." for note in adaptations(runs)],
        "- **Latency machine**: " + ("; ".join(sorted(machines)) if machines else "not measured") + ".",
        "- Top-1 is micro-averaged (as papers report), of the EMA weights when the recipe uses EMA. "
        "`¹` = a single seed (no spread known, differences untested); `≈` = the difference to the next row is "
        "not established: not significant after the board's correction for its number of comparisons (see "
        "Conclusions), or a side left out of the comparisons.",
    ]
    if any(r.ema_short for r in runs):  # only then: boards without such cells stay byte-identical
        lines.append(f"- {SHORT_EMA_NOTE}.")
    lines += fused_note(sorted(measured.resolutions))
    return "\n".join(lines)



def _plots(inputs: BoardInputs, out_dir: Path) -> list[str]:
    links = []
    if inputs.backends:
        backend = inputs.backends[0]
        points: dict[str, list[tuple[str, float, float]]] = {}
        for (model, recipe, sampler), recs in group_runs(inputs.runs).items():
            stat, lat = top1_stat(recs), inputs.latency.get((cost_key(recs[0]), backend))
            if stat and lat:
                points.setdefault(f"{recipe}/{sampler}", []).append((model, lat.median_ms, stat.mean))
        if points:
            accuracy_vs_latency(points, backend, out_dir / "top1_vs_latency.png")
            links.append("top1_vs_latency.png")
        per_backend = {
            b: [(m, inputs.costs[m].gmacs, inputs.latency[(m, b)].median_ms)
                for m in sorted(inputs.costs) if inputs.costs[m].gmacs and (m, b) in inputs.latency]
            for b in inputs.backends
        }
        if any(per_backend.values()):
            gmacs_vs_latency(per_backend, out_dir / "gmacs_vs_latency.png")
            links.append("gmacs_vs_latency.png")
    return links


def runtime_sections(measured: BoardMeasurements) -> list[tuple[str, str, Table]]:
    """Latency on the runtimes devices use, delegation, int8 accuracy, where the time goes, export status."""
    records, resolutions = measured.batch1, measured.resolutions
    backends = [b for b in backend_order() if any(r.backend == b for r in records)]
    backends += sorted({r.backend for r in records} - set(backends))
    return [
        ("## 6. Latency on the runtimes phones use (ms, batch 1, at each model's deployment resolution; `-1t`: one "
         "thread, as on a phone's big core)", "runtimes/latency",
         runtime_latency_table(records, backends, resolutions)),
        ("", "runtimes/relative_to_mobilenetv2", relative_to_mobilenet_table(records, backends, resolutions)),
        ("## 7. Why a model is slow: what each runtime delegates to its fast kernels", "runtimes/delegation",
         delegation_table(records, resolutions)),
        ("## 8. int8: validation top-1 of the trained models, fp32 against each runtime's int8 export", "int8",
         int8_accuracy_table(measured.int8)),
        ("## 9. Where the time goes: ONNX Runtime's profiler (1 thread) by operator class, beside GMACs",
         "breakdown", breakdown_table(measured.breakdown)),
        ("## 10. Export status per runtime (failures kept; Core ML predictions need macOS: time the exported "
         "`.mlpackage` on an iPhone with Xcode's performance report)", "exports",
         export_status_table(records, backends)),
    ]


def tables(inputs: BoardInputs, measured: BoardMeasurements) -> list[tuple[str, str, Table]]:
    """(section heading, key, table) in README order; the key names the table in W&B."""
    flops, corr = flops_latency_table(inputs)
    out = [(f"### {title}", "board/" + title.replace(" recipe, ", "-").replace(" sampler", ""), table)
           for title, table in main_boards(inputs)]
    return out + [
        ("## 2. Basic vs advanced recipe", "recipes", recipe_table(inputs)),
        ("## 3. Fixed resolution vs multi-scale sampler", "samplers", sampler_table(inputs)),
        ("## 4. FLOPs vs measured latency", "flops_vs_latency/correlation", corr),
        ("", "flops_vs_latency/ranks", flops),
        ("## 5. Reproduction: our params and GMACs against the papers", "reproduction", reproduction_table(inputs)),
        *runtime_sections(measured),
    ]


def curves_by_cell(inputs: BoardInputs) -> dict[tuple[str, str], dict[str, list[list[float]]]]:
    curves: dict[tuple[str, str], dict[str, list[list[float]]]] = {}
    for (model, recipe, sampler), recs in group_runs(inputs.runs).items():
        curves.setdefault((recipe, sampler), {})[model] = [[row.val_top1 for row in r.history] for r in recs]
    return curves


def render(inputs: BoardInputs, measured: BoardMeasurements, title: str, out_dir: Path,
           sections: list[tuple[str, str, Table]], dense: str = "") -> str:
    findings = conclusions(group_runs(inputs.runs), deploy_latency(measured.batch1), inputs.outcomes)
    parts = [_header(inputs, measured, title), "", findings.markdown(), "",
             "## 1. Main boards (sorted by top-1)\n"]
    for heading, key, table in sections:
        if heading.startswith("## 4."):
            heading += ("\n\nRank agreement between GMACs and latency per backend "
                        "(1 = FLOPs predict the latency order):\n")
        if heading:
            parts.append(heading + "\n")
        parts += [table.markdown(), ""]
    summary, plateau = plateau_table(inputs)
    parts += ["## Trained to a plateau?\n", summary, "", plateau.markdown(), ""]
    if dense:  # only then: a classification-only board stays byte-identical
        parts += [dense, ""]
    links = _plots(inputs, out_dir)
    if inputs.runs and any(r.history for r in inputs.runs):
        learning_curves(curves_by_cell(inputs), out_dir / "learning_curves.png")
        links.append("learning_curves.png")
    if links:
        parts += ["## Plots\n", *[f"![{name}]({name})\n" for name in links]]
    return "\n".join(parts).rstrip() + "\n"


def dense_text(dense: list[RunRecord], inputs: BoardInputs, classification_store: str | Path | None) -> str:
    """The dense section; classification ranks from this store's runs, else from `classification_store`'s."""
    if not dense:
        return ""
    reference, source = inputs.runs, "this store"
    if not reference and classification_store is not None:
        reference = [r for r in ResultsStore(Path(classification_store)).finished() if r.task == "classification"]
        source = f"`{classification_store}`"
    return dense_section(dense, reference, dense_recipe_note(tuple(sorted({r.task for r in dense}))), source)


def write_leaderboard(store_dir: str | Path, title: str | None = None, wandb: WandbConfig | None = None,
                      wandb_dir: str | Path | None = None, classification_store: str | Path | None = None) -> Path:
    """Regenerate README.md and plots; with `wandb`, also log the tables and plots to a summary W&B run."""
    store_dir = Path(store_dir)
    store_dir.mkdir(parents=True, exist_ok=True)
    inputs, measured = load_inputs(store_dir)
    sections = tables(inputs, measured)
    dense_records = dense_runs(ResultsStore(store_dir).finished())
    dense = dense_text(dense_records, inputs, classification_store)
    if dense and not inputs.runs:
        text = dense_board(title or store_dir.name, dense_records, dense, measured)
    else:
        text = render(inputs, measured, title or store_dir.name, store_dir, sections, dense)
    path = store_dir / "README.md"
    write_text_atomic(path, text)
    if wandb is not None and wandb.mode != "disabled":
        log_to_wandb(sections, store_dir, title or store_dir.name, wandb, Path(wandb_dir or store_dir))
    return path


def log_to_wandb(sections: list[tuple[str, str, Table]], store_dir: Path, title: str, cfg: WandbConfig,
                 wandb_dir: Path) -> str | None:
    """One summary run per matrix (job_type "leaderboard"): every table as a wandb.Table, the plots as images."""
    sink = WandbSink.open(project=cfg.project, entity=cfg.entity, group=cfg.group or title, name=f"{title}-leaderboard",
                          tags=["leaderboard", *cfg.tags], config={"title": title}, mode=cfg.mode,
                          dir=str(wandb_dir), job_type="leaderboard")
    for _, key, table in sections:
        sink.log_table(key, table.headers, table.rows)
    for image in sorted(store_dir.glob("*.png")):
        sink.log_image(f"plots/{image.stem}", image)
    run_id = sink.run_id
    sink.finish()
    return run_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.leaderboard", description=__doc__.splitlines()[0])
    parser.add_argument("store_dir", nargs="?", default="leaderboard")
    parser.add_argument("--title", default=None)
    parser.add_argument("--wandb", choices=["online", "offline"], help="also log the tables to a W&B summary run")
    parser.add_argument("--wandb-project", default="zoo")
    parser.add_argument("--classification-store", default=None, metavar="DIR",
                        help="classification ranks for the dense section when STORE_DIR has no classification runs")
    args = parser.parse_args(argv)
    if not (Path(args.store_dir) / "results.jsonl").is_file():
        print(f"error: {args.store_dir}/results.jsonl not found (train with `python -m zoo.run runs.yaml`)",
              file=sys.stderr)
        return 2
    wandb = WandbConfig(project=args.wandb_project, mode=args.wandb) if args.wandb else None
    print(write_leaderboard(args.store_dir, args.title, wandb, wandb_dir=Path(args.store_dir).parent / "out",
                            classification_store=args.classification_store))
    return 0


if __name__ == "__main__":
    sys.exit(main())
