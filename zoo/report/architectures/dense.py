"""The architecture board's section on whole detectors and segmenters (`python -m zoo.report.architectures DIR
--measure --dense`).

Rows are `backbone[head="ssdlite"]` / `backbone[head="deeplabv3"]` (`zoo.models.dense.deployable`: the network
only, box decoding and NMS outside the timed graph), beside the MobileViT paper's downstream figures for the same
backbone and head. The conclusion line compares orders only: does a backbone's latency rank as a classifier carry
to the whole model on the same runtime (Kendall τ-b)?
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from zoo.report.architectures.board import Board, kendall_tau, memory_cell
from zoo.report.tables import DASH, md

__all__ = ["DENSE_PUBLISHED", "DensePublished", "dense_parts", "dense_section"]

_DENSE_LABEL = re.compile(r'^(?P<backbone>[^\[@]+)\[head="(?P<head>[a-z0-9]+)"\](@\d+)?$')


@dataclass(frozen=True)
class DensePublished:
    """A paper's figure for one backbone under one head (not our run)."""

    metric: str
    value: float
    params_m: float
    source: str


_DET = "arXiv 2110.02178, Table 3a (SSDLite, COCO, 320 px)"
_SEG = "arXiv 2110.02178, Table 4 (DeepLabv3, PASCAL VOC 2012, 512 px)"
DENSE_PUBLISHED: dict[tuple[str, str], DensePublished] = {
    ("mobilenetv2_100", "ssdlite"): DensePublished("mAP", 22.1, 4.3, _DET),
    ("mobilevit_xxs", "ssdlite"): DensePublished("mAP", 19.9, 1.7, _DET),
    ("mobilevit_xs", "ssdlite"): DensePublished("mAP", 24.8, 2.7, _DET),
    ("mobilevit_s", "ssdlite"): DensePublished("mAP", 27.7, 5.7, _DET),
    ("mobilenetv2_100", "deeplabv3"): DensePublished("mIoU", 75.7, 4.5, _SEG),
    ("mobilevit_xxs", "deeplabv3"): DensePublished("mIoU", 73.6, 1.9, _SEG),
    ("mobilevit_xs", "deeplabv3"): DensePublished("mIoU", 77.1, 2.9, _SEG),
    ("mobilevit_s", "deeplabv3"): DensePublished("mIoU", 79.1, 6.4, _SEG),
}


def dense_parts(label: str) -> tuple[str, str] | None:
    """(backbone, head) of a detector/segmenter row label, None for a classifier's."""
    match = _DENSE_LABEL.match(label)
    return (match["backbone"], match["head"]) if match else None


def _ms(board: Board, row: str, backend: str) -> str:
    record = board.records.get((row, backend))
    if record is None:
        return "not measured"
    if not record.timed:
        return f"{record.status}: {(record.reason or '').splitlines()[0][:40] if record.reason else ''}".rstrip(": ")
    return f"{record.latency_ms:.1f}"


def _head_table(board: Board, head: str) -> list[str]:
    rows = []
    for row in board.rows:
        parts = dense_parts(row)
        if parts is None or parts[1] != head:
            continue
        any_record = board.any_record(row)
        paper = DENSE_PUBLISHED.get(parts)
        rows.append([parts[0], any_record.resolution if any_record else DASH,
                     DASH if not any_record or any_record.params is None else f"{any_record.params / 1e6:.2f}",
                     DASH if paper is None else f"{paper.params_m:g}",
                     DASH if not any_record or any_record.gmacs is None else f"{any_record.gmacs:.2f}",
                     *[_ms(board, row, b) for b in board.backends], _peak_memory(board, row),
                     DASH if paper is None else f"{paper.value:g} {paper.metric}"])
    if not rows:
        return []
    return [md(rows, ["backbone", "res", "params M", "paper params M", "GMACs", *[f"{b} ms" for b in board.backends],
                      f"memory MB ({MEMORY_BACKEND})", "paper accuracy"]).markdown(), ""]


MEMORY_BACKEND = "executorch-xnnpack-1t"  # its planned arena, the figure a phone app sizes its memory by


def _peak_memory(board: Board, row: str) -> str:
    record = board.records.get((row, MEMORY_BACKEND))
    return memory_cell(record) if record is not None and record.timed else DASH


def _carry_over(board: Board, classifiers: Board) -> list[str]:
    """Per runtime and head: Kendall τ between the backbones' classifier latencies and the whole models'."""
    lines = []
    for head in sorted({p[1] for r in board.rows if (p := dense_parts(r))}):
        for backend in board.backends:
            whole = {p[0]: ms for r, ms in board.timed(backend).items() if (p := dense_parts(r)) and p[1] == head}
            tau, n = kendall_tau(classifiers.timed(backend), whole)
            if tau is not None:
                lines.append(f"- {head} on {backend}: the backbones' classifier latency order carries to the whole "
                             f"model with Kendall τ = {tau:.2f} ({n} backbones timed as both).")
    return lines


def dense_section(board: Board, classifiers: Board) -> list[str]:
    """The README lines of the detector/segmenter rows (none when the store has none)."""
    if not board.rows:
        return []
    lines = ["## Whole detectors and segmenters (network only; box decoding and NMS outside the timed graph)", "",
             "SSDLite (COCO classes, 320 px) and DeepLabv3 (output stride 16, VOC classes, 512 px) from torchvision's "
             "heads over each backbone (`zoo.models.dense`), random weights, same protocol as above. Params are "
             "ours (the heads' widths are torchvision's, so they differ from the paper's own heads); paper accuracy "
             "is the MobileViT paper's, not our runs.", ""]
    for head in ("ssdlite", "deeplabv3"):
        lines += _head_table(board, head)
    return lines + _carry_over(board, classifiers) + [""]
