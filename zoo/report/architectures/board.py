"""The architecture board's records as a board, and its tables: `load_board` keeps the store's latest records of
batch 1, 1000 classes and one machine per backend (`zoo.measure.store.one_machine_per_backend`), columns in the
order the backends declare. Every row the store knows appears in every runtime's table, as a figure,
"failed: reason", "skipped: why" or "not measured".
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from scipy import stats as sps

from zoo.measure.backends import backend_names, display_order, spec_of
from zoo.measure.store import PAPER_FLOPS_BACKEND, Measurement, one_machine_per_backend
from zoo.report.published import PaperLatency, published_of
from zoo.report.stats import pareto_front
from zoo.report.tables import DASH, Table, md

__all__ = ["NOT_MEASURED", "Board", "is_int8", "kendall_table", "kendall_tau", "load_board", "memory_cell", "paper_kendall_table",
           "pareto_labels", "published_top1", "runtime_table"]

NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Board:
    """The records shown: one per (row, backend); rows are labels (label@res when one has several resolutions)."""

    records: dict[tuple[str, str], Measurement]  # (row, backend) -> record
    rows: list[str]
    backends: list[str]

    def timed(self, backend: str) -> dict[str, float]:
        """row -> headline latency (median of round means) of the rows timed on `backend`."""
        out = {}
        for row in self.rows:
            record = self.records.get((row, backend))
            if record is not None and record.timed:
                out[row] = record.latency_ms
        return out

    def any_record(self, row: str) -> Measurement | None:
        return next((self.records[(row, b)] for b in self.backends if (row, b) in self.records), None)

    @property
    def one_thread(self) -> list[str]:
        """The columns of backends that declare 1 thread (a phone's big core)."""
        return [b for b in self.backends if b in backend_names() and spec_of(b).threads == 1]


def is_int8(backend: str) -> bool:
    """Whether `backend` declares int8 (a name no backend declares any more, from an old store, reads as fp32)."""
    return backend in backend_names() and spec_of(backend).int8


def load_board(records: Iterable[Measurement]) -> Board:
    """The board of `records` (the store's latest): batch 1, 1000 classes, one machine per backend."""
    chosen = [r for r in records if r.batch_size == 1 and r.num_classes == 1000 and r.backend != PAPER_FLOPS_BACKEND]
    chosen = one_machine_per_backend(chosen) if chosen else []
    resolutions: dict[str, set[int]] = {}
    for record in chosen:
        resolutions.setdefault(record.model, set()).add(record.resolution)

    def row(record: Measurement) -> str:
        return record.model if len(resolutions[record.model]) == 1 else f"{record.model}@{record.resolution}"

    cells = {(row(r), r.backend): r for r in chosen}
    rows = list(dict.fromkeys(row(r) for r in chosen))
    return Board(cells, rows, display_order(r.backend for r in chosen))


def _num(value: float | None, digits: int = 1) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def _status(record: Measurement | None) -> str:
    if record is None:
        return NOT_MEASURED
    if record.status == "ok":
        return "ok"
    return f"{record.status}: {(record.reason or '').splitlines()[0][:80] if record.reason else ''}".rstrip(": ")


def _check(record: Measurement) -> str:
    details = record.details
    if "int8_top1_agreement" in details:
        return f"top-1 agrees {100 * details['int8_top1_agreement']:.0f}%"
    if "parity_max_abs_err" in details:
        return f"max err {details['parity_max_abs_err']:.1e}"
    return DASH


def _delegation(record: Measurement) -> str:
    delegation = record.details.get("delegation") or {}
    if "delegated_nodes" in delegation:
        done, left = delegation["delegated_nodes"], delegation["non_delegated_nodes"]
        return f"{done}/{done + left} nodes"
    if "delegate_partitions" in delegation:
        return f"{delegation['delegate_partitions']} partitions"
    return DASH


def memory_cell(record: Measurement) -> str:
    if record.peak_memory_mb is None:
        return DASH
    kind = "arena" if record.memory_kind == "planned arena" else "RSS"
    text = f"{record.peak_memory_mb:.1f} ({kind})"
    rss = record.details.get("peak_rss_increase_mb")
    return text + (f"; RSS {rss:.1f}" if kind == "arena" and rss is not None else "")


def runtime_table(board: Board, backend: str) -> Table:
    """One runtime × dtype × threads: timed rows fastest first, then the rows without a figure."""
    timed = board.timed(backend)
    order = sorted(timed, key=lambda r: timed[r]) + [r for r in board.rows if r not in timed]
    rows = []
    for row in order:
        record = board.records.get((row, backend))
        published = published_of(row.split("@")[0]).top1
        if record is None or not record.timed:
            any_record = board.any_record(row)
            rows.append([row, any_record.resolution if any_record else DASH, _num(published), DASH, DASH, DASH, DASH,
                         DASH, DASH, DASH, DASH, DASH, _status(record)])
            continue
        rows.append([row, record.resolution, _num(published), _num(record.gmacs, 3),
                     _num(record.params_1k / 1e6 if record.params_1k else None, 2), _num(record.latency_ms, 2),
                     _num(record.p90_ms, 2), _num(record.trimmed_mean_ms, 2), memory_cell(record),
                     _num(record.file_bytes / 2**20 if record.file_bytes else None, 1), _check(record),
                     _delegation(record), "ok"])
    return md(rows, ["model", "res", "published top-1", "GMACs", "params M", "median ms", "p90 ms",
                     "trimmed mean ms", "memory MB (kind)", "file MB", "check", "delegation", "status"])


def pareto_labels(latency: Mapping[str, float], top1: Mapping[str, float]) -> list[str]:
    """The rows on the Pareto front (lower latency, higher published top-1), fastest first."""
    rows = [r for r in latency if top1.get(r) is not None]
    points = [(latency[r], top1[r]) for r in rows]
    return [rows[i] for i in pareto_front(points)]


def published_top1(board: Board) -> dict[str, float]:
    return {row: top1 for row in board.rows if (top1 := published_of(row.split("@")[0]).top1) is not None}


def kendall_tau(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[float | None, int]:
    common = [r for r in a if r in b]
    if len(common) < 3:
        return None, len(common)
    return float(sps.kendalltau([a[r] for r in common], [b[r] for r in common]).statistic), len(common)


def _tau_cell(tau: float | None, n: int) -> str:
    return DASH if tau is None else f"{tau:.2f} (n={n})"


def kendall_table(board: Board, backends: Sequence[str]) -> Table:
    """Kendall's τ-b between the latency rankings of each pair of runtimes, over the rows both timed (≥ 3)."""
    timed = {b: board.timed(b) for b in backends}
    rows = [[a, *[DASH if a == b else _tau_cell(*kendall_tau(timed[a], timed[b])) for b in backends]]
            for a in backends]
    return md(rows, ["runtime", *backends])


def paper_kendall_table(board: Board, backends: Sequence[str], groups: Sequence[PaperLatency]) -> Table:
    """Kendall's τ-b between each paper device's latency ranking (≥ 3 rows) and each runtime's."""
    rows = []
    for group in groups:
        if len(group.ms) < 3:
            continue
        rows.append([f"{group.device} ({group.source})", len(group.ms),
                     *[_tau_cell(*kendall_tau(group.ms, board.timed(b))) for b in backends]])
    return md(rows, ["paper device (source)", "paper rows", *backends])
