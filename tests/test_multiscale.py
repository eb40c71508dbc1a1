"""The variable-batch multi-scale sampler: the paper's batch sizes, DDP splitting, epochs, repeats, DataLoader."""
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from zoo.data import PAPER_RESOLUTIONS, MultiScaleBatchSampler, ResolutionDataset, resolution_batch_pairs


def test_scaled_mode_reproduces_the_later_official_batches():
    pairs = resolution_batch_pairs(PAPER_RESOLUTIONS, base_resolution=256, base_batch_size=128, mode="scaled")
    assert pairs == [(160, 327), (192, 227), (256, 128), (288, 101), (320, 81)]


def test_v01_mode_reproduces_the_paper_release_batches():
    pairs = resolution_batch_pairs(PAPER_RESOLUTIONS, base_resolution=256, base_batch_size=128, mode="v0.1")
    assert pairs == [(160, 328), (192, 224), (256, 128), (288, 128), (320, 128)]


def test_scaled_mode_never_exceeds_the_base_pixels_per_batch():
    pairs = resolution_batch_pairs((48, 56, 64, 72, 80, 100), base_resolution=64, base_batch_size=37)
    for size, batch in pairs:
        assert batch * size * size <= 64 * 64 * 37
        assert (batch + 1) * size * size > 64 * 64 * 37  # and it is the largest such batch


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="mode"):
        resolution_batch_pairs((160,), mode="v2")
    with pytest.raises(ValueError, match="rank"):
        MultiScaleBatchSampler(10, rank=2, world_size=2)
    with pytest.raises(ValueError, match="repeats"):
        MultiScaleBatchSampler(10, repeats=0)


def _epoch(sampler: MultiScaleBatchSampler) -> list[list[tuple[int, int]]]:
    return list(sampler)


def test_one_epoch_visits_every_index_once_with_the_planned_batches():
    sampler = MultiScaleBatchSampler(1000, base_batch_size=16, seed=3)
    batches = _epoch(sampler)
    assert len(batches) == len(sampler) == sampler.updates_per_epoch()
    indices = [index for batch in batches for index, _ in batch]
    assert sorted(indices) == list(range(1000))
    allowed = dict(sampler.pairs)
    for batch, (size, planned) in zip(batches, sampler.batch_plan()):
        assert {s for _, s in batch} == {size}  # one resolution per batch
        assert len(batch) == planned
    assert all(len(batch) == allowed[batch[0][1]] for batch in batches[:-1])  # only the last may be short
    assert len({batch[0][1] for batch in batches}) > 1  # several resolutions were actually drawn


def test_ranks_share_the_resolution_sequence_and_split_the_data():
    n, world = 1001, 2  # odd: one slot of padding
    samplers = [MultiScaleBatchSampler(n, base_batch_size=8, rank=r, world_size=world, seed=7) for r in range(world)]
    epochs = [_epoch(s) for s in samplers]
    assert len(epochs[0]) == len(epochs[1]) == len(samplers[0]) == len(samplers[1])
    assert [[s for _, s in b] for b in epochs[0]] == [[s for _, s in b] for b in epochs[1]]  # same sizes, same batch
    shares = [[i for batch in epoch for i, _ in batch] for epoch in epochs]
    assert len(shares[0]) == len(shares[1]) == 501
    assert set(shares[0]) | set(shares[1]) == set(range(n))
    overlap = Counter(shares[0] + shares[1])
    assert sum(count - 1 for count in overlap.values()) == 1  # exactly the one padded index repeats


def test_epochs_and_seeds_change_the_sequence_and_replay_exactly():
    sampler = MultiScaleBatchSampler(500, base_batch_size=8, seed=0)
    first = _epoch(sampler)
    assert _epoch(sampler) == first  # same epoch replays identically
    sampler.set_epoch(1)
    second = _epoch(sampler)
    assert [b[0][1] for b in second] != [b[0][1] for b in first]
    assert [i for b in second for i, _ in b] != [i for b in first for i, _ in b]
    other_seed = MultiScaleBatchSampler(500, base_batch_size=8, seed=1)
    assert _epoch(other_seed) != first


def test_fixed_sampler_is_one_resolution_with_full_batches():
    sampler = MultiScaleBatchSampler(100, resolutions=(64,), base_resolution=64, base_batch_size=16)
    sizes = [len(b) for b in sampler]
    assert sizes == [16] * 6 + [4]
    assert {s for b in sampler for _, s in b} == {64}
    dropping = MultiScaleBatchSampler(100, resolutions=(64,), base_resolution=64, base_batch_size=16, drop_last=True)
    assert [len(b) for b in dropping] == [16] * 6 and len(dropping) == 6


def test_total_updates_counts_each_epochs_own_plan():
    sampler = MultiScaleBatchSampler(2000, base_batch_size=16, seed=5)
    per_epoch = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        per_epoch.append(len(_epoch(sampler)))
    assert sampler.total_updates(4) == sum(per_epoch)
    assert sampler.total_updates(2, start_epoch=2) == sum(per_epoch[2:])


def test_repeated_augmentation_spreads_copies_over_ranks_and_keeps_epoch_length():
    n, world, repeats = 300, 3, 3
    samplers = [
        MultiScaleBatchSampler(n, base_batch_size=8, rank=r, world_size=world, seed=2, repeats=repeats)
        for r in range(world)
    ]
    shares = [[i for batch in s for i, _ in batch] for s in samplers]
    assert [len(share) for share in shares] == [n // world] * world  # plain data set's epoch length
    for share in shares:
        assert len(set(share)) == len(share)  # a rank never sees the same image twice in an epoch
    counts = Counter(i for share in shares for i in share)
    assert set(counts.values()) == {repeats}  # every index drawn this epoch appears on all 3 ranks
    assert len(counts) == n // repeats


class _Squares(Dataset):
    """Tiny data set: item i is a 2×2 image filled with i."""

    def __len__(self) -> int:
        return 37

    def __getitem__(self, index: int):
        return torch.full((3, 2, 2), float(index)), index % 5


def _resize(size: int):
    return lambda image: torch.nn.functional.interpolate(image[None], size=(size, size))[0]


def test_dataloader_yields_tensors_of_the_drawn_size():
    sampler = MultiScaleBatchSampler(37, resolutions=(8, 12, 16), base_resolution=12, base_batch_size=4, seed=1)
    built: list[int] = []

    def factory(size: int):
        built.append(size)
        return _resize(size)

    loader = DataLoader(ResolutionDataset(_Squares(), factory), batch_sampler=sampler)
    seen = []
    for (images, labels), (size, batch) in zip(loader, sampler.batch_plan(), strict=True):
        assert images.shape == (batch, 3, size, size)
        assert labels.shape == (batch,)
        seen.extend(int(v) for v in images[:, 0, 0, 0])
    assert sorted(seen) == list(range(37))
    assert sorted(built) == sorted(set(built))  # one transform per size, reused across batches


def test_resolution_dataset_needs_a_size():
    data = ResolutionDataset(_Squares(), _resize, default_size=5)
    assert data[3][0].shape == (3, 5, 5)
    with pytest.raises(TypeError, match="pairs"):
        ResolutionDataset(_Squares(), _resize)[3]


def test_rank_indices_pad_by_wrapping_when_data_is_smaller_than_world():
    shares = [MultiScaleBatchSampler(3, base_batch_size=4, rank=r, world_size=4).rank_indices() for r in range(4)]
    assert all(len(s) == 1 for s in shares)
    assert set(np.concatenate(shares).tolist()) == {0, 1, 2}
