"""Data for zoo: sources (`datasets`), recipe transforms (`transforms`) and the multi-scale sampler (`multiscale`).

Typical wiring (one process of a DDP job)::

    splits = build_datasets("digits", options={"source_size": 32})
    spec = TransformSpec(scale=(0.08, 1.0), interpolation="bilinear")
    sampler = MultiScaleBatchSampler(len(splits.train), base_resolution=256, base_batch_size=128,
                                     rank=rank, world_size=world_size, seed=seed)
    train = DataLoader(ResolutionDataset(splits.train, functools.partial(train_transform, spec)),
                       batch_sampler=sampler, num_workers=8)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for images, labels in train: ...  # images: (b_t, 3, t, t) with t drawn per batch, same on every rank
"""
from zoo.data.datasets import (
    DATASET_KINDS,
    CorruptImageError,
    DataError,
    DataSplits,
    build_datasets,
    load_rgb,
)
from zoo.data.multiscale import (
    PAPER_BASE_RESOLUTION,
    PAPER_RESOLUTIONS,
    MultiScaleBatchSampler,
    ResolutionDataset,
    resolution_batch_pairs,
)
from zoo.data.transforms import TransformSpec, eval_transform, train_transform

__all__ = [
    "DATASET_KINDS",
    "PAPER_BASE_RESOLUTION",
    "PAPER_RESOLUTIONS",
    "CorruptImageError",
    "DataError",
    "DataSplits",
    "MultiScaleBatchSampler",
    "ResolutionDataset",
    "TransformSpec",
    "build_datasets",
    "eval_transform",
    "load_rgb",
    "resolution_batch_pairs",
    "train_transform",
]
