"""Data sources: train/val splits of (PIL RGB image, int label); transforms are applied later, per resolution.

Public API
----------
``build_datasets(kind, *, root=None, options=None) -> DataSplits``
``DataSplits(train, val, num_classes, class_names, skipped=0, skipped_files=())``
``DATASET_KINDS`` — the kinds below. ``DataError`` (a ``ConfigError``: the CLI reports it and exits 2) for a
bad kind, option or path; ``CorruptImageError`` (an ``OSError`` naming the file) for an image that cannot be read.

Kinds and their ``options`` (unknown options are errors that list the allowed ones):

* ``digits`` — scikit-learn's bundled 8×8 handwritten digits (offline, 1797 images, 10 classes), scaled 0..16 ->
  0..255, upsampled once (bilinear) to ``source_size`` px (default 32) so random-resized-crop has pixels to work
  with, as 3-channel images; a fixed stratified split: ``val_fraction`` (0.2), ``split_seed`` (0). ``root`` unused.
* ``imagefolder`` — ``root/<train_dir>/<class>/**`` and ``root/<val_dir>/<class>/**`` (defaults "train", "val");
  the class lists must agree and every class folder must hold an image (see `zoo.data.imagefolder`: every format
  Pillow decodes is read, other files are counted by kind and logged once per split, ``DataSplits.notes``).
  Images are decoded lazily; an unreadable one raises ``CorruptImageError`` naming it.
  ``skip_corrupt=True`` checks every file up front (PIL open + verify, on threads), drops the bad ones and reports
  them in ``DataSplits.skipped`` / ``skipped_files`` (a class left without a readable image is a ``DataError``);
  ``verify=True`` checks up front and raises listing them.
  (verify catches broken headers and most damage; a JPEG truncated mid-stream can still fail at decode time.)
* ``cifar10`` / ``cifar100`` — the python-pickle release in ``root/cifar-10-batches-py`` (or
  ``root/cifar-100-python``); ``download=True`` fetches it through torchvision first (needs network). ``root``
  defaults to ``data/``.
* ``hf`` — a Hugging Face ``datasets`` data set on local disk (offline only): a ``save_to_disk`` folder, or a folder
  ``load_dataset`` understands (imagefolder, parquet, ...). Options ``image_column`` ("image"), ``label_column``
  ("label"), ``train_split`` ("train"), ``val_split`` ("validation"), ``data_dir``, ``cache_dir``.
* ``scattered-digits`` / ``coco`` / ``voc`` — the detection and segmentation kinds (``task`` in runs.yaml); their
  samples are ``(image, target dict)``, their options typed in `zoo.data.dense.build`.

The options of every kind are typed in `zoo.data.options`; runs.yaml's are checked there when the matrix loads.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from zoo.config.tasks import DATA_KINDS, DENSE_KINDS
from zoo.data.dense.build import build_dense, parse_dense_options
from zoo.data.hf_source import build_hf
from zoo.data.imagefolder import drop_unreadable, say_once, scan_imagefolder, unreadable
from zoo.data.options import CifarOptions, DataError, DigitsOptions, ImageFolderOptions, parse_options
from zoo.data.splits import DataSplits, require_root

DATASET_KINDS: tuple[str, ...] = DATA_KINDS  # the one list lives in zoo.config.tasks
__all__ = ["DATASET_KINDS", "ArrayImages", "CorruptImageError", "DataError", "DataSplits", "ImageFiles",
           "build_datasets", "load_rgb", "parse_kind_options"]


class CorruptImageError(OSError):
    """An image file PIL cannot read; the message names the file."""


def build_datasets(
    kind: str, *, root: str | os.PathLike[str] | None = None, options: dict[str, Any] | None = None
) -> DataSplits:
    """Build the train/val splits of data set `kind` (see the module docstring for kinds and options)."""
    if kind not in DATASET_KINDS:
        raise DataError(f"data.kind: unknown kind {kind!r} (allowed: {', '.join(DATASET_KINDS)})")
    # Detection/segmentation samples are (image, target dict); `hf` imports `datasets` only when built.
    builder = build_dense if kind in DENSE_KINDS else _BUILDERS[kind]
    return builder(kind, None if root is None else Path(root).expanduser(), dict(options or {}))


def parse_kind_options(kind: str, options: Any, source: str, at: str) -> Any:
    """The data kind's own `options`, typed and checked with the config file's name (dense kinds beside their
    sources in zoo.data.dense, the others in zoo.data.options)."""
    if kind in DENSE_KINDS:
        return parse_dense_options(kind, options, source, at)
    return parse_options(kind, options, source, at)


def load_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file as RGB, or raise CorruptImageError naming it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise CorruptImageError(f"cannot read image {str(path)!r}: {err}") from err


class ArrayImages(Dataset):
    """In-memory uint8 images (N, H, W) or (N, H, W, 3) with int labels; PIL images are made on access."""

    def __init__(self, images: np.ndarray, labels: Sequence[int]) -> None:
        if len(images) != len(labels):
            raise ValueError(f"ArrayImages: {len(images)} images but {len(labels)} labels")
        self.images = np.ascontiguousarray(images, dtype=np.uint8)
        self.labels = [int(label) for label in labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        image = Image.fromarray(self.images[index])
        return image.convert("RGB"), self.labels[index]


class ImageFiles(Dataset):
    """Image files on disk with int labels, decoded on access."""

    def __init__(self, samples: Sequence[tuple[str, int]]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        path, label = self.samples[index]
        return load_rgb(path), label


# --- digits -------------------------------------------------------------------------------------------------


def _build_digits(kind: str, root: Path | None, options: dict[str, Any]) -> DataSplits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    opts: DigitsOptions = parse_options(kind, options)  # runs.yaml's were checked at load, with its name
    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 intensities -> 0..255
    size = opts.source_size
    upsampled = np.stack([np.asarray(Image.fromarray(p).resize((size, size), Image.BILINEAR)) for p in pixels])
    rgb = np.repeat(upsampled[..., None], 3, axis=-1)
    labels = digits.target.astype(int)
    train_idx, val_idx = train_test_split(
        np.arange(len(labels)), test_size=opts.val_fraction, stratify=labels, random_state=opts.split_seed
    )
    train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
    return DataSplits(
        train=ArrayImages(rgb[train_idx], labels[train_idx]),
        val=ArrayImages(rgb[val_idx], labels[val_idx]),
        num_classes=10,
        class_names=tuple(str(d) for d in range(10)),
    )


# --- imagefolder --------------------------------------------------------------------------------------------


def _build_imagefolder(kind: str, root: Path | None, options: dict[str, Any]) -> DataSplits:
    opts: ImageFolderOptions = parse_options(kind, options)
    train, val = scan_imagefolder(require_root(kind, root), opts)
    bad: list[str] = []
    if opts.skip_corrupt or opts.verify:
        bad = unreadable([path for path, _ in train.samples + val.samples], opts.verify_threads)
        if bad and not opts.skip_corrupt:
            listed = ", ".join(repr(path) for path in bad[:10])
            raise DataError(
                f"data.root: {len(bad)} unreadable image(s): {listed} (options.skip_corrupt=true skips them)"
            )
        train, val = drop_unreadable(train, set(bad)), drop_unreadable(val, set(bad))
    notes = tuple(note for note in (train.note(), val.note()) if note)
    for note in notes:
        say_once(note)
    return DataSplits(
        train=ImageFiles(train.samples),
        val=ImageFiles(val.samples),
        num_classes=len(train.classes),
        class_names=train.classes,
        skipped=len(bad),
        skipped_files=tuple(bad),
        notes=notes,
    )


# --- cifar --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CifarLayout:
    folder: str
    train_files: tuple[str, ...]
    val_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    url: str


_CIFAR = {
    "cifar10": _CifarLayout(
        "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta",
        "labels", "label_names", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    ),
    "cifar100": _CifarLayout(
        "cifar-100-python", ("train",), ("test",), "meta",
        "fine_labels", "fine_label_names", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    ),
}


def _read_pickle(path: Path) -> dict[str, Any]:
    import pickle

    with open(path, "rb") as handle:
        return pickle.load(handle, encoding="latin1")


def _read_cifar_batches(folder: Path, files: Sequence[str], label_key: str) -> ArrayImages:
    images, labels = [], []
    for name in files:
        batch = _read_pickle(folder / name)
        # rows are 3072 bytes: the 32x32 red plane, then green, then blue
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.extend(batch[label_key])
    return ArrayImages(np.concatenate(images), labels)


def _build_cifar(kind: str, root: Path | None, options: dict[str, Any]) -> DataSplits:
    opts: CifarOptions = parse_options(kind, options)
    layout = _CIFAR[kind]
    base = root if root is not None else Path("data")
    folder = base / layout.folder
    needed = [*layout.train_files, *layout.val_files, layout.meta_file]
    download_error = ""
    if opts.download and not all((folder / name).is_file() for name in needed):
        from torchvision.datasets import CIFAR10, CIFAR100

        try:
            (CIFAR10 if kind == "cifar10" else CIFAR100)(str(base), train=True, download=True)
        except Exception as err:  # offline: DNS/connection errors; fall through to the clear message below
            download_error = f" (download failed: {type(err).__name__}: {err})"
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"data.root: {kind} files missing in {str(folder)!r}: {', '.join(missing)}{download_error}. "
            f"Download {layout.url} on a machine with network, extract it into {str(base)!r} so that "
            f"{str(folder)!r} holds the batches, or set data.options.download=true when online."
        )
    meta = _read_pickle(folder / layout.meta_file)
    class_names = tuple(meta[layout.names_key])
    return DataSplits(
        train=_read_cifar_batches(folder, layout.train_files, layout.label_key),
        val=_read_cifar_batches(folder, layout.val_files, layout.label_key),
        num_classes=len(class_names),
        class_names=class_names,
    )


# Per-kind builders of the classification kinds (the dense kinds go to `zoo.data.dense.build`); their keys are checked
# against `zoo.config.tasks.KINDS_BY_TASK` by tests/test_data_sources.py.
_BUILDERS = {
    "digits": _build_digits,
    "imagefolder": _build_imagefolder,
    "cifar10": _build_cifar,
    "cifar100": _build_cifar,
    "hf": build_hf,
}
