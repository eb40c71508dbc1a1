"""Run by tests/test_distributed.py on 1 or 2 gloo ranks (tests/_ranks.py; by hand: under torchrun).

Trains a tiny BatchNorm-free model for a few steps with deterministic data and writes, per rank, the running
training loss after every optimiser step plus the (resolution, indices) each step saw.
"""
import json
import sys
from pathlib import Path

from zoo.config import DataConfig, RunConfig, SamplerConfig, load_recipe
from zoo.training.distributed import init_distributed
from zoo.runner.plan import plan_for
from zoo.training.engine import train_run


def main(out_dir: str, batch_size: int, *samplers: str) -> None:
    """One run per sampler, all in one process group (one torchrun start), each into OUT_DIR/SAMPLER/."""
    ctx = init_distributed("cpu")
    for sampler in samplers:
        run(Path(out_dir) / sampler, batch_size, sampler, ctx)


def run(out_dir: Path, batch_size: int, sampler: str, ctx) -> None:
    cfg = RunConfig(
        model="deit_tiny",
        model_kwargs={"depth": 2, "embed_dim": 64, "num_heads": 2},  # LayerNorm only: no per-rank BN statistics
        recipe=load_recipe("basic", {"scale": [1.0, 1.0], "hflip": 0.0, "ema": False, "label_smoothing": 0.0}),
        sampler=SamplerConfig(name=sampler, base_resolution=32, resolutions=(32, 48)),
        data=DataConfig(kind="digits", options={"source_size": 32}, max_train_samples=128, max_val_samples=64,
                        eval_crop_pct=1.0),
        epochs=1, batch_size=batch_size, lr=0.001, lr_scaling="none", warmup_epochs=0, seed=3,
    )
    losses = []
    outcome = train_run(plan_for(cfg, ctx), ctx, Path(out_dir) / f"run{ctx.world_size}", progress=False, log_every=1,
                        log=lambda m, step: losses.append(m["train/loss"]) if "train/loss" in m else None)
    from zoo.training.loaders import build_loaders

    loaders = build_loaders(cfg, ctx)
    loaders.set_epoch(0)
    batches = [[int(i) for i, _ in batch] for batch in loaders.sampler]
    resolutions = [batch[0][1] for batch in loaders.sampler]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"ws{ctx.world_size}_rank{ctx.rank}.json"
    path.write_text(json.dumps({"losses": losses, "batches": batches, "resolutions": resolutions,
                                "top1": outcome.history[-1].val_top1, "updates": outcome.updates}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])
