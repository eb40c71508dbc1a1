"""Tables of latency on phone runtimes (issue 11), built from measurement records alone. Pure functions.

Each function takes `zoo.measure.store.Measurement` records, at most one per (model, resolution, backend): the
store's latest records of one machine per backend, batch 1 (`zoo.report.measured` chooses them), and returns a
`Table`. Failed and skipped records stay visible as cells ("failed: reason") instead of disappearing.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from zoo.measure.store import Breakdown, Int8Record, Measurement
from zoo.models import list_models, published
from zoo.report.tables import DASH, Table, md

__all__ = [
    "breakdown_table",
    "delegation_table",
    "export_status_table",
    "int8_accuracy_table",
    "paper_ne_cpu_ms",
    "relative_to_mobilenet_table",
    "runtime_latency_table",
]

REFERENCE_MODEL = "mobilenetv2_100"
# Column order of the op-class breakdown (zoo.measure.flops.OP_CLASSES); unknown classes go last.
CLASS_ORDER = ("convolution", "depthwise conv", "matmul/linear", "attention", "normalization", "reshape/transpose",
               "resize", "elementwise", "other")


def paper_ne_cpu_ms(reference: str = REFERENCE_MODEL) -> dict[str, tuple[float, float]]:
    """The registered models' (Neural Engine ms, CPU ms) from the paper table that times `reference` on both
    (MobileViT's Table 3, iPhone 12): figures of one table on one device only, so that their ratios compare."""
    ref = published(reference)
    out = {}
    for name in list_models():
        figures = published(name)
        if figures.paper_latency_ms is not None and figures.paper_cpu_latency_ms is not None and \
                (figures.paper_device, figures.latency_source) == (ref.paper_device, ref.latency_source):
            out[name] = (figures.paper_latency_ms, figures.paper_cpu_latency_ms)
    return out


def _by_cell(records: Iterable[Measurement]) -> dict[tuple[str, int, str], Measurement]:
    """(model, resolution, backend) -> its record, in the records' order; two records of one cell are a caller's
    mistake (two machines, batch sizes or heads mixed), not something to settle here."""
    cells: dict[tuple[str, int, str], Measurement] = {}
    for record in records:
        cell = (record.model, record.resolution, record.backend)
        if cell in cells:
            raise ValueError(f"two records for {cell}: pass one machine's batch-1 records (the store's latest)")
        cells[cell] = record
    return cells


def _order(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _cell(record: Measurement | None, digits: int = 1) -> str:
    if record is None:
        return DASH
    if record.timed:
        return f"{record.median_ms:.{digits}f}"
    reason = (record.reason or "")[:60]
    return f"{record.status}: {reason}" if reason else record.status


def _deploy(records: Iterable[Measurement], deploy_res: Mapping[str, int] | None) -> list[Measurement]:
    """Records at each model's deployment resolution (all records when `deploy_res` is None)."""
    records = list(records)
    if deploy_res is None:
        return records
    return [r for r in records if r.resolution == deploy_res.get(r.model, r.resolution)]


def runtime_latency_table(records: Iterable[Measurement], backends: Sequence[str] | None = None,
                          deploy_res: Mapping[str, int] | None = None) -> Table:
    """Model × runtime median latency (ms, batch 1) at deployment resolution; fp32 and int8 backends as columns."""
    chosen = _deploy(records, deploy_res)
    cells = _by_cell(chosen)
    backends = list(backends or _order(r.backend for r in chosen))
    rows = []
    for model, res in _order((k[0], k[1]) for k in cells):
        gmacs = next((r.gmacs for k, r in cells.items() if k[:2] == (model, res)), None)
        rows.append([model, res, DASH if gmacs is None else f"{gmacs:.3f}",
                     *[_cell(cells.get((model, res, b))) for b in backends]])
    return md(rows, ["model", "res", "GMACs", *[f"{b} ms" for b in backends]])


def relative_to_mobilenet_table(records: Iterable[Measurement], backends: Sequence[str] | None = None,
                                deploy_res: Mapping[str, int] | None = None,
                                paper: Mapping[str, tuple[float, float]] | None = None) -> Table:
    """Each model's latency ÷ MobileNetV2's on the same runtime, beside the paper's iPhone-12 ratios (`paper`:
    model -> (Neural Engine ms, CPU ms); default the registry's, `paper_ne_cpu_ms`)."""
    paper = paper_ne_cpu_ms() if paper is None else paper
    chosen = [r for r in _deploy(records, deploy_res) if r.timed]
    latest = {(k[0], k[2]): r for k, r in _by_cell(chosen).items()}  # one resolution per model: the deployment one
    backends = list(backends or _order(r.backend for r in chosen))
    models = _order(r.model for r in chosen)
    ref_paper = paper.get(REFERENCE_MODEL)
    rows = []
    for model in models:
        cells = []
        for backend in backends:
            mine, ref = latest.get((model, backend)), latest.get((REFERENCE_MODEL, backend))
            cells.append(DASH if not (mine and ref) else f"{mine.median_ms / ref.median_ms:.2f}×")
        figures = paper.get(model)
        paper_cells = [DASH, DASH] if not (figures and ref_paper) else [
            f"{figures[0] / ref_paper[0]:.2f}×", f"{figures[1] / ref_paper[1]:.2f}×"]
        rows.append([model, *cells, *paper_cells])
    return md(rows, ["model", *[f"{b} ÷ MNv2" for b in backends], "paper iPhone-12 NE ÷ MNv2",
                     "paper iPhone-12 CPU ÷ MNv2"])


def int8_accuracy_table(rows: Iterable[Int8Record]) -> Table:
    """`zoo.measure.store.Int8Record`s: fp32 vs int8 top-1 (a run skipped for want of a checkpoint has neither, nor a
    runtime)."""
    out = []
    for row in rows:
        fp32, int8 = row.fp32_top1, row.int8_top1
        out.append([row.model, row.runtime or DASH, DASH if fp32 is None else f"{fp32:.2f}",
                    DASH if int8 is None else f"{int8:.2f}",
                    DASH if int8 is None or fp32 is None else f"{fp32 - int8:+.2f}",
                    row.status if row.status == "ok" else f"{row.status}: {str(row.reason or '')[:60]}"])
    return md(out, ["model", "int8 runtime", "fp32 top-1", "int8 top-1", "drop (points)", "status"])


def export_status_table(records: Iterable[Measurement], backends: Sequence[str] | None = None) -> Table:
    """Model@res × runtime: did export (and the parity check) succeed? Failures keep their reason."""
    records = list(records)
    latest = _by_cell(records)
    backends = list(backends or _order(r.backend for r in records))

    def status(record: Measurement | None) -> str:
        if record is None:
            return DASH
        if record.status == "ok" or record.details.get("exported"):
            return "ok"
        return _cell(record)

    rows = [[f"{m}@{res}", *[status(latest.get((m, res, b))) for b in backends]]
            for m, res in _order((k[0], k[1]) for k in latest)]
    return md(rows, ["model", *backends])


def delegation_table(records: Iterable[Measurement], deploy_res: Mapping[str, int] | None = None) -> Table:
    """How much of each graph the runtime delegates to XNNPACK, and the top ops left out (ExecuTorch counts)."""
    rows = []
    for (model, res, backend), record in _by_cell(_deploy(records, deploy_res)).items():
        delegation = record.details.get("delegation")
        if not delegation:
            continue
        if "delegated_nodes" in delegation:
            done, left = delegation["delegated_nodes"], delegation["non_delegated_nodes"]
            ops = ", ".join(f"{op.removeprefix('aten_')} {n}" for op, n in
                            list(delegation.get("non_delegated_ops", {}).items())[:5])
            rows.append([model, res, backend, f"{done}/{done + left}", delegation.get("delegated_subgraphs", DASH),
                         ops or DASH])
        else:
            rows.append([model, res, backend, DASH, delegation.get("delegate_partitions", DASH), DASH])
    return md(rows, ["model", "res", "runtime", "delegated nodes", "delegate partitions",
                     "top non-delegated ops"])


def breakdown_table(breakdowns: Iterable[Breakdown]) -> Table:
    """`zoo.measure.store.Breakdown` profiles (`zoo.measure.breakdown`): ms (and share) and GMACs per op class."""
    breakdowns = list(breakdowns)
    seen = _order(c for b in breakdowns for c in b.ms_by_class)
    classes = sorted(seen, key=lambda c: CLASS_ORDER.index(c) if c in CLASS_ORDER else len(CLASS_ORDER))
    rows = []
    for b in breakdowns:
        total = b.total_kernel_ms or sum(b.ms_by_class.values()) or 1.0
        cells = []
        for c in classes:
            ms, gmacs = b.ms_by_class.get(c, 0.0), b.gmacs_by_class.get(c, 0.0)
            cells.append(DASH if not ms and not gmacs else
                         f"{ms:.1f} ({100 * ms / total:.0f}%)" + (f" / {gmacs:.3f}" if gmacs else ""))
        rows.append([b.model, b.resolution, f"{total:.1f}", *cells])
    return md(rows, ["model", "res", "kernel ms", *[f"{c} ms (share) / GMACs" for c in classes]])
