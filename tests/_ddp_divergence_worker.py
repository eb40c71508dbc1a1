"""Run by tests/test_distributed.py on 2 gloo ranks (tests/_ranks.py; by hand: torchrun): rank 1's loss, and rank
1's only, turns NaN at its training forward number NAN_AT; the run goes through `execute_run`, so rank 0 writes the
record to the store.

argv: OUT_DIR NAN_AT
"""
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from zoo.config import DataConfig, ExecConfig, RunConfig, SamplerConfig, WandbConfig, load_recipe
from zoo.models.registry import register
from zoo.results import ResultsStore
from zoo.runner.execute import Workspace, execute_run
from zoo.runner.plan import plan_for
from zoo.training.distributed import init_distributed


class NanOnRankOne(nn.Module):
    """A linear probe whose loss is NaN on rank 1 from its `nan_at`-th training forward on. The count is a plain
    attribute, not a buffer: DDP would overwrite a buffer with rank 0's each forward."""

    def __init__(self, num_classes: int, nan_at: int):
        super().__init__()
        self.head = nn.Linear(3, num_classes)
        self.nan_at, self.calls = nan_at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(x.mean((2, 3)))
        if not self.training:
            return logits
        self.calls += 1
        return logits * float("nan") if dist.get_rank() == 1 and self.calls >= self.nan_at else logits


def main(out_dir: str, nan_at: int) -> None:
    register("nan_on_rank_one", family="test")(
        lambda num_classes=10, drop_path_rate=0.0, **_: NanOnRankOne(num_classes, nan_at))
    ctx = init_distributed("cpu")
    torch.set_num_threads(1)
    cfg = RunConfig(
        model="nan_on_rank_one", recipe=load_recipe("basic", {"ema": False}),
        sampler=SamplerConfig(name="fixed", base_resolution=16),
        data=DataConfig(kind="digits", options={"source_size": 16}, max_train_samples=96, max_val_samples=32,
                        eval_crop_pct=1.0),
        epochs=1, batch_size=8, lr=0.01, lr_scaling="none", warmup_epochs=0, seed=1,
    )
    out = Path(out_dir)
    # A window of 4 losses: rank 1's NaN (step NAN_AT) and rank 0's own (the NaN gradients reach it through the
    # all-reduce, so its loss goes NaN one step later) land in the same window.
    ws = Workspace(out / "out", out / "store", WandbConfig(mode="disabled"), ExecConfig(progress=False, log_every=4),
                   "test")
    execute_run(plan_for(cfg, ctx), ws, ctx, ResultsStore(out / "store"))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
