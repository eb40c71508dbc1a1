"""Turn a run's data, recipe and sampler settings into train/val DataLoaders (rank-aware)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from torch.utils.data import DataLoader, Dataset, Subset

from zoo.config import RunConfig
from zoo.data import (
    DataError,
    MultiScaleBatchSampler,
    ResolutionDataset,
    TransformSpec,
    build_datasets,
    eval_transform,
    train_transform,
)
from zoo.data.multiscale import TRAIN_BATCH_MULTIPLE
from zoo.training.distributed import DistContext


@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader
    sampler: MultiScaleBatchSampler
    num_classes: int
    skipped_images: int = 0

    @property
    def batches_per_epoch(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)


class _EvalDataset(Dataset):
    def __init__(self, base: Dataset, transform):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        image, label = self.base[index]
        return self.transform(image), label


def _limit(dataset: Dataset, limit: int | None) -> Dataset:
    """An evenly spaced subset (keeps the class mix of a sorted or stratified data set)."""
    if limit is None or limit >= len(dataset):
        return dataset
    step = len(dataset) / limit
    return Subset(dataset, [int(i * step) for i in range(limit)])


def transform_spec(cfg: RunConfig) -> TransformSpec:
    r = cfg.recipe
    return TransformSpec(
        scale=r.scale,
        hflip=r.hflip,
        auto_augment=r.auto_augment,
        color_jitter=r.color_jitter,
        re_prob=r.re_prob,
        re_mode=r.re_mode,
        interpolation=r.interpolation,
        crop_pct=cfg.data.eval_crop_pct,
    )


def train_sampler(cfg: RunConfig, train_images: int, ctx: DistContext) -> MultiScaleBatchSampler:
    """The run's training batch sampler over `train_images` images (also what the plan counts updates with)."""
    s = cfg.sampler
    resolutions = s.resolutions if s.name == "multiscale" else (s.base_resolution,)
    return MultiScaleBatchSampler(
        train_images,
        resolutions=resolutions,
        base_resolution=s.base_resolution,
        base_batch_size=cfg.batch_size,
        mode=s.mode,
        rank=ctx.rank,
        world_size=ctx.world_size,
        seed=cfg.seed,
        repeats=cfg.recipe.repeated_aug if ctx.distributed else 1,  # DeiT repeats only under DDP
        drop_last=True,  # a short last batch would be odd (unmixable) or tiny (BatchNorm fails on one image)
        multiple=TRAIN_BATCH_MULTIPLE,
    )


def build_loaders(cfg: RunConfig, ctx: DistContext) -> Loaders:
    splits = build_datasets(cfg.data.kind, root=cfg.data.root, options=dict(cfg.data.options))
    train_set = _limit(splits.train, cfg.data.max_train_samples)
    val_set = _limit(splits.val, cfg.data.max_val_samples)
    spec = transform_spec(cfg)
    s = cfg.sampler
    sampler = train_sampler(cfg, len(train_set), ctx)
    largest = max(batch for _, batch in sampler.pairs)
    if sampler.samples_per_rank < largest:
        raise DataError(f"data: {sampler.samples_per_rank} training images per process cannot fill one batch of "
                        f"{largest}; lower budget.batch_size or use more data")
    workers = cfg.data.workers
    pin = ctx.device.type == "cuda"
    train = DataLoader(
        ResolutionDataset(train_set, partial(train_transform, spec)),  # picklable for workers
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=pin,
        # Workers start anew each epoch, seeded from this rank's freshly seeded RNG: augmentation then differs per
        # rank and per epoch, and a resumed run draws exactly what an uninterrupted one would have.
        persistent_workers=False,
    )
    # Each rank evaluates a disjoint slice and nothing is padded, so every validation image counts exactly once.
    val_set = _EvalDataset(val_set, eval_transform(spec, s.eval_size))
    shard = Subset(val_set, range(ctx.rank, len(val_set), ctx.world_size)) if ctx.distributed else val_set
    val = DataLoader(shard, batch_size=cfg.batch_size * 2, num_workers=workers, pin_memory=pin)
    return Loaders(train, val, sampler, splits.num_classes, getattr(splits, "skipped", 0))
