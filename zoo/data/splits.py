"""What every data source returns (`DataSplits`) and the root-folder check the sources share.

Apart from `zoo.data.datasets` so that the sources it dispatches to (`hf_source`, `dense.build`) can return splits
without importing the dispatcher back.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from zoo.data.options import DataError

__all__ = ["DataSplits", "require_root"]


@dataclass
class DataSplits:
    """Train and val data sets of (PIL RGB image, int label), plus what the harness logs about them."""

    train: Dataset
    val: Dataset
    num_classes: int
    class_names: tuple[str, ...]
    skipped: int = 0  # images dropped by skip_corrupt
    skipped_files: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what the source did not read and why, one line per split (also logged once)


def require_root(kind: str, root: Path | None) -> Path:
    """`root` when it is a folder, else a DataError naming the kind."""
    if root is None:
        raise DataError(f"data.root: kind {kind!r} needs a root folder")
    if not root.is_dir():
        raise DataError(f"data.root: folder {str(root)!r} does not exist (kind {kind!r})")
    return root
