"""`make gpu-check`'s measurements beyond what `zoo.run` records, each on a trained cell's own resolved config.

- the harness's training step (`zoo.training.engine.forward_backward` / `optimizer_step`, the run's `build_parts`)
  over the run's real DataLoader, with the time the loop is blocked on the next batch counted (timm's data_time
  convention: no extra synchronisation, so waiting that overlaps GPU work is not idle GPU time);
- the same model in a bare loop on device-resident tensors (forward, loss, backward, the run's optimiser): the
  limit the harness is compared with; compiled vs eager for one model;
- evaluation img/s (the loop's settings: eval mode, autocast, channels_last, the eval loader's batch);
- the `cuda` / `cuda-bf16` latency records the matrix's measurement wrote, beside the paper's V100 column.
"""
from __future__ import annotations

import platform
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from zoo.config import RunConfig
from zoo.training import engine
from zoo.training.components import autocast, build_model, build_optimizer, placed
from zoo.training.distributed import DistContext
from zoo.training.engine import RunOutcome, accumulation_weights, forward_backward, optimizer_step

from gpu_check_data import PAPER_V100_MS


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def context() -> DistContext:
    return DistContext(device=torch.device("cuda:0" if torch.cuda.is_available() else "cpu"))


def environment() -> dict:
    """GPU name, driver, CUDA, cuDNN and library versions (the table's header and the JSON's `env`)."""
    import timm

    env = {"torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
           "cpu": platform.processor() or platform.machine(), "cuda_available": torch.cuda.is_available(),
           "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0}
    if env["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported(), driver=_driver())
    return env


def _driver() -> str | None:
    """The NVIDIA driver version (torch reports CUDA's, not the driver's): from nvidia-smi when it is there."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0] if out else None


def _device_batch(cfg: RunConfig, batch: int, resolution: int, classes: int, device: torch.device):
    images = torch.randn(batch, 3, resolution, resolution, device=device)
    if cfg.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, torch.randint(0, classes, (batch,), device=device)


def bare_train(cfg: RunConfig, classes: int, ctx: DistContext, steps: int, compiled: bool = False) -> dict:
    """img/s of forward + cross-entropy + backward + the run's optimiser on one device-resident batch at the base
    resolution (no loader, no mixing, no EMA): the limit of the harness on this model. The first step (cuDNN's
    search, or the compilation) is reported apart as `first_step_s`, then two more warm-up steps."""
    model = placed(cfg, ctx, build_model(cfg, classes)).train()
    optimizer = build_optimizer(cfg, model)
    step_model = torch.compile(model) if compiled else model
    images, targets = _device_batch(cfg, cfg.batch_size, cfg.sampler.base_resolution, classes, ctx.device)

    def step() -> None:
        with autocast(ctx.device, cfg):
            loss = F.cross_entropy(step_model(images), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    started = time.perf_counter()
    step()
    _sync(ctx.device)
    first = time.perf_counter() - started
    for _ in range(2):
        step()
    _sync(ctx.device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(ctx.device)
    seconds = time.perf_counter() - started
    return {"img_per_s": steps * cfg.batch_size / seconds, "first_step_s": first, "steps": steps}


@torch.no_grad()
def eval_throughput(cfg: RunConfig, classes: int, ctx: DistContext, steps: int) -> float:
    """img/s of evaluation as the loop runs it (eval mode, autocast, channels_last) on device-resident batches of
    the eval loader's size (2 x batch_size) at the evaluation resolution."""
    model = placed(cfg, ctx, build_model(cfg, classes)).eval()
    images, _ = _device_batch(cfg, 2 * cfg.batch_size, cfg.sampler.eval_size, classes, ctx.device)
    for _ in range(2):
        with autocast(ctx.device, cfg):
            model(images)
    _sync(ctx.device)
    started = time.perf_counter()
    for _ in range(steps):
        with autocast(ctx.device, cfg):
            model(images)
    _sync(ctx.device)
    return steps * images.shape[0] / (time.perf_counter() - started)


def loader_loop(cfg: RunConfig, ctx: DistContext, steps: int) -> dict:
    """The harness's training step over the run's real loader (every generated image, so the loop outlasts the
    workers' prefetch), with the time blocked on `next(batch)` counted. The first batch (worker start-up) is
    reported apart; the share and img/s are of the steps after it."""
    cfg = replace(cfg, data=replace(cfg.data, max_train_samples=None))
    parts = engine.build_parts(cfg, ctx, compile_model=False)  # the loop's own (wherever it lives)
    parts.loaders.set_epoch(0)
    parts.train_model.train()
    weights = accumulation_weights(parts.loaders.sampler.batch_plan(0), cfg.accum_steps)
    steps = min(steps, len(weights))
    outcome, batches = RunOutcome(), iter(parts.loaders.train)
    wait = images_seen = 0
    first = loop_start = 0.0
    started = time.perf_counter()
    for index in range(steps):
        before = time.perf_counter()
        images, targets = next(batches)
        if index > 0:
            wait += time.perf_counter() - before
            images_seen += images.shape[0]
        weight, boundary = weights[index]
        forward_backward(parts, ctx, images, targets, weight, boundary)
        if boundary:
            optimizer_step(cfg, parts, outcome)
        if index == 0:  # worker start-up and the first step's kernel search: not the steady state
            _sync(ctx.device)
            first = time.perf_counter() - started
            loop_start = time.perf_counter()
    _sync(ctx.device)
    seconds = time.perf_counter() - loop_start
    del batches  # shuts the workers down before the next model's loader starts its own
    timed = seconds > 0 and images_seen > 0
    return {"img_per_s": images_seen / seconds if timed else None, "wait_share": wait / seconds if timed else None,
            "first_batch_s": first, "steps": steps - 1, "workers": cfg.data.workers}


def latency_rows(store_dir: Path, models: list[str]) -> list[dict]:
    """Per model and backend: batch-1 and batch-32 latency from the measurements store (the matrix's deploy pass
    and the extra paper models), with the paper's V100 figure where it has one."""
    from zoo.measure.store import MeasurementStore

    records = [r for r in MeasurementStore(store_dir / "measurements.jsonl").latest().values()
               if r.backend in ("cuda", "cuda-bf16") and r.model in models and r.num_classes == 1000]
    rows = []
    for model in models:
        for backend in ("cuda", "cuda-bf16"):
            mine = {r.batch_size: r for r in records if r.model == model and r.backend == backend}
            if not mine:
                continue
            one, many = mine.get(1), mine.get(32)
            any_record = one or many
            rows.append({
                "model": model, "backend": backend, "resolution": any_record.resolution,
                "status": any_record.status, "reason": any_record.reason,
                "batch1_ms": one.latency_ms if one and one.timed else None,
                "batch32_ms": many.latency_ms if many and many.timed else None,
                "batch32_per_image_ms": many.latency_ms / 32 if many and many.timed else None,
                "paper_v100_ms": PAPER_V100_MS.get(model),
            })
    return rows


def time_extra_latency(store_dir: Path, models: tuple[str, ...], rounds: int) -> None:
    """The paper's V100 rows the matrix did not train (PiT-Ti, MobileViT-XS), timed into the same store."""
    from zoo.measure.latency import TimingConfig
    from zoo.measure.suite import measure_models

    if models:
        measure_models(list(models), None, ["cuda", "cuda-bf16"], store_dir / "measurements.jsonl",
                       timing=TimingConfig(rounds=rounds), artifacts_dir=store_dir.parent / "latency-artifacts")
