"""The typed record of a run in the store: `RunRecord` (with one `EpochMetrics` per evaluated epoch).

Written by `zoo.runner.execute`, read by the plan, the measurement bridge and the leaderboard through attributes.
JSON lines of any earlier format still load: a missing field takes its default, and keys this version does not know
are kept in `extra` and written back unchanged, so an older and a newer zoo can share one store. The run's config
is a typed `RunConfig`; in JSON it is `zoo.config.to_dict` of it, as it always was.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from zoo.config import ConfigError, RunConfig, from_dict, to_dict
from zoo.training.epoch import EpochMetrics

RunStatus = Literal["finished", "diverged", "failed", "interrupted"]
# Reruns skip these; "failed" and "interrupted" runs are tried again (and resume from their checkpoint).
TERMINAL: tuple[RunStatus, ...] = ("finished", "diverged")


def run_dir_name(model: str, recipe: str, sampler: str, seed: int, run_id: str) -> str:
    return f"{model}-{recipe}-{sampler}-s{seed}-{run_id}"


def _config_of(raw: Any) -> tuple[RunConfig | None, dict[str, Any]]:
    """The stored config as a RunConfig, or (None, {"config": raw}) where this version cannot read it (another
    version's fields): the raw config then travels in `extra`, unchanged. A record written without a config (an
    absent key, or the empty mapping the field's old default wrote) has none."""
    if not raw:
        return None, {}
    try:
        return from_dict(RunConfig, raw, "results.jsonl", "config"), {}
    except ConfigError:
        return None, {"config": raw}


def _best(history: list[EpochMetrics], key: str) -> float | None:
    values = [getattr(row, key) for row in history
              if getattr(row, key) is not None and not math.isnan(getattr(row, key))]
    return max(values) if values else None


@dataclass
class RunRecord:
    """One line of results.jsonl: who the run was, how it ended, and what it measured."""

    run_id: str
    status: RunStatus
    label: str = ""
    model: str = ""
    recipe: str = ""
    sampler: str = ""
    seed: int = 0
    dataset: str = ""
    # What was trained: "classification" (the default, and what every record before this field was), "detection"
    # or "segmentation"; taken from the config when the record has one.
    task: str = "classification"
    eval_resolution: int | None = None
    epochs: int = 0
    world_size: int = 1
    global_batch: int | None = None
    device: str = "cpu"
    device_name: str = "cpu"
    # The resolved config the run trained with; None when this zoo cannot read the stored one (written by a version
    # with other fields): the record still loads, and its config is kept verbatim in extra["config"].
    config: RunConfig | None = None
    config_hash: str = ""
    git_commit: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    # What the run measured (set when it finished).
    top1: float | None = None
    top5: float | None = None
    val_loss: float | None = None
    ece: float | None = None
    top1_raw: float | None = None
    best_top1: float | None = None
    best_top5: float | None = None
    # A dense task's figure (final epoch): `metric_name` "map" (COCO mAP@[.5:.95]) or "miou", `metric` its value,
    # `dense_metrics` every figure the evaluation gave (map, map_50; miou). None/empty for classification.
    metric_name: str | None = None
    metric: float | None = None
    dense_metrics: dict[str, float] = field(default_factory=dict)
    epochs_done: int = 0
    updates: int = 0
    train_time_s: float = 0.0
    train_img_per_s: float | None = None
    params: int | None = None
    num_classes: int | None = None
    resumed_from_epoch: int = 0
    skipped_images: int = 0
    # The EMA's time constant 1/(1 - decay) in updates (None: no EMA), and whether the run took fewer updates than
    # that: its EMA top-1 is then mostly the initial weights, and the board ranks it by top1_raw. Both None in
    # records written before these fields (not judged: the board shows them as before).
    ema_horizon_updates: float | None = None
    ema_short: bool | None = None
    adapted_defaults: list[str] = field(default_factory=list)  # defaults that adapted to the user's values
    # Where the weights started (`init:`, taken from the config): "scratch" (every record before these fields),
    # "matrix", "file" or "timm"; `init_source` what they are (the source run id, "sha256:<hex>" of the file,
    # "timm:<architecture.tag>"; hashed into the run id), `init_from` where (the source matrix or weights file),
    # `init_report` what loaded (weights: EMA/raw/state dict/timm tag, loaded/total tensors, and the missing,
    # unexpected and shape-mismatched names: the head and the layers not loaded), set once the run started.
    init_kind: str = "scratch"
    init_source: str | None = None
    init_from: str | None = None
    init_report: dict[str, Any] = field(default_factory=dict)
    history: list[EpochMetrics] = field(default_factory=list)
    # How it ended.
    error: str | None = None
    traceback: str | None = None
    diverged_step: int | None = None
    diverged_epoch: int | None = None
    wall_time_s: float = 0.0
    peak_memory_mb: float | None = None
    wandb_run_id: str | None = None
    finished_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # keys of other zoo versions, kept verbatim

    def __post_init__(self) -> None:
        if self.config is not None:
            self.task = self.config.task
            init = self.config.init
            self.init_kind, self.init_source, self.init_from = init.kind, init.source or None, init.path

    @property
    def fine_tuned(self) -> bool:
        """Started from pretrained weights (another matrix's run, a file, timm's), not from the seed alone."""
        return self.init_kind != "scratch"

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def dir_name(self) -> str:
        """The run's folder under `<output_dir>/runs` (checkpoint, exports)."""
        return run_dir_name(self.model, self.recipe, self.sampler, self.seed, self.run_id)

    def set_history(self, history: list[EpochMetrics]) -> None:
        """The final and best figures, from the epoch history (the final epoch is what the board reports)."""
        self.history = list(history)
        self.epochs_done = len(history)
        if not history:
            return
        last = history[-1]
        self.top1, self.top5, self.val_loss = last.val_top1, last.val_top5, last.val_loss
        self.ece, self.top1_raw = last.val_ece, last.val_top1_raw
        self.best_top1, self.best_top5 = _best(history, "val_top1"), _best(history, "val_top5")
        dense = {key: getattr(last, f"val_{key}") for key in ("map", "map_50", "miou")
                 if getattr(last, f"val_{key}") is not None}
        if dense:
            self.dense_metrics = dense
            self.metric_name = "map" if "map" in dense else "miou"
            self.metric = dense[self.metric_name]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunRecord":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "history", "config"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names and k not in ("history", "extra", "config")}
        history = [EpochMetrics.from_json(row) for row in data.get("history") or []]
        config, unread = _config_of(data.get("config"))
        return cls(**known, config=config, history=history, extra={**data.get("extra", {}), **extra, **unread})

    def config_json(self) -> dict[str, Any]:
        """The config as results.jsonl holds it (plain data): for views that compare every field of it."""
        return to_dict(self.config) if self.config is not None else self.extra.get("config", {})

    def require_config(self) -> RunConfig:
        """The config, for code that rebuilds the run (its model, its data): a ConfigError where it is unreadable."""
        if self.config is None:
            raise ConfigError(f"results.jsonl: run {self.run_id} ({self.label}): its config was written by another "
                              "zoo version and cannot be read by this one")
        return self.config

    def to_json(self) -> dict[str, Any]:
        skip = ("extra", "history", "config")
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        data["config"] = self.config_json()
        data["history"] = [row.to_json() for row in self.history]
        return {**self.extra, **data}

    def one_line(self) -> str:
        score = f"top1 {self.top1:.4f}" if self.top1 is not None else (self.error or "")
        if self.metric is not None:
            score = f"{self.metric_name} {self.metric:.4f}"
        if self.ema_short and self.top1 is not None:
            raw = f"{self.top1_raw:.4f}" if self.top1_raw is not None else "–"
            score += f" (EMA shorter than its {self.ema_horizon_updates:,.0f}-update horizon: raw {raw})"
        return f"[{self.status}] {self.label} {score} ({self.wall_time_s:.0f}s)"
