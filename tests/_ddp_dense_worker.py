"""Run by tests/test_dense_ddp.py on 2 gloo ranks (tests/_ranks.py; by hand: torchrun): a tiny SSDLite or
DeepLabv3 run over the BatchNorm MobileNetV2 with EMA on; per rank, checksums of the weights and BatchNorm
statistics (raw and EMA) as they were evaluated, and the epoch records.

argv: OUT_DIR TASK... (one process group for all of them): detection | segmentation, or map-gather: each rank scores its own share of three
hand-made images through the engine's DDP detection scoring, and the single-process score of all three beside it.
"""
import dataclasses
import json
import sys
from pathlib import Path

import torch

from zoo.config import DataConfig, RunConfig, SamplerConfig, load_recipe
from zoo.runner.plan import plan_for
from zoo.training import engine
from zoo.training.dense_task import detection_values
from zoo.training.distributed import init_distributed


def checksums(module: torch.nn.Module) -> dict[str, dict[str, float]]:
    """Per tensor, its float64 sum: parameters and floating buffers (BatchNorm's running statistics) apart."""
    return {"params": {n: float(p.detach().double().sum()) for n, p in module.named_parameters()},
            "buffers": {n: float(b.double().sum()) for n, b in module.named_buffers() if b.is_floating_point()}}


def recording_evaluate(evaluated: dict) -> None:
    """Wrap the loop's evaluation hook: note what the ranks evaluate (the last epoch's call wins). The parts are
    read once the hook has averaged BatchNorm statistics, through the task's evaluate it then calls."""
    original = engine.evaluate_epoch

    def evaluate_epoch(parts, ctx, *args, **kwargs):
        task_evaluate = parts.task.evaluate

        def evaluate(model, ctx):
            evaluated["raw"], evaluated["ema"] = checksums(parts.model), checksums(parts.ema.module)
            return task_evaluate(model, ctx)

        parts.task.evaluate = evaluate
        try:
            return original(parts, ctx, *args, **kwargs)
        finally:
            del parts.task.evaluate

    engine.evaluate_epoch = evaluate_epoch


def image(hit: bool, empty: bool = False) -> tuple[dict, dict]:
    """One image's (prediction, target): a box found exactly, a box missed (predicted elsewhere), or nothing."""
    box = torch.tensor([[10.0, 10.0, 30.0, 30.0]])
    elsewhere = torch.tensor([[40.0, 40.0, 60.0, 60.0]])
    if empty:
        return ({"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)},
                {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)})
    pred = {"boxes": box if hit else elsewhere, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
    return pred, {"boxes": box, "labels": torch.tensor([1])}


def map_gather(out_dir: str, ctx) -> None:
    images = [image(True), image(False), image(False, empty=True)]
    mine = images[:1] if ctx.rank == 0 else images[1:]
    share = [([p for p, _ in mine], [t for _, t in mine])]
    gathered = detection_values(share, ctx)
    one_process = detection_values([([p for p, _ in images], [t for _, t in images])],
                                 dataclasses.replace(ctx, world_size=1, rank=0))
    path = Path(out_dir) / f"map-gather_rank{ctx.rank}.json"
    path.write_text(json.dumps({"gathered": gathered, "one_process": one_process}))


def main(out_dir: str, *tasks: str) -> None:
    """Every task in one process group: one torchrun start for all of them."""
    ctx = init_distributed("cpu")
    torch.set_num_threads(1)
    evaluated: dict = {}
    recording_evaluate(evaluated)
    for task in tasks:
        if task == "map-gather":
            map_gather(out_dir, ctx)
        else:
            evaluated.clear()
            train(out_dir, task, ctx, evaluated)


def train(out_dir: str, task: str, ctx, evaluated: dict) -> None:
    cfg = RunConfig(
        model="mobilenetv2_100", task=task,  # BatchNorm throughout: each rank's batches move its own statistics
        recipe=load_recipe("basic", {"hflip": 0.0}),
        sampler=SamplerConfig(name="fixed", base_resolution=64, resolutions=(64,)),
        data=DataConfig(kind="scattered-digits", options={"train_size": 24, "val_size": 7}),
        epochs=1, batch_size=4, lr=0.002, lr_scaling="none", warmup_epochs=0, seed=7, ema_time_scale=0.01,
    )
    outcome = engine.train_run(plan_for(cfg, ctx), ctx, Path(out_dir) / task, progress=False)
    path = Path(out_dir) / f"{task}_rank{ctx.rank}.json"
    path.write_text(json.dumps({"history": [row.to_json() for row in outcome.history], "updates": outcome.updates,
                                **evaluated}))


if __name__ == "__main__":
    main(sys.argv[1], *sys.argv[2:])
