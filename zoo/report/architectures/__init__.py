"""The architecture board (every architecture in the zoo on every phone-CPU runtime, no training), in one package
at the report layer: its rows and settings (`rows`, `settings`), the export pool (`exports`, through the backends'
public API), the run (`run`: exports, timing, op-class profiles into its stores, then the render in-process), the
board's tables (`board`), sections (`text`, `dense`, `protocol`: from the settings stored with the records) and
the written README and plots (`render`). `python -m zoo.report.architectures DIR [--measure]`.
"""
from zoo.report.architectures.board import (Board, is_int8, kendall_table, kendall_tau, load_board,
                                            paper_kendall_table, pareto_labels, published_top1, runtime_table)
from zoo.report.architectures.dense import dense_parts
from zoo.report.architectures.render import render_board, write_board, write_plots
from zoo.report.architectures.rows import (ABLATIONS, DENSE, DENSE_BACKBONES, Architecture, BoardError,
                                           board_architectures, check_resolutions, dense_labels, is_dense)
from zoo.report.architectures.run import BoardRun, profile_breakdowns, run_board
from zoo.report.architectures.settings import (BOARD_QUIET, BOARD_TIMING, GROUP_SIZE, board_backends,
                                               dense_backends)

__all__ = [
    "ABLATIONS", "BOARD_QUIET", "BOARD_TIMING", "DENSE", "DENSE_BACKBONES", "GROUP_SIZE", "Architecture", "Board",
    "BoardError", "BoardRun", "board_architectures", "board_backends", "check_resolutions", "dense_backends",
    "dense_labels", "dense_parts", "is_dense", "is_int8", "kendall_table", "kendall_tau", "load_board",
    "paper_kendall_table", "pareto_labels", "profile_breakdowns", "published_top1", "render_board", "run_board",
    "runtime_table", "write_board", "write_plots",
]
