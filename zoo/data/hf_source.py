"""The `hf` data source: a Hugging Face `datasets` data set on local disk (offline only)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from zoo.data.options import DataError, HFOptions, parse_options
from zoo.data.splits import DataSplits, require_root


class HFImages(Dataset):
    """Rows of a `datasets.Dataset` as (PIL RGB image, int label)."""

    def __init__(self, table: Any, image_column: str, label_column: str) -> None:
        self.table, self.image_column, self.label_column = table, image_column, label_column

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        row = self.table[int(index)]
        image = row[self.image_column]
        if not isinstance(image, Image.Image):  # an undecoded column, e.g. {"bytes": ..., "path": ...} or a path
            raise TypeError(
                f"hf: column {self.image_column!r} holds {type(image).__name__}, not images (cast it to datasets.Image)"
            )
        return image.convert("RGB"), int(row[self.label_column])


def build_hf(kind: str, root: Path | None, options: dict[str, Any]) -> DataSplits:
    opts: HFOptions = parse_options(kind, options)
    base = require_root(kind, root)
    # offline only: set before `datasets` is imported (it reads the flag at import time)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets

    saved = (base / "dataset_dict.json").is_file() or (base / "state.json").is_file()
    try:
        if saved:
            loaded = datasets.load_from_disk(str(base))
        else:
            loaded = datasets.load_dataset(str(base), data_dir=opts.data_dir, cache_dir=opts.cache_dir)
    except Exception as err:
        raise DataError(f"data.root: cannot load a Hugging Face data set from {str(base)!r}: {err}") from err
    if not isinstance(loaded, datasets.DatasetDict):
        raise DataError(f"data.root: {str(base)!r} holds a single split; save a DatasetDict with train and val splits")
    splits = {}
    for option, name in (("train_split", opts.train_split), ("val_split", opts.val_split)):
        if name not in loaded:
            raise DataError(f"data.options.{option}: no split {name!r} in {str(base)!r} (splits: {', '.join(loaded)})")
        splits[option] = loaded[name]
    train, val = splits["train_split"], splits["val_split"]
    for option, table in (("train_split", train), ("val_split", val)):
        if len(table) == 0:
            raise DataError(f"data.options.{option}: split {getattr(opts, option)!r} in {str(base)!r} has no rows "
                            f"(expected labelled images)")
        for key, column in (("image_column", opts.image_column), ("label_column", opts.label_column)):
            if column not in table.column_names:
                raise DataError(f"data.options.{key}: no column {column!r} in split {getattr(opts, option)!r} "
                                f"(columns: {', '.join(table.column_names)})")
    class_names = _class_names(datasets, train, val, opts.label_column)
    return DataSplits(
        train=HFImages(train, opts.image_column, opts.label_column),
        val=HFImages(val, opts.image_column, opts.label_column),
        num_classes=len(class_names),
        class_names=class_names,
    )


def _class_names(datasets: Any, train: Any, val: Any, column: str) -> tuple[str, ...]:
    """The classes (a ClassLabel's names, else 0..max of plain ints); every class must have training rows and
    every validation label must be a training class, as an image folder's class sets must agree."""
    feature = train.features[column]
    if isinstance(feature, datasets.ClassLabel):
        names = tuple(feature.names)
        val_feature = val.features[column]
        if isinstance(val_feature, datasets.ClassLabel) and tuple(val_feature.names) != names:
            raise DataError(f"data.options.label_column: the train and val splits name different classes "
                            f"({list(names)[:10]} vs {list(val_feature.names)[:10]}; expected the same ClassLabel)")
    else:  # plain ints: classes are 0..max
        names = tuple(str(i) for i in range(int(max(train[column])) + 1))
    seen = set(train.unique(column))
    missing = [name for index, name in enumerate(names) if index not in seen]
    if missing:
        raise DataError(f"data.options.label_column: {len(missing)} class(es) have no training rows: "
                        f"{missing[:10]} (expected at least one image per class)")
    strays = sorted(set(val.unique(column)) - set(range(len(names))))
    if strays:
        raise DataError(f"data.options.label_column: validation labels {strays[:10]} are not training classes "
                        f"(expected labels 0..{len(names) - 1})")
    return names
