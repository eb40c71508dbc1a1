"""Published figures per board row, read from the registry (`zoo.models.published`): each family registers its
papers' figures, knob variants' included (MobileViT-S's ablations). Figures from papers, never from our runs.

`paper_latency_groups` gathers the papers' own latency figures into comparable sets: one paper's table on one
device (figures of different papers on "the same" phone come from different OS, compiler and runtime versions,
so they are not ranked together).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from zoo.models import Published, UnknownModelError, published, published_variants

__all__ = ["MOBILEVIT_ABLATIONS", "PaperLatency", "paper_latency_groups", "published_of"]

# The board's ablation rows: the knob variants of MobileViT-S its paper reports (registered with mobilevit_s).
MOBILEVIT_ABLATIONS: dict[str, Published] = published_variants("mobilevit_s")


def published_of(label: str) -> Published:
    """The published figures of a board row (an empty entry for a row no paper reports)."""
    try:
        return published(label)
    except UnknownModelError:
        return Published()


@dataclass(frozen=True)
class PaperLatency:
    """One set of comparable paper latencies: one source's table on one device, label -> ms."""

    device: str
    source: str
    ms: dict[str, float]


def paper_latency_groups(labels: Iterable[str]) -> list[PaperLatency]:
    """The papers' latency figures of `labels`, grouped by (device, source), in first-seen order."""
    groups: dict[tuple[str, str], dict[str, float]] = {}
    for label in labels:
        figures = published_of(label)
        if figures.paper_latency_ms is None or not figures.paper_device:
            continue
        source = figures.latency_source or (f"arXiv {figures.arxiv}" if figures.arxiv else figures.source)
        groups.setdefault((figures.paper_device, source), {})[label] = figures.paper_latency_ms
    return [PaperLatency(device, source, ms) for (device, source), ms in groups.items()]
