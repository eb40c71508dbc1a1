"""Harness overhead and the multi-scale sampler's effect, measured side by side in one process.

1. Training img/s of the harness (zoo.training.engine.train_run: EMA, scheduler, loss checks, logging hooks) vs a bare
   forward+backward+AdamW loop over the same DataLoader, model, batch and data. Target: harness >= 0.9x bare.
2. Epoch time and optimiser updates with the multi-scale sampler vs the fixed resolution.

Run: python benchmarks/bench_harness.py [--model mobilevit_xxs] [--res 48] [--batch 64] [--rounds 2]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from zoo.config import DataConfig, RunConfig, SamplerConfig, load_recipe
from zoo.training.distributed import DistContext
from timm.utils import random_seed

from zoo.training.engine import train_run
from zoo.training.loaders import build_loaders
from zoo.training.components import build_model


def config(args, sampler: str) -> RunConfig:
    return RunConfig(
        model=args.model, recipe=load_recipe("basic"), epochs=1, batch_size=args.batch, lr_scaling="none",
        sampler=SamplerConfig(name=sampler, base_resolution=args.res,
                              resolutions=tuple(args.res + d for d in (-16, 0, 16))),
        data=DataConfig(kind="digits", options={"source_size": 32}, eval_crop_pct=1.0, max_val_samples=64),
    )


def bare_img_per_s(cfg: RunConfig) -> float:
    random_seed(0)
    loaders = build_loaders(cfg, DistContext())
    model = build_model(cfg, loaders.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    model.train()
    seen, start = 0, time.perf_counter()
    for images, targets in loaders.train:
        loss = F.cross_entropy(model(images), targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        seen += images.shape[0]
    return seen / (time.perf_counter() - start)


def harness(cfg: RunConfig) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        out = train_run(cfg, DistContext(), Path(tmp), progress=False)
    return out.train_samples / out.train_time_s, out.train_time_s, out.updates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="mobilevit_xxs")
    parser.add_argument("--res", type=int, default=48)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    fixed, multi = config(args, "fixed"), config(args, "multiscale")
    bare_runs, harness_runs, multi_runs = [], [], []
    for _ in range(args.rounds):  # interleaved so drift on a noisy machine hits both alike
        bare_runs.append(bare_img_per_s(fixed))
        harness_runs.append(harness(fixed))
        multi_runs.append(harness(multi))
    bare = max(bare_runs)
    best_h = max(harness_runs)
    best_m = max(multi_runs)
    print(f"model {args.model}, digits, batch {args.batch} at {args.res}px, torch threads {torch.get_num_threads()}")
    print(f"bare loop      : {bare:8.1f} img/s   (rounds: {', '.join(f'{v:.1f}' for v in bare_runs)})")
    print(f"harness (fixed): {best_h[0]:8.1f} img/s   ratio harness/bare = {best_h[0] / bare:.3f}  (target >= 0.95)")
    print(f"epoch time     : fixed {best_h[1]:.1f} s, {best_h[2]} updates | multi-scale {best_m[1]:.1f} s, "
          f"{best_m[2]} updates ({', '.join(str(r) for r in multi.sampler.resolutions)} px) "
          f"-> multi/fixed time {best_m[1] / best_h[1]:.2f}x, updates {best_m[2] / best_h[2]:.2f}x")


if __name__ == "__main__":
    main()
