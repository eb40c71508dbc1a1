"""Where a matrix writes (bulky files under output_dir, records under store_dir), and its data checked up front."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zoo.config import ExecConfig, MatrixConfig, PlannedRun, WandbConfig
from zoo.results.record import run_dir_name


@dataclass(frozen=True)
class Workspace:
    """Where runs write: bulky files (checkpoints, W&B) under output_dir, records under store_dir."""

    output_dir: Path
    store_dir: Path
    wandb: WandbConfig
    execution: ExecConfig
    group: str

    def run_dir(self, run: PlannedRun) -> Path:
        cfg = run.config
        return self.output_dir / "runs" / run_dir_name(cfg.model, cfg.recipe.name, cfg.sampler.name, cfg.seed,
                                                      run.run_id)


def workspace_for(matrix: MatrixConfig, base: Path) -> Workspace:
    def resolve(p: str) -> Path:
        path = Path(p)
        return path if path.is_absolute() else base / path

    return Workspace(resolve(matrix.output_dir), resolve(matrix.store_dir), matrix.wandb, matrix.execution, matrix.name)
