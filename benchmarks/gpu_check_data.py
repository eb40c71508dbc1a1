"""`make gpu-check`'s inputs: the two sizes it runs at, a generated ImageNet-layout folder of JPEGs, the matrix files.

The images are synthetic but learnable (each class a hue and a stripe orientation, under noise), so a few dozen
updates lower the loss, and they are real JPEGs of ImageNet-like sizes, so training goes through the path a user's
data takes: Pillow decoding in DataLoader workers, the recipe's transforms, pinned memory on CUDA.
"""
from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

# The paper's V100 column (MobileViT, arXiv 2110.02178, Table 3: "NVIDIA V100 GPU, batch size 32", ms). A whole
# batch of 32 MobileNetV2 images in 0.31 ms would be 100k img/s, beyond a V100, so the figures read per image.
PAPER_V100_MS = {"mobilenetv2_100": 0.31, "deit_tiny": 0.43, "pit_ti": 0.46, "mobilevit_xs": 0.62}
PAPER_V100_SOURCE = "MobileViT (arXiv 2110.02178) Table 3, NVIDIA V100, batch 32, ms per image"


@dataclass(frozen=True)
class Profile:
    """How big one gpu-check is. `gpu`: the paper's per-GPU batch at 256 px, sized to stay under 8 minutes on one
    GPU; `cpu`: the same path at a tiny size, under 2 minutes on 2 cores (CI's check of the command)."""

    name: str
    models: tuple[str, ...]
    base_resolution: int
    resolutions: tuple[int, ...]
    batch_size: int
    epochs: int
    train_images: int  # generated; the instrumented loader loop reads them all
    matrix_train_images: int  # what each matrix cell trains on per epoch (an evenly spaced subset)
    val_images: int
    image_sizes: tuple[int, int]  # generated JPEG sides, drawn in this range (ImageNet's are ~300-500 px)
    classes: int
    workers: int
    amp: bool
    loop_steps: int  # instrumented steps over the real loader, per model
    bare_steps: int  # timed steps of the bare loop on device-resident tensors
    compile_model: str | None  # the model timed compiled vs eager (None: not on this path)
    latency_extra: tuple[str, ...]  # untrained models timed too: the paper's V100 rows
    latency_rounds: int
    budget_s: float  # the wall time the whole command should stay under
    threads: int | None = None  # torch CPU threads (CPU path: 1, as the default board's workers: small models
    # at 32 px use a second thread poorly, and a shared 2-core machine slows OpenMP regions of 2 threads 5-25x)


def default_workers() -> int:
    """DataLoader workers for one GPU: every core but two (the main process and the OS), at most 16."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, min(16, cores - 2))


def ddp_workers(gpus: int) -> int:
    """Loader workers per rank when `gpus` ranks share this machine's cores (each rank's process takes one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, min(16, (cores - gpus) // gpus))


def gpu_profile() -> Profile:
    return Profile(
        name="gpu", models=("mobilevit_xxs", "deit_tiny", "coatnet_pico", "mobilenetv2_100"),
        base_resolution=256, resolutions=(160, 192, 256, 288, 320), batch_size=128, epochs=3,
        # 12 updates per epoch at 256 px, 3 epochs: a trend in the loss through the advanced recipe's mixing, not
        # one noisy difference; 60 batches for the loader loop, several rounds of every worker's batch
        train_images=7680, matrix_train_images=1536, val_images=512, image_sizes=(300, 500), classes=10,
        workers=default_workers(), amp=True, loop_steps=60, bare_steps=20, compile_model="mobilevit_xxs",
        latency_extra=tuple(m for m in PAPER_V100_MS if m not in ("mobilenetv2_100", "deit_tiny")),
        latency_rounds=3, budget_s=480.0)


def cpu_profile() -> Profile:
    return Profile(
        name="cpu", models=("mobilevit_xxs", "deit_tiny"), base_resolution=32, resolutions=(24, 32, 40),
        batch_size=16, epochs=3, train_images=128, matrix_train_images=96, val_images=32, image_sizes=(40, 72),
        classes=4, workers=1, amp=False, loop_steps=8, bare_steps=4, compile_model=None, latency_extra=(),
        latency_rounds=1, budget_s=120.0, threads=1)


def with_models(profile: Profile, models: list[str] | None) -> Profile:
    return profile if not models else replace(profile, models=tuple(models))


def _synth(label: int, classes: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """One HxWx3 uint8 image of class `label`: its hue, stripes at its angle, a random phase and noise."""
    hue = 2 * math.pi * label / classes
    colour = 0.5 + 0.4 * np.array([math.cos(hue), math.cos(hue - 2.094), math.cos(hue + 2.094)])
    angle = math.pi * label / classes
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    period = rng.uniform(0.08, 0.16) * min(width, height)
    wave = np.sin(2 * math.pi * (x * math.cos(angle) + y * math.sin(angle)) / period + rng.uniform(0, 2 * math.pi))
    image = colour[None, None, :] * (0.65 + 0.35 * wave[..., None])
    image += rng.normal(0, 0.08, size=image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def _write_class(args: tuple[Path, int, int, int, tuple[int, int], int]) -> int:
    folder, label, classes, count, sizes, seed = args
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        width, height = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, size=2))
        Image.fromarray(_synth(label, classes, width, height, rng)).save(folder / f"{i:05d}.JPEG", quality=90)
    return count


def make_image_folder(root: Path, profile: Profile, seed: int = 0) -> bool:
    """Write root/train/<class>/*.JPEG and root/val/<class>/*.JPEG; returns False when the folder was already made
    with these sizes (a rerun reuses it). Classes are written in parallel processes: thousands of JPEGs of
    ImageNet size take seconds on a GPU machine's cores instead of half a minute."""
    spec = {"train": profile.train_images, "val": profile.val_images, "sizes": list(profile.image_sizes),
            "classes": profile.classes, "seed": seed, "version": 1}
    marker = root.parent / f"{root.name}.json"  # beside the folder: files inside it would be counted as junk
    if marker.is_file() and json.loads(marker.read_text()) == spec and (root / "train").is_dir():
        return False
    jobs = []
    for split, total in (("train", profile.train_images), ("val", profile.val_images)):
        for label in range(profile.classes):
            count = total // profile.classes + (1 if label < total % profile.classes else 0)
            jobs.append((root / split / f"class{label:02d}", label, profile.classes, count, profile.image_sizes,
                         seed * 1000 + label * 2 + (split == "val")))
    with ProcessPoolExecutor(max_workers=min(len(jobs), default_workers() + 1)) as pool:
        list(pool.map(_write_class, jobs))
    marker.write_text(json.dumps(spec))
    return True


def matrix_yaml(profile: Profile, data_root: Path, out: Path, *, name: str, store: str, models: tuple[str, ...],
                recipes: tuple[str, ...], samplers: tuple[str, ...], train_images: int | None,
                workers: int, measure: bool) -> dict:
    """A runs.yaml for `python -m zoo.run`, as a user would write it (every key is one of docs/matrix.md's)."""
    warmup = 0.5  # half an epoch: the lr reaches its peak early enough for the loss to fall in two epochs
    return {
        "name": name,
        "data": {"kind": "imagefolder", "root": str(data_root), "workers": workers, "eval_crop_pct": 0.889,
                 # One evaluation batch is prepared by one loader worker, image after image: a batch's worth of
                 # validation images keeps each of the run's evaluations under a second.
                 "max_train_samples": train_images, "max_val_samples": min(profile.val_images, profile.batch_size)},
        "models": list(models), "recipes": list(recipes), "samplers": list(samplers),
        "resolution": {"base_resolution": profile.base_resolution, "resolutions": list(profile.resolutions),
                       "mode": "scaled"},
        "seeds": [0],
        # The paper's lr without linear scaling (at 128 images it would be 2.5e-4): a few dozen updates must learn.
        # EMA time constants shrink with the budget (as runs/cifar.yaml's do) below its few dozen updates, so the
        # EMA follows the weights and the board has no EMA-shorter-than-its-horizon caveat.
        "budget": {"epochs": profile.epochs, "batch_size": profile.batch_size, "lr": 0.002, "lr_scaling": "none",
                   "warmup_epochs": warmup, "grad_clip": 1.0, "ema_time_scale": 0.0002},
        "output_dir": str(out / f"{store}-out"), "store_dir": str(out / store),
        "wandb": {"mode": "disabled"},
        "execution": {"device": "auto", "amp": profile.amp, "channels_last": True, "compile": False,
                      "log_every": 10, "progress": False, "threads": profile.threads},
        "measure": {"enabled": measure, "backends": ["cuda", "cuda-bf16"], "eval_backends": [],
                    "calibration_images": 2, "int8_accuracy": False, "breakdown": False,
                    "rounds": profile.latency_rounds},
    }


def write_matrices(profile: Profile, data_root: Path, out: Path, gpus: int) -> dict[str, Path]:
    """The mini matrix (every model x basic/advanced x fixed/multi-scale on one GPU) and, with 2+ GPUs, the DDP
    check: one cell on every GPU, each rank given as many images as the 1-GPU cell, so its img/s compares."""
    files = {"matrix": out / "gpu-check.yaml"}
    main = matrix_yaml(profile, data_root, out, name="gpu-check", store="store", models=profile.models,
                       recipes=("basic", "advanced"), samplers=("fixed", "multiscale"),
                       train_images=profile.matrix_train_images, workers=profile.workers, measure=True)
    files["matrix"].write_text(yaml.safe_dump(main, sort_keys=False))
    if gpus >= 2:
        ddp = matrix_yaml(profile, data_root, out, name="gpu-check-ddp", store="ddp-store",
                          models=profile.models[:1], recipes=("basic",), samplers=("fixed",),
                          train_images=min(profile.train_images, profile.matrix_train_images * gpus),
                          workers=ddp_workers(gpus), measure=False)
        files["ddp"] = out / "gpu-check-ddp.yaml"
        files["ddp"].write_text(yaml.safe_dump(ddp, sort_keys=False))
    return files


def profile_json(profile: Profile) -> dict:
    return asdict(profile)
