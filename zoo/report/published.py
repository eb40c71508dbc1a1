"""Published figures per board row: the registry's `Published` entries, plus MobileViT's ablation table for the knob
variants the registry has no entry of. Figures from papers, never from our runs.

`paper_latency_groups` gathers the papers' own latency figures into comparable sets: one paper's table on one
device (figures of different papers on "the same" phone come from different OS, compiler and runtime versions,
so they are not ranked together).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from zoo.models.registry import Published

__all__ = ["MOBILEVIT_ABLATIONS", "PaperLatency", "paper_latency_groups", "published_of"]

_ABLATION_SOURCE = "arXiv 2110.02178, patch-size ablation (MobileViT-S)"
_MOBILEVIT = Published(params_m=5.579, gmacs=2.0, resolution=256, arxiv="2110.02178", epochs=300, distilled=False,
                       source="MobileViT paper, ablations on MobileViT-S")
# MobileViT-S ablations (papers.md): patch sizes (iPhone 12 ms, top-1) and the fusion's concat skip off (top-1 only).
MOBILEVIT_ABLATIONS: dict[str, Published] = {
    "mobilevit_s[patch_size=[3, 3, 3]]": replace(_MOBILEVIT, top1=78.5, paper_device="iPhone 12",
                                                 paper_latency_ms=14.69, latency_source=_ABLATION_SOURCE),
    "mobilevit_s[patch_size=[4, 4, 4]]": replace(_MOBILEVIT, top1=77.6, paper_device="iPhone 12",
                                                 paper_latency_ms=8.23, latency_source=_ABLATION_SOURCE),
    "mobilevit_s[patch_size=[8, 4, 2]]": replace(_MOBILEVIT, top1=77.3, paper_device="iPhone 12",
                                                 paper_latency_ms=8.20, latency_source=_ABLATION_SOURCE),
    "mobilevit_s[fusion=false]": replace(_MOBILEVIT, top1=77.9),
}


def published_of(label: str) -> Published:
    """The published figures of a board row (an empty entry for a row no paper reports)."""
    from zoo.models import get_entry, model_name

    if label in MOBILEVIT_ABLATIONS:
        return MOBILEVIT_ABLATIONS[label]
    if "[" in label:  # another knob variant: the default model's figures do not describe it
        return Published(source="knob variant: no paper figure")
    try:
        return get_entry(model_name(label)).published
    except ValueError:
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
        published = published_of(label)
        if published.paper_latency_ms is None or not published.paper_device:
            continue
        source = published.latency_source or (f"arXiv {published.arxiv}" if published.arxiv else published.source)
        groups.setdefault((published.paper_device, source), {})[label] = published.paper_latency_ms
    return [PaperLatency(device, source, ms) for (device, source), ms in groups.items()]
