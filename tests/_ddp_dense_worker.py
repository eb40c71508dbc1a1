"""Run by tests/test_dense_ddp.py under torchrun (gloo, CPU): a tiny SSDLite or DeepLabv3 run over the BatchNorm
MobileNetV2 with EMA on; per rank, checksums of the weights and BatchNorm statistics (raw and EMA) as they were
evaluated, and the epoch records.

argv: OUT_DIR TASK (detection | segmentation).
"""
import json
import sys
from pathlib import Path

import torch

from zoo.config import DataConfig, RunConfig, SamplerConfig, load_recipe
from zoo.runner.plan import plan_for
from zoo.training import dense_engine
from zoo.training.distributed import init_distributed


def checksums(module: torch.nn.Module) -> dict[str, dict[str, float]]:
    """Per tensor, its float64 sum: parameters and floating buffers (BatchNorm's running statistics) apart."""
    return {"params": {n: float(p.detach().double().sum()) for n, p in module.named_parameters()},
            "buffers": {n: float(b.double().sum()) for n, b in module.named_buffers() if b.is_floating_point()}}


def recording_evaluate(evaluated: dict) -> None:
    """Wrap the engine's evaluation: note what the ranks evaluate (the last epoch's call wins)."""
    original = dense_engine.evaluate_dense

    def evaluate(model, parts, ctx):
        evaluated["raw"], evaluated["ema"] = checksums(parts.model), checksums(parts.ema.module)
        return original(model, parts, ctx)

    dense_engine.evaluate_dense = evaluate


def main(out_dir: str, task: str) -> None:
    ctx = init_distributed("cpu")
    torch.set_num_threads(1)
    cfg = RunConfig(
        model="mobilenetv2_100", task=task,  # BatchNorm throughout: each rank's batches move its own statistics
        recipe=load_recipe("basic", {"hflip": 0.0}),
        sampler=SamplerConfig(name="fixed", base_resolution=64, resolutions=(64,)),
        data=DataConfig(kind="scattered-digits", options={"train_size": 24, "val_size": 7}),
        epochs=1, batch_size=4, lr=0.002, lr_scaling="none", warmup_epochs=0, seed=7, ema_time_scale=0.01,
    )
    evaluated: dict = {}
    recording_evaluate(evaluated)
    outcome = dense_engine.train_dense_run(plan_for(cfg, ctx), ctx, Path(out_dir) / task, progress=False)
    path = Path(out_dir) / f"{task}_rank{ctx.rank}.json"
    path.write_text(json.dumps({"history": [row.to_json() for row in outcome.history], "updates": outcome.updates,
                                **evaluated}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
