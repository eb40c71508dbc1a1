"""Which measurement records the board shows, read through `zoo.measure.store` (the stores' one reader).

Latency and cost columns come from the store's latest records (its one rule: the last line of a key wins) of the
trained architectures at their deployment resolution with a 1000-class head. A latency column compares models, so
each backend's column comes from one machine: the machine (or device) of that backend's newest record there
(`zoo.measure.store.one_machine_per_backend`, the rule the architecture board uses too). int8 accuracy and the
op-class profiles are their stores' latest records too.
Rows keep the order in which their cells were first measured, by any machine, so a board does not reshuffle when
another machine measures the same models again.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from zoo.measure.store import (MEASUREMENTS_FILE, PAPER_FLOPS_BACKEND, Breakdown, BreakdownStore, Int8Record,
                               Int8Store, Measurement, MeasurementStore, one_machine_per_backend)
from zoo.models.registry import deploy_resolution
from zoo.report.conclusions import DeployLatency

__all__ = ["BoardMeasurements", "deploy_latency", "deploy_resolutions", "load_measurements"]


@dataclass(frozen=True)
class BoardMeasurements:
    """What the board shows of the measurement stores."""

    deployed: list[Measurement]  # at each deployment resolution, 1000 classes, every batch; in the store's order
    resolutions: dict[str, int]  # trained architecture -> its deployment resolution
    paper: list[Measurement]  # params and GMACs at the paper's resolution (pseudo-backend "flops")
    int8: list[Int8Record]  # the latest record of each evaluation in int8_accuracy.jsonl
    breakdown: list[Breakdown]  # the latest op-class profile of each model in breakdown.jsonl

    @property
    def batch1(self) -> list[Measurement]:
        return [m for m in self.deployed if m.batch_size == 1]


def deploy_resolutions(records: Iterable[Measurement], trained: Iterable[str]) -> dict[str, int]:
    """Each trained architecture's deployment resolution, as the measurement chose it: the resolution of its newest
    record flagged `deployed`. Stores written before the flag fall back to the paper's resolution
    (`zoo.models.registry.deploy_resolution` without overrides)."""
    chosen: dict[str, int] = {}
    for record in sorted((r for r in records if r.deployed), key=lambda r: r.position):
        chosen[record.model] = record.resolution
    return {model: chosen.get(model) or deploy_resolution(model) for model in trained}


def _cell(record: Measurement) -> tuple[str, int, str, int]:
    """A board cell: the store's key without the machine."""
    return record.model, record.resolution, record.backend, record.batch_size


def load_measurements(store_dir: Path, trained: set[str]) -> BoardMeasurements:
    """The board's view of `store_dir`'s measurement stores for the `trained` architectures (their labels)."""
    latest = list(MeasurementStore(store_dir / MEASUREMENTS_FILE).latest().values())
    paper = [m for m in latest if m.backend == PAPER_FLOPS_BACKEND]
    candidates = [m for m in latest if m.backend != PAPER_FLOPS_BACKEND and m.model in trained
                  and m.num_classes == 1000]
    resolutions = deploy_resolutions(candidates, trained)
    first_seen: dict[tuple, int] = {}
    for order, record in enumerate(candidates):  # the store's key order: each key's first line
        first_seen.setdefault(_cell(record), order)
    shown = one_machine_per_backend([m for m in candidates if m.resolution == resolutions[m.model]])
    deployed = sorted(shown, key=lambda m: first_seen[_cell(m)])
    return BoardMeasurements(deployed, resolutions, paper, Int8Store(store_dir).latest(),
                             BreakdownStore(store_dir).profiled())


def deploy_latency(records: Iterable[Measurement]) -> DeployLatency:
    """Latency and GMACs of each architecture at its deployment resolution (batch-1 records of one machine)."""
    ms, gmacs, res = {}, {}, {}
    for record in records:
        if record.gmacs is not None:
            gmacs[record.model], res[record.model] = record.gmacs, record.resolution
        if record.timed:
            ms[(record.backend, record.model)] = record.median_ms
    return DeployLatency(ms, gmacs, res)
