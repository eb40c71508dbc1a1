"""The `hf` data source: a Hugging Face `datasets` data set on local disk (offline only)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from zoo.data.datasets import DataError, DataSplits, _parse_options, _require_root


@dataclass(frozen=True)
class HFOptions:
    image_column: str = "image"
    label_column: str = "label"
    train_split: str = "train"
    val_split: str = "validation"
    data_dir: str | None = None
    cache_dir: str | None = None


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
    opts: HFOptions = _parse_options(HFOptions, kind, options)
    base = _require_root(kind, root)
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
    train = splits["train_split"]
    for option, column in (("image_column", opts.image_column), ("label_column", opts.label_column)):
        if column not in train.column_names:
            raise DataError(
                f"data.options.{option}: no column {column!r} (columns: {', '.join(train.column_names)})"
            )
    label_feature = train.features[opts.label_column]
    if isinstance(label_feature, datasets.ClassLabel):
        class_names = tuple(label_feature.names)
    else:  # plain ints: classes are 0..max
        top = max(max(train[opts.label_column]), max(splits["val_split"][opts.label_column]))
        class_names = tuple(str(i) for i in range(int(top) + 1))
    return DataSplits(
        train=HFImages(train, opts.image_column, opts.label_column),
        val=HFImages(splits["val_split"], opts.image_column, opts.label_column),
        num_classes=len(class_names),
        class_names=class_names,
    )
