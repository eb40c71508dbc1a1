"""The architecture board's README and plots, written from its stores alone (`measurements.jsonl`,
`breakdown.jsonl`): nothing is exported or timed, so re-rendering a committed board changes only what the code says
about the same records.

`write_board(directory, store_path)` reads the store's latest records (its one rule), splits the classifier rows
from the detector/segmenter rows, and writes README.md, `top1_vs_latency_fp32.png`, `top1_vs_latency_int8.png` and
`gmacs_vs_latency.png`. Same stores, same bytes: no timestamps, rows and columns in a fixed order.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from zoo.measure.store import Breakdown, BreakdownStore, MeasurementStore
from zoo.report.architectures.board import Board, is_int8, load_board, published_top1
from zoo.report.architectures.dense import dense_parts
from zoo.report.architectures.text import board_markdown
from zoo.report.atomic import write_text_atomic
from zoo.report.board_plots import top1_vs_latency_panels
from zoo.report.plots import gmacs_vs_latency

__all__ = ["render_board", "write_board", "write_plots"]


def render_board(board: Board, plots: Sequence[str] = (), breakdowns: Sequence[Breakdown] = (),
                 dense: Board | None = None) -> str:
    """The README text (sections: `zoo.report.architectures.text`); `dense`: the detector and segmenter rows
    (`zoo.report.architectures.dense`), kept apart from the classifiers' fronts and rankings."""
    return board_markdown(board, plots, breakdowns, dense)


def write_plots(board: Board, directory: Path) -> list[str]:
    """The board's plots, written under `directory`; returns their file names."""
    top1 = published_top1(board)
    names = []
    for dtype, wanted in (("fp32", False), ("int8", True)):
        points = {b: [(row, ms, top1[row]) for row, ms in board.timed(b).items() if row in top1]
                  for b in board.backends if is_int8(b) == wanted}
        if any(points.values()):
            name = f"top1_vs_latency_{dtype}.png"
            top1_vs_latency_panels(points, f"Published top-1 vs measured latency, {dtype} (red: Pareto front)",
                                   directory / name)
            names.append(name)
    gmacs = {b: [(row, board.records[(row, b)].gmacs, ms) for row, ms in board.timed(b).items()
                 if board.records[(row, b)].gmacs] for b in board.one_thread}
    if any(gmacs.values()):
        gmacs_vs_latency(gmacs, directory / "gmacs_vs_latency.png")
        names.append("gmacs_vs_latency.png")
    return names


def write_board(directory: str | Path, store_path: str | Path) -> Path:
    """Write `directory/README.md` and its plots from the store at `store_path` (and `directory/breakdown.jsonl`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    latest = list(MeasurementStore(store_path).latest().values())
    board = load_board([r for r in latest if dense_parts(r.model) is None])
    dense = load_board([r for r in latest if dense_parts(r.model) is not None])
    plots = write_plots(board, directory)
    path = directory / "README.md"
    write_text_atomic(path, render_board(board, plots, BreakdownStore(directory).profiled(), dense))
    return path
