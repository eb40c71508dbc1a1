"""The paper's variable-batch multi-scale sampler (MobileViT, section 3.2), DDP-aware; the fixed sampler is the
same class with one resolution.

Public API
----------
``resolution_batch_pairs(resolutions, base_resolution, base_batch_size, mode="scaled", batch_divisor=8)``
    -> ``list[tuple[int, int]]`` of (resolution, per-rank batch size), sorted by resolution.
``MultiScaleBatchSampler(num_samples, *, resolutions, base_resolution, base_batch_size, mode, rank, world_size,
seed, repeats, drop_last, batch_divisor)``
    A ``Sampler[list[tuple[int, int]]]`` for ``DataLoader(batch_sampler=...)``: each batch is a list of
    ``(dataset index, resolution)`` pairs, all at one resolution. ``set_epoch(epoch)``, ``len()`` (batches this
    epoch), ``batch_plan(epoch)``, ``updates_per_epoch(epoch)``, ``total_updates(epochs)``.
``ResolutionDataset(base, transform_for_size, default_size=None)``
    Wraps a data set of (PIL image, label); ``dataset[(index, size)]`` applies the transform built for that size
    (built once per size per worker), so the default collate stacks a batch of one size.

Batch size per resolution (b at the base resolution n, b_t at resolution t): ``b_t = H_n·W_n·b / (H_t·W_t)``.

* ``mode="scaled"`` (default): ``b_t = floor(...)`` at every resolution, as in the later ml-cvnets code: b=128 gives
  (160,327) (192,227) (256,128) (288,101) (320,81). Pixels per batch never exceed the base batch's, so peak memory
  is bounded by the base configuration — a run that fits at 256 px fits at every drawn size.
* ``mode="v0.1"``: the official v0.1 release the paper's numbers came from. Resolutions above the base keep b
  (``max(b, ...)``), and every batch is rounded to the nearest multiple of ``batch_divisor`` (v0.1 rounded to a
  multiple of its GPU count, 8 in the paper): b=128 gives (160,328) (192,224) (256,128) (288,128) (320,128).
  Large resolutions then hold up to 1.56× the base pixels per batch.

Distributed behaviour (every rank builds the sampler with the same ``seed`` and calls ``set_epoch``):

* the resolution sequence is drawn from ``(seed, epoch)`` only, so all ranks use the same resolution at each step;
* an epoch is a permutation of the data set, dealt round-robin to ranks: disjoint shares, each rank gets
  ``ceil(num_samples / world_size)`` indices. **Padding**: when the data set does not divide evenly, the
  permutation wraps around to fill the last ``world_size - 1`` slots (as torch's DistributedSampler does), so every
  rank has the same number of samples, hence the same batch plan and batch count — DDP never waits on a rank;
* the last batch of an epoch is shorter when the samples run out mid-batch (same size on every rank), or dropped
  with ``drop_last=True``;
* ``repeats=k`` (DeiT's repeated augmentation) repeats each permuted index k times consecutively before dealing,
  so the k copies land on k different ranks (when k <= world_size) and get independent augmentations; the epoch
  keeps the plain data set's length, so it sees about ``num_samples / k`` distinct images.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
from torch.utils.data import Dataset, Sampler

PAPER_RESOLUTIONS: tuple[int, ...] = (160, 192, 256, 288, 320)
PAPER_BASE_RESOLUTION = 256
MODES = ("scaled", "v0.1")
# Training batches are even: timm's batch Mixup/CutMix pairs image i with image n-1-i, so an odd batch could not be
# mixed, and the advanced recipe would silently become another recipe at some resolutions (327 -> 326 at 160 px).
TRAIN_BATCH_MULTIPLE = 2
Mode = Literal["scaled", "v0.1"]


def _round_to_multiple(value: float, divisor: int) -> int:
    """Nearest multiple of `divisor` (halves up), never below `divisor` nor more than 10% under `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def resolution_batch_pairs(
    resolutions: Sequence[int],
    base_resolution: int = PAPER_BASE_RESOLUTION,
    base_batch_size: int = 128,
    mode: Mode = "scaled",
    batch_divisor: int = 8,
    multiple: int = 1,
) -> list[tuple[int, int]]:
    """(resolution, per-rank batch size) for every resolution, sorted by resolution; see the module docstring.
    `multiple` rounds scaled batches down to a multiple of it (0 when fewer pixels than that fit)."""
    if mode not in MODES:
        raise ValueError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    if not resolutions:
        raise ValueError("resolutions: need at least one resolution")
    if min(resolutions) <= 0 or base_resolution <= 0 or base_batch_size <= 0 or batch_divisor <= 0:
        raise ValueError("resolutions, base_resolution, base_batch_size and batch_divisor must be positive")
    base_pixels = base_resolution * base_resolution * base_batch_size
    pairs = []
    for size in sorted(set(resolutions)):
        exact = base_pixels / (size * size)
        if mode == "scaled":
            batch = max(1, math.floor(exact)) if multiple == 1 else math.floor(exact / multiple) * multiple
        else:
            # v0.1 truncated the ratio (after rounding it to 2 decimals) and never went below the base batch
            batch = _round_to_multiple(max(base_batch_size, int(round(exact, 2))), batch_divisor)
        pairs.append((size, batch))
    return pairs


class MultiScaleBatchSampler(Sampler[list[tuple[int, int]]]):
    """Variable-resolution, variable-batch-size batch sampler; one resolution per batch, same on all ranks."""

    def __init__(
        self,
        num_samples: int,
        *,
        resolutions: Sequence[int] = PAPER_RESOLUTIONS,
        base_resolution: int = PAPER_BASE_RESOLUTION,
        base_batch_size: int = 128,
        mode: Mode = "scaled",
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        repeats: int = 1,
        drop_last: bool = False,
        batch_divisor: int = 8,
        multiple: int = 1,
    ) -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples: must be >= 0, got {num_samples}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank/world_size: need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if repeats < 1:
            raise ValueError(f"repeats: must be >= 1, got {repeats}")
        self.num_samples = num_samples
        self.pairs = resolution_batch_pairs(resolutions, base_resolution, base_batch_size, mode, batch_divisor,
                                            multiple)
        if min(batch for _, batch in self.pairs) < 1:
            raise ValueError(f"base_batch_size {base_batch_size} gives an empty batch at some resolution: {self.pairs}")
        self.mode = mode
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.repeats = repeats
        self.drop_last = drop_last
        self.epoch = 0
        self._plan_cache: dict[int, list[tuple[int, int]]] = {}

    @property
    def samples_per_rank(self) -> int:
        """Indices each rank visits per epoch (the data set split evenly, padded by wrapping)."""
        return math.ceil(self.num_samples / self.world_size)

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(size for size, _ in self.pairs)

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch on every rank: reseeds the permutation and the resolution sequence."""
        self.epoch = epoch

    def _rng(self, epoch: int, stream: int) -> np.random.Generator:
        # a SeedSequence over (seed, epoch, stream) keeps (seed=0, epoch=1) and (seed=1, epoch=0) apart
        return np.random.default_rng([self.seed, epoch, stream])

    def batch_plan(self, epoch: int | None = None) -> list[tuple[int, int]]:
        """The (resolution, batch size) of every batch of `epoch` (default: the current one), identical on all
        ranks; the last batch may be shorter (see the module docstring)."""
        epoch = self.epoch if epoch is None else epoch
        if epoch not in self._plan_cache:
            if len(self._plan_cache) > 8:  # only the current epoch and a few schedule look-ups are ever needed
                self._plan_cache.clear()
            self._plan_cache[epoch] = self._draw_plan(epoch)
        return self._plan_cache[epoch]

    def _draw_plan(self, epoch: int) -> list[tuple[int, int]]:
        rng = self._rng(epoch, stream=1)
        remaining = self.samples_per_rank
        plan: list[tuple[int, int]] = []
        while remaining > 0:
            size, batch = self.pairs[int(rng.integers(len(self.pairs)))]
            if batch > remaining and self.drop_last:
                break
            plan.append((size, min(batch, remaining)))
            remaining -= batch
        return plan

    def rank_indices(self, epoch: int | None = None) -> np.ndarray:
        """This rank's share of the epoch's (repeated, padded) permutation, in visiting order."""
        epoch = self.epoch if epoch is None else epoch
        if self.num_samples == 0:
            return np.zeros(0, dtype=np.int64)
        order = self._rng(epoch, stream=0).permutation(self.num_samples)
        if self.repeats > 1:
            order = np.repeat(order, self.repeats)
        # np.resize truncates, or wraps around cyclically to pad up to an equal share per rank
        order = np.resize(order, self.samples_per_rank * self.world_size)
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        indices = self.rank_indices().tolist()
        start = 0
        for size, batch in self.batch_plan():
            yield [(index, size) for index in indices[start : start + batch]]
            start += batch

    def __len__(self) -> int:
        return len(self.batch_plan())

    def updates_per_epoch(self, epoch: int | None = None) -> int:
        """Batches (optimizer steps without accumulation) in `epoch`; varies a little between epochs when
        multi-scale, because the batch size depends on the drawn resolutions."""
        return len(self.batch_plan(epoch))

    def total_updates(self, epochs: int, start_epoch: int = 0, accum_steps: int = 1) -> int:
        """Exact number of optimiser updates over epochs [start_epoch, start_epoch + epochs), for sizing lr
        schedules: with gradient accumulation an epoch's last group may be short, and it still is an update."""
        return sum(math.ceil(len(self._draw_plan(epoch)) / accum_steps)
                   for epoch in range(start_epoch, start_epoch + epochs))


class ResolutionDataset(Dataset):
    """(PIL image, label) data set -> (tensor at the requested size, label); keys are ``(index, size)`` pairs."""

    def __init__(
        self,
        base: Dataset,
        transform_for_size: Callable[[int], Callable[[Any], Any]],
        default_size: int | None = None,
    ) -> None:
        self.base = base
        self.transform_for_size = transform_for_size
        self.default_size = default_size
        self._transforms: dict[int, Callable[[Any], Any]] = {}

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def transform(self, size: int) -> Callable[[Any], Any]:
        if size not in self._transforms:
            self._transforms[size] = self.transform_for_size(size)
        return self._transforms[size]

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[Any, int]:
        if isinstance(key, tuple):
            index, size = key
        elif self.default_size is not None:
            index, size = key, self.default_size
        else:
            raise TypeError("ResolutionDataset: index with (index, size) pairs or set default_size")
        image, label = self.base[index]
        return self.transform(size)(image), label
