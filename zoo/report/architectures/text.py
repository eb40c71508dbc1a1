"""The sections of the architecture board's README (tables: `zoo.report.architectures.board`; the Protocol section:
`zoo.report.architectures.protocol`, from the settings stored with the records).

Every sentence below a heading is built from the records: the conclusions state only what the figures show
(which rows are on a front, how far rankings agree, how int8 compares with fp32), with the counts behind them.
"""
from __future__ import annotations

import statistics
from collections.abc import Sequence

from zoo.measure.backends import int8_pairs
from zoo.measure.store import Breakdown
from zoo.report.architectures.board import (Board, is_int8, kendall_table, kendall_tau, paper_kendall_table,
                                            pareto_labels, published_top1, runtime_table)
from zoo.report.architectures.dense import dense_section
from zoo.report.architectures.protocol import protocol_section
from zoo.report.architectures.rows import board_architectures
from zoo.report.published import MOBILEVIT_ABLATIONS, paper_latency_groups, published_of
from zoo.report.runtime_tables import breakdown_table
from zoo.report.tables import DASH, fused_note, md

__all__ = ["board_markdown"]

ABLATION_BASE = "mobilevit_s"


def _machine(board: Board) -> list[str]:
    record = next((r for r in board.records.values() if r.machine), None)
    if record is None:
        return ["Machine: not recorded."]
    m, v = record.machine, record.versions or {}
    packages = ", ".join(f"{k} {v[k]}" for k in ("torch", "executorch", "litert-torch", "ai-edge-litert",
                                                  "onnxruntime", "timm") if v.get(k))
    return [f"Machine: {m.get('cpu_model', '?')}, {m.get('cpus', '?')} usable cores, {m.get('os', '?')} "
            f"(id `{record.machine_id}`)" + (f"; {packages}." if packages else ".")]


def _coverage(board: Board) -> list[str]:
    """Which of the architectures `make latency` measures have no row yet (the board is built incrementally: it
    resumes from its store), so a partial board never reads as the whole zoo."""
    shown = {row.split("@")[0] for row in board.rows}
    missing = [a.label for a in board_architectures() if a.label not in shown]
    if not missing:
        return []
    return [f"**Partial board**: {len(shown)} rows; not measured yet ({len(missing)}): {', '.join(missing)}. "
            "`make latency` measures them and keeps these records.", ""]


def _headline(board: Board) -> list[str]:
    top1 = published_top1(board)
    lines = ["## Headline: the Pareto front per runtime (published top-1 vs measured median latency)", ""]
    for backend in board.backends:
        front = pareto_labels(board.timed(backend), top1)
        timed = board.timed(backend)
        if front:
            chain = " → ".join(f"{row} ({top1[row]:.1f} %, {timed[row]:.1f} ms)" for row in front)
            lines.append(f"- **{backend}** ({'int8' if is_int8(backend) else 'fp32'}): {chain}")
    return lines if len(lines) > 2 else lines + ["No runtime timed a row with a published top-1."]


def _fronts_compared(board: Board) -> list[str]:
    top1 = published_top1(board)
    fp32 = [b for b in board.one_thread if not is_int8(b) and board.timed(b)]
    fronts = {b: set(pareto_labels(board.timed(b), top1)) for b in fp32}
    if len(fronts) < 2:
        return []
    shared = set.intersection(*fronts.values())
    line = (f"- On the {len(fronts)} fp32 1-thread runtimes, {len(shared)} row(s) are on every front"
            f"{': ' + ', '.join(sorted(shared)) if shared else ''}")
    only = {b: sorted(f - shared) for b, f in fronts.items() if f - shared}
    return [line + ("; the fronts otherwise differ: " + "; ".join(f"{b} adds {', '.join(r)}" for b, r in only.items())
                    + "." if only else "; the fronts are identical.")]


def _agreement_line(board: Board) -> list[str]:
    backends = board.one_thread
    taus = [t for i, a in enumerate(backends) for b in backends[i + 1:]
            if (t := kendall_tau(board.timed(a), board.timed(b))[0]) is not None]
    if not taus:
        return []
    return [f"- Latency rankings across the 1-thread runtimes agree with Kendall τ from {min(taus):.2f} to "
            f"{max(taus):.2f} ({len(taus)} pair{'s' if len(taus) > 1 else ''}): τ = 1 would mean one runtime's ranking carries to another exactly."]


def _int8_lines(board: Board) -> list[str]:
    lines = []
    for fp32, int8 in int8_pairs(board.backends):
        a, b = board.timed(fp32), board.timed(int8)
        common = [r for r in a if r in b]
        if not common:
            continue
        ratios = [a[r] / b[r] for r in common]
        slower = [r for r in common if b[r] > a[r]]
        lines.append(f"- {int8} vs {fp32}: int8 is {statistics.median(ratios):.2f}× faster at the median over "
                     f"{len(common)} rows (range {min(ratios):.2f}–{max(ratios):.2f}×)"
                     + (f"; slower than fp32 on {', '.join(slower)}" if slower else "") + ".")
    return lines


def _ablation_section(board: Board) -> list[str]:
    rows_present = [r for r in [ABLATION_BASE, *MOBILEVIT_ABLATIONS] if r in board.rows]
    if ABLATION_BASE not in rows_present or len(rows_present) < 2:
        return []
    backends = board.one_thread
    base_paper = published_of(ABLATION_BASE).paper_latency_ms
    rows = []
    for row in rows_present:
        published = published_of(row)
        paper = published.paper_latency_ms
        cells = []
        for backend in backends:
            timed = board.timed(backend)
            base = timed.get(ABLATION_BASE)
            cells.append(DASH if row not in timed or not base else f"{timed[row]:.1f} ({timed[row] / base:.2f}×)")
        rows.append([row, DASH if published.top1 is None else f"{published.top1:.1f}",
                     DASH if paper is None else f"{paper:.2f} ({paper / base_paper:.2f}×)", *cells])
    table = md(rows, ["variant", "paper top-1", "paper iPhone 12 ms (÷ (2,2,2))", *[f"{b} ms (÷ (2,2,2))"
                                                                                   for b in backends]])
    return ["## MobileViT's ablations as architectures (MobileViT-S)", "",
            "The paper's patch-size and fusion ablation (arXiv 2110.02178) beside our runtimes; `mobilevit_s` is the "
            "(2, 2, 2) row with fusion. Ratios are to it on the same device.", "", table.markdown()]


def _citations(board: Board) -> list[str]:
    rows = []
    for row in board.rows:
        p = published_of(row.split("@")[0])
        rows.append([row, DASH if p.top1 is None else f"{p.top1:.2f}", f"arXiv {p.arxiv}" if p.arxiv else DASH,
                     p.table or DASH, p.epochs or DASH, DASH if p.distilled is None else ("yes" if p.distilled else "no"),
                     p.resolution or DASH, p.paper_device or DASH,
                     DASH if p.paper_latency_ms is None else f"{p.paper_latency_ms:g}",
                     p.latency_source or DASH, p.source or DASH])
    return ["## Published figures (from the papers, not our runs)", "",
            "Blank (–) where the paper, or what we checked of it, does not say.", "",
            md(rows, ["model", "top-1", "paper", "table", "epochs", "distilled", "res", "paper device",
                      "paper ms", "latency from", "notes"]).markdown()]


def _time_spent(board: Board) -> list[str]:
    rows = []
    for backend in board.backends:
        export = load = timing = 0.0
        cached = 0
        records = [r for (row, b), r in board.records.items() if b == backend]
        for r in records:
            s = r.seconds or {}
            export += s.get("export", 0.0) + s.get("export_and_load", 0.0)
            load += s.get("load_and_check", 0.0)
            timing += s.get("timing_group", 0.0) / max(1, s.get("group_size", 1) or 1)
            cached += bool(r.details.get("export_cached"))
        rows.append([backend, len(records), cached, f"{export:.0f}", f"{load:.0f}", f"{timing:.0f}",
                     *_quiet_cells(records)])
    return ["## Where the time went (seconds, the latest record of each cell)", "",
            "Exports from the pool are cached before timing, so a cell's export time here is what it spent after "
            "the pool (≈ 0 when cached). Quiet check: the round cycles timed again because the machine got slower "
            "during them, and the machine's median probe against the fastest it has shown (– : timed without "
            "the check).", "",
            md(rows, ["runtime", "cells", "export cached", "export s", "load + check s", "timing s",
                      "cycles re-timed", "probe vs best"]).markdown()]


def _quiet_cells(records: Sequence) -> list[str]:
    """A runtime's quiet-check figures: cycles re-timed (each group's, counted once) and the median probe's
    excess over the reference."""
    checked = [r for r in records if "probe_ms" in r.details and r.details.get("probe_reference_ms")]
    if not checked:
        return [DASH, DASH]
    retimed = sum(r.details.get("cycles_discarded", 0) / max(1, (r.seconds or {}).get("group_size", 1) or 1)
                  for r in checked)
    excess = statistics.median(r.details["probe_ms"] / r.details["probe_reference_ms"] - 1 for r in checked)
    return [f"{retimed:.0f}", f"{excess:+.1%}"]


def _breakdown_section(breakdowns: Sequence[Breakdown]) -> list[str]:
    if not breakdowns:
        return []
    return ["## Where the time goes inside a model (ONNX Runtime profiler, 1 thread, kernel ms (share) / GMACs)", "",
            breakdown_table(breakdowns).markdown(), ""]


def board_markdown(board: Board, plots: Sequence[str] = (), breakdowns: Sequence[Breakdown] = (),
                   dense: Board | None = None) -> str:
    groups = paper_latency_groups(board.rows)
    one_thread = board.one_thread or board.backends
    lines = ["# The architecture board", "",
             "Every architecture in the zoo on every phone-CPU runtime installed here, at its deployment resolution, "
             "beside its published ImageNet top-1. Generated by `make latency` (`python -m zoo.measure --board "
             "leaderboard/architectures`) from `measurements.jsonl` alone.", "", *_machine(board), "", *_coverage(board),
             *_headline(board), "", "## Conclusions the data supports", "", *_fronts_compared(board),
             *_agreement_line(board), *_int8_lines(board), "",
             *protocol_section([*board.records.values(), *(dense.records.values() if dense is not None else ())]),
             *fused_note(sorted({row.split("@")[0] for row in board.rows})), "",
             "## Rank agreement between runtimes (Kendall τ-b of the median latencies, rows both timed)", "",
             kendall_table(board, one_thread).markdown(), ""]
    paper = paper_kendall_table(board, one_thread, groups)
    lines += ["## Rank agreement with the papers' devices (Kendall τ-b, sets of ≥ 3 rows of one paper's table)", "",
              paper.markdown() if paper.rows else "Fewer than 3 rows of any one paper's table are on the board.", ""]
    lines += [*_ablation_section(board), ""]
    for name in plots:
        lines += [f"![{name}]({name})", ""]
    for backend in board.backends:
        lines += [f"## {backend} ({'int8' if is_int8(backend) else 'fp32'})", "",
                  runtime_table(board, backend).markdown(), ""]
    lines += dense_section(dense, board) if dense is not None else []
    lines += [*_breakdown_section(breakdowns), *_citations(board), "", *_time_spent(board), ""]
    return "\n".join(lines)
