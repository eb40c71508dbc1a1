"""Train/val DataLoaders of a detection or segmentation run: the classification loaders' sampler (fixed or
multi-scale, the same batch plan, seeds and workers), with each sample's image and its boxes or mask resized
together to the batch's resolution (torchvision's v2 transforms move tv_tensors with the image).

Per-sample augmentation: the recipe's horizontal flip only (`zoo.config.tasks.DENSE_UNUSED_RECIPE_KEYS` lists
what a dense task leaves out, and why). Detection drops boxes left under 1 px by a downscale (torchvision's
`SanitizeBoundingBoxes`); an image may then have no box, which SSD's loss takes as all background.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import tv_tensors
from torchvision.transforms import v2

from zoo.config import RunConfig
from zoo.data import DataError, MultiScaleBatchSampler, build_datasets
from zoo.data.dense import collate_detection, collate_segmentation
from zoo.training.distributed import DistContext
from zoo.training.loaders import Loaders, _limit, train_sampler

TARGET_KEYS = {"detection": ("boxes", "labels", "image_id"), "segmentation": ("semantic",)}


def dense_transform(task: str, size: int, hflip: float) -> Callable[[Any, Any], Any]:
    """Image and target to `size` x `size` (float32 image in [0, 1]), flipped with probability `hflip`."""
    steps: list[Any] = [v2.ToImage()]
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    steps += [v2.Resize((size, size), antialias=True), v2.ToDtype({tv_tensors.Image: torch.float32, "others": None},
                                                                   scale=True)]
    if task == "detection":
        steps.append(v2.SanitizeBoundingBoxes(min_size=1.0))
    return v2.Compose(steps)


class DenseResolutionDataset(Dataset):
    """A dense source read at ``(index, size)`` keys (the sampler's) or plain indices at `default_size`; the
    target keeps what the task trains on. Transforms are built once per size per worker; picklable."""

    def __init__(self, base: Dataset, task: str, hflip: float, default_size: int | None = None) -> None:
        self.base, self.task, self.hflip, self.default_size = base, task, hflip, default_size
        self._transforms: dict[int, Callable[[Any, Any], Any]] = {}

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int] | int) -> Any:
        index, size = key if isinstance(key, tuple) else (key, self.default_size)
        if size is None:
            raise TypeError("DenseResolutionDataset: index with (index, size) pairs or set default_size")
        if size not in self._transforms:
            self._transforms[size] = dense_transform(self.task, size, self.hflip)
        image, target = self.base[index]
        kept = {k: target[k] for k in TARGET_KEYS[self.task] if k in target}
        return self._transforms[size](image, kept)


def collate_for(task: str) -> Callable[[Any], Any]:
    return collate_detection if task == "detection" else collate_segmentation


def build_dense_loaders(cfg: RunConfig, ctx: DistContext) -> Loaders:
    splits = build_datasets(cfg.data.kind, root=cfg.data.root, options=dict(cfg.data.options))
    train_set = _limit(splits.train, cfg.data.max_train_samples)
    val_set = _limit(splits.val, cfg.data.max_val_samples)
    sampler = train_sampler(cfg, len(train_set), ctx)
    largest = max(batch for _, batch in sampler.pairs)
    if sampler.samples_per_rank < largest:
        raise DataError(f"data: {sampler.samples_per_rank} training images per process cannot fill one batch of "
                        f"{largest}; lower budget.batch_size or use more data")
    workers, pin, collate = cfg.data.workers, ctx.device.type == "cuda", collate_for(cfg.task)
    train = DataLoader(DenseResolutionDataset(train_set, cfg.task, cfg.recipe.hflip), batch_sampler=sampler,
                       num_workers=workers, pin_memory=pin, collate_fn=collate, persistent_workers=False)
    val_set = DenseResolutionDataset(val_set, cfg.task, 0.0, default_size=cfg.sampler.eval_size)
    shard = Subset(val_set, range(ctx.rank, len(val_set), ctx.world_size)) if ctx.distributed else val_set
    val = DataLoader(shard, batch_size=cfg.batch_size * 2, num_workers=workers, pin_memory=pin, collate_fn=collate)
    return Loaders(train, val, sampler, splits.num_classes)  # the classification loaders' type: same fields
