"""The `imagefolder` data source: ``root/<train_dir>/<class>/**/<image>`` and the same under ``<val_dir>``.

The layout is checked before anything trains (`scan_imagefolder`, also called by `zoo.data.check` at plan time):
a missing split folder, a split without class folders, a class folder without an image, and train and val class
sets that differ are `DataError`s naming the folder and what was expected. Every format Pillow can decode is read
(its registered extensions, not torchvision's shorter list); every other file is counted by kind and said once per
split ("train: skipped 3 non-image files: .DS_Store ×2, .txt ×1"), never dropped without a word.
"""
from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageFile

from zoo.data.options import DataError, ImageFolderOptions

log = logging.getLogger("zoo.data")

# Files operating systems and tools leave beside images; named by their name rather than their extension.
JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini", ".directory"})
COMMON = ".jpg, .jpeg, .png, .webp, .bmp, .gif, .tif, .tiff"  # named in messages; every Pillow format is read


@functools.cache
def image_extensions() -> frozenset[str]:
    """Lower-case extensions of every format this Pillow can decode (stub plugins and formats without a decoder
    here, MPEG and EPS without Ghostscript, are left out: their files would fail at decode time)."""
    from PIL import EpsImagePlugin

    Image.init()
    undecodable = {"MPEG"} | (set() if EpsImagePlugin.has_ghostscript() else {"EPS"})
    readable = set()
    for extension, format_id in Image.registered_extensions().items():
        factory = Image.OPEN.get(format_id, (None,))[0]
        stub = isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile)
        if factory is not None and not stub and format_id not in undecodable:
            readable.add(extension.lower())
    return frozenset(readable)


def file_kind(name: str) -> str | None:
    """None for an image file this scan reads; otherwise the kind it is counted under (an extension or a name)."""
    lowered = name.lower()
    if lowered in JUNK_NAMES:
        return name
    if name.startswith("._"):
        return "._* (macOS metadata)"  # AppleDouble files carry an image's extension but hold no image
    suffix = os.path.splitext(lowered)[1]
    if suffix in image_extensions():
        return None
    return suffix or "(no extension)"


@dataclass
class SplitScan:
    """One split's class folders, image files (path, class index) and the files it did not read, by kind."""

    role: str  # "train" or "val", as the messages say it
    folder: Path
    classes: tuple[str, ...]
    samples: list[tuple[str, int]]
    skipped: Counter = field(default_factory=Counter)

    def note(self) -> str | None:
        """The one line that says what was not read, or None when every file was an image."""
        if not self.skipped:
            return None
        kinds = ", ".join(f"{kind} ×{count}" for kind, count in sorted(self.skipped.items(), key=lambda kv: (-kv[1],
                                                                                                        kv[0])))
        return f"{self.role}: skipped {sum(self.skipped.values())} non-image files under {str(self.folder)!r}: {kinds}"


def _walk_class(class_dir: Path, skipped: Counter) -> list[str]:
    """Image files under one class folder in torchvision's order (sorted walk, links followed)."""
    images = []
    for here, dirs, names in sorted(os.walk(class_dir, followlinks=True)):
        hidden = [d for d in dirs if d.startswith(".")]
        for name in hidden:  # .ipynb_checkpoints and the like: copies, not samples
            skipped["hidden folder"] += 1
            dirs.remove(name)
        for name in sorted(names):
            kind = file_kind(name)
            if kind is None:
                images.append(os.path.join(here, name))
            else:
                skipped[kind] += 1
    return images


def scan_split(folder: Path, role: str) -> SplitScan:
    """List one split; a DataError for a missing folder, no class folders or a class folder without images."""
    if not folder.is_dir():
        raise DataError(f"data.root: folder {str(folder)!r} does not exist (expected <class>/<image> inside)")
    skipped: Counter = Counter()
    classes = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_dir() and entry.name.startswith("."):
            skipped["hidden folder"] += 1
        elif entry.is_dir():
            classes.append(entry.name)
        else:
            skipped["file outside class folders"] += 1
    if not classes:
        raise DataError(f"data.root: no class folders in {str(folder)!r} (expected {role} images as "
                        f"{str(folder)}/<class>/<image>)")
    samples, empty = [], []
    for index, name in enumerate(classes):
        files = _walk_class(folder / name, skipped)
        empty += [] if files else [name]
        samples += [(path, index) for path in files]
    if len(empty) == len(classes):
        raise DataError(f"data.root: no images under {str(folder)!r}: none of its {len(classes)} class folders holds "
                        f"one (expected {role} images as <class>/<image>: {COMMON}, or any other format Pillow "
                        f"decodes; found {sum(skipped.values())} other files)")
    if empty:
        listed = ", ".join(repr(str(folder / name)) for name in empty[:5]) + (" ..." if len(empty) > 5 else "")
        raise DataError(f"data.root: {len(empty)} of {len(classes)} {role} class folder(s) hold no image: {listed} "
                        f"(expected at least one image file: {COMMON}, or any other format Pillow decodes; "
                        f"remove the folder or add its images)")
    return SplitScan(role, folder, tuple(classes), samples, skipped)


def scan_imagefolder(base: Path, opts: ImageFolderOptions) -> tuple[SplitScan, SplitScan]:
    """Both splits, their class sets checked against each other."""
    train = scan_split(base / opts.train_dir, "train")
    val = scan_split(base / opts.val_dir, "val")
    if train.classes != val.classes:
        only_train = sorted(set(train.classes) - set(val.classes))
        only_val = sorted(set(val.classes) - set(train.classes))
        raise DataError(
            f"data.root: class folders of {str(train.folder)!r} and {str(val.folder)!r} differ: "
            f"only in train: {only_train[:10] or 'none'}, only in val: {only_val[:10] or 'none'} "
            f"(expected the same class folders in both)"
        )
    return train, val


def unreadable(paths: Sequence[str], threads: int) -> list[str]:
    """Files PIL cannot open and verify (threads: the work is mostly file I/O)."""
    from concurrent.futures import ThreadPoolExecutor

    def broken(path: str) -> bool:
        try:
            with Image.open(path) as image:
                image.verify()
            return False
        except Exception:  # PIL raises many types for damaged files; any of them means "skip it"
            return True

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        flags = list(pool.map(broken, paths, chunksize=64))
    return [path for path, bad in zip(paths, flags) if bad]


def drop_unreadable(scan: SplitScan, bad: set[str]) -> SplitScan:
    """The split without the files skip_corrupt dropped; a class left without a readable image is a DataError."""
    kept = [sample for sample in scan.samples if sample[0] not in bad]
    left = {index for _, index in kept}
    lost = [name for index, name in enumerate(scan.classes) if index not in left]
    if lost:
        listed = ", ".join(repr(str(scan.folder / name)) for name in lost[:5])
        raise DataError(f"data.root: {scan.role} class folder(s) {listed} hold no readable image (every image "
                        f"there is unreadable and options.skip_corrupt skipped it; expected at least one)")
    return SplitScan(scan.role, scan.folder, scan.classes, kept, scan.skipped)


_SAID: set[str] = set()


def say_once(note: str) -> None:
    """Log a data note once per process: each run of a matrix builds its data again."""
    if note not in _SAID:
        _SAID.add(note)
        log.warning(note)
