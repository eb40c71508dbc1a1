"""A run as planned: its config resolved for where it executes, and its identity, both fixed once.

The plan (`zoo.runner.plan`) makes every `PlannedRun`; the claims, the workspace, `execute_run` and the engine all
receive it and none of them resolves the config or hashes it again, so the id a worker claims, the folder it
trains in and the id its record carries are one value.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from zoo.config.schema import RunConfig
from zoo.config.typed import ConfigError


@dataclass(frozen=True)
class Execution:
    """Where a run executes, as far as it changes the numbers (and so the run id)."""

    device_type: str  # "cuda", "cpu", "mps"
    world_size: int  # processes training the run
    bf16: bool  # the GPU has bfloat16 (asked once, by zoo.training.distributed.planned_execution)


@dataclass(frozen=True)
class PlannedRun:
    """One run's resolved config and its id (the hash of that config, taken here and nowhere else)."""

    config: RunConfig
    run_id: str = field(init=False)
    # Defaults of the matrix that could not hold beside the user's values and adapted (`AdaptedDefault` lines):
    # the config already holds the adapted values; the record keeps these so it says they were not chosen.
    adapted_defaults: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        cfg = self.config
        if cfg.world_size is None or cfg.amp is None or cfg.channels_last is None:
            raise ValueError(f"{cfg.label}: a PlannedRun holds a resolved config (use PlannedRun.plan)")
        object.__setattr__(self, "run_id", cfg.run_id())

    @classmethod
    def plan(cls, cfg: RunConfig, execution: Execution, adapted_defaults: tuple[str, ...] = ()) -> PlannedRun:
        return cls(cfg.resolved(execution.device_type, execution.world_size, execution.bf16), adapted_defaults)

    @property
    def label(self) -> str:
        return self.config.label

    def check_world(self, world_size: int) -> None:
        """A run planned for N processes must not train on M: its id (and its global batch) say N."""
        if self.config.world_size != world_size:
            raise ConfigError(f"{self.label}: planned for {self.config.world_size} processes, started on {world_size}")
