"""The matrix's data checked before the first run: `zoo.run` calls `check_matrix_data` at plan time.

A problem found here is a `DataError` naming the matrix file (exit 2, before anything is written) instead of a
failed run per cell: the layout (see `zoo.data.imagefolder`), unreadable images under ``verify``, and a training
set too small to fill one batch of the budget (which every run would otherwise fail on). What the data source did
not read is logged once per split and returned.
"""
from __future__ import annotations

import math
from pathlib import Path

from zoo.config.schema import BudgetConfig, MatrixConfig
from zoo.data.datasets import build_datasets
from zoo.data.imagefolder import say_once, scan_imagefolder
from zoo.data.multiscale import TRAIN_BATCH_MULTIPLE, resolution_batch_pairs
from zoo.data.options import DataError, parse_options
from zoo.data.splits import require_root


def check_matrix_data(matrix: MatrixConfig, source: str, *, world_size: int = 1, build: bool = True) -> list[str]:
    """Check the matrix's data set; returns the notes about files not read. `build=False` (a dry run) lists an
    image folder without opening its images and leaves cifar/hf to the real run (they need their files read)."""
    data = matrix.data
    try:
        if build:
            splits = build_datasets(data.kind, root=data.root, options=dict(data.options))
            train_images, notes = len(splits.train), list(splits.notes)
        else:
            train_images, notes = _layout_only(matrix)
    except DataError as err:
        raise DataError(f"{source}: {err}") from None
    if train_images is not None:
        check_batch_fits(matrix, source, train_images, world_size)
    return notes


def _layout_only(matrix: MatrixConfig) -> tuple[int | None, list[str]]:
    data = matrix.data
    if data.kind == "digits":  # bundled and small: building it is the cheapest way to count it
        return len(build_datasets("digits", options=dict(data.options)).train), []
    if data.kind != "imagefolder":
        return None, []
    root = require_root(data.kind, None if data.root is None else Path(data.root).expanduser())
    train, val = scan_imagefolder(root, parse_options("imagefolder", dict(data.options)))
    notes = [note for note in (train.note(), val.note()) if note]
    for note in notes:
        say_once(note)
    return len(train.samples), notes


def check_batch_fits(matrix: MatrixConfig, source: str, train_images: int, world_size: int) -> None:
    """Each process must get one full batch at every resolution its sampler draws (the runs drop a short last
    batch, so a smaller training set would train on nothing)."""
    data, budget, resolution = matrix.data, matrix.budget, matrix.resolution
    used = min(train_images, data.max_train_samples or train_images)
    per_process = math.ceil(used / max(1, world_size))
    sizes = {resolution.base_resolution}
    if "multiscale" in matrix.samplers:
        sizes |= set(resolution.resolutions)
    pairs = resolution_batch_pairs(sorted(sizes), resolution.base_resolution, budget.batch_size, resolution.mode,
                                   multiple=TRAIN_BATCH_MULTIPLE)
    size, largest = max(pairs, key=lambda pair: pair[1])
    if per_process >= largest:
        return
    default = " (the default)" if budget.batch_size == BudgetConfig.batch_size else ""
    capped = f" (data.max_train_samples: {data.max_train_samples})" if used < train_images else ""
    spread = f", {per_process} per process over {world_size}" if world_size > 1 else ""
    raise DataError(
        f"{source}: budget.batch_size: must fit the training data, got {budget.batch_size}{default}: "
        f"{used} training images{capped}{spread} cannot fill one batch of {largest} at {size} px; "
        f"set budget.batch_size lower or use more training images")
