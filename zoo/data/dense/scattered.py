"""Scattered digits: the offline detection + segmentation task built from scikit-learn's bundled 8×8 digits.

How an image is made (everything drawn from ``numpy.random.default_rng((seed, split, index))``, so image ``i`` is
the same whatever order or process reads it, and two seeds give different images):

1. the canvas, ``canvas × canvas`` px (default 64), 3 channels: a background grey level per channel, uniform in
   [0, 0.3), plus per-pixel uniform noise in [-0.05, 0.05);
2. a digit count K uniform in ``digits_per_image`` (default 1..4, both ends included);
3. per digit: a digit image drawn from the split's pool, an integer scale uniform in ``scale`` (default 2..3, so
   16 or 24 px squares), upsampled bilinearly; its intensity (0..16 -> 0..1) is its alpha; its colour is uniform in
   [0.6, 1.0) per channel, blended over the background as ``bg·(1-alpha) + colour·alpha``;
4. placement without overlap: a digit's whole square may not touch any pixel of an earlier digit's square; its
   top-left corner is drawn uniformly among all the free ones, and a digit with no free corner left is left out
   (the first always fits, so every image holds 1..K digits; the default settings leave out about 1 % of the
   digits drawn; 2..4 on the 64 px canvas would leave out 13 %, on a 96 px one none).

Targets (torchvision's detection format, tv_tensors so v2 transforms move them with the image):

* ``labels`` int64 [K]: digit + 1, so 1..10; 0 is the background (detection heads reserve class 0 for it);
* ``masks`` uint8 [K, H, W]: each digit's stroke pixels, alpha >= ``threshold`` (default 0.5);
* ``boxes`` float32 [K, 4] xyxy in pixels, tight around the stroke pixels: x1 = first stroke column,
  x2 = last stroke column + 1 (COCO's x + w), the same for rows;
* ``semantic`` int64 [H, W]: 0 background, digit + 1 on its stroke pixels. No pixel is `IGNORE_INDEX`: the soft
  edge below the threshold counts as background;
* ``image_id`` int: the index.

`NUM_CLASSES` = 11 (background + 10 digits) for both tasks. The image is float32 in [0, 1].

Splits: the digit images are split as ``data.kind: digits`` splits them (stratified, ``val_fraction`` 0.2,
``split_seed`` 0: 1437 train / 360 val digits), so no digit image appears in both splits. ``size`` images per split
(default 1024 train, 256 val): small enough for a detector or a segmenter to train in minutes on a CPU here.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import tv_tensors

from zoo.data.dense.common import DenseDataError, Sample, Transforms

NUM_CLASSES = 11  # background + the 10 digits
DEFAULT_SIZES = {"train": 1024, "val": 256}
_SPLIT_CODE = {"train": 0, "val": 1}


@dataclass(frozen=True)
class ScatterSpec:
    """How the images of one split are drawn (see the module docstring)."""

    canvas: int = 64
    digits_per_image: tuple[int, int] = (1, 4)
    scale: tuple[int, int] = (2, 3)
    threshold: float = 0.5

    def check(self) -> None:
        """A DenseDataError naming the field (as `ScatteredDigits: key: ...`) for a spec that cannot be drawn."""
        low, high = self.digits_per_image
        if not 1 <= low <= high:
            raise DenseDataError(f"ScatteredDigits: digits_per_image: must be 1 <= low <= high, got {low, high}")
        small, large = self.scale
        if not 1 <= small <= large:
            raise DenseDataError(f"ScatteredDigits: scale: must be 1 <= low <= high, got {small, large}")
        if self.canvas < 8 * large:
            raise DenseDataError(f"ScatteredDigits: canvas: must be >= 8 × the largest scale ({8 * large} px), "
                                 f"got {self.canvas}")
        if not 0 < self.threshold < 1:
            raise DenseDataError(f"ScatteredDigits: threshold: must be within (0, 1), got {self.threshold}")


@functools.cache
def _digit_pool(split: str, val_fraction: float = 0.2, split_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The split's 8×8 digit images as alpha in [0, 1] (float32) and their digits (the classification split)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    labels = digits.target.astype(np.int64)
    train_idx, val_idx = train_test_split(np.arange(len(labels)), test_size=val_fraction, stratify=labels,
                                          random_state=split_seed)
    chosen = np.sort(train_idx if split == "train" else val_idx)
    return (digits.images[chosen] / 16.0).astype(np.float32), labels[chosen]


class ScatteredDigits(Dataset):
    """Digits scattered on a canvas, with their boxes, labels and masks (see the module docstring)."""

    def __init__(self, split: str = "train", *, canvas: int = 64, digits_per_image: tuple[int, int] = (1, 4),
                 scale: tuple[int, int] = (2, 3), threshold: float = 0.5, seed: int = 0,
                 size: int | None = None, transforms: Transforms | None = None) -> None:
        if split not in _SPLIT_CODE:
            raise DenseDataError(f"ScatteredDigits: split: unknown split {split!r} (allowed: train, val)")
        self.spec = ScatterSpec(canvas, tuple(digits_per_image), tuple(scale), threshold)
        self.spec.check()
        self.split, self.seed = split, seed
        self.size = DEFAULT_SIZES[split] if size is None else size
        if self.size < 1:
            raise DenseDataError(f"ScatteredDigits: size: must be >= 1, got {self.size}")
        self.num_classes = NUM_CLASSES
        self.class_names = ("background", *(str(d) for d in range(10)))
        self.transforms = transforms  # e.g. v2.Resize to a model's input: boxes and masks follow the image

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.size:
            raise IndexError(f"ScatteredDigits: index {index} out of range for {self.size} images")
        rng = np.random.default_rng((self.seed, _SPLIT_CODE[self.split], index))
        sample = _draw(self.spec, rng, *_digit_pool(self.split), image_id=index)
        return sample if self.transforms is None else self.transforms(*sample)


def _draw(spec: ScatterSpec, rng: np.random.Generator, pool: np.ndarray, digits: np.ndarray, *,
          image_id: int) -> Sample:
    side = spec.canvas
    image = rng.uniform(0.0, 0.3, (3, 1, 1)) + rng.uniform(-0.05, 0.05, (3, side, side))
    occupied = np.zeros((side, side), dtype=bool)
    masks, labels = [], []
    for _ in range(int(rng.integers(spec.digits_per_image[0], spec.digits_per_image[1] + 1))):
        which = int(rng.integers(len(pool)))
        square = 8 * int(rng.integers(spec.scale[0], spec.scale[1] + 1))
        colour = rng.uniform(0.6, 1.0, (3, 1, 1))
        spot = _free_spot(occupied, square, rng)
        if spot is None:
            continue
        y, x = spot
        alpha = _upsample(pool[which], square)
        window = (slice(y, y + square), slice(x, x + square))
        image[:, window[0], window[1]] = image[:, window[0], window[1]] * (1 - alpha) + colour * alpha
        occupied[window] = True
        mask = np.zeros((side, side), dtype=bool)
        mask[window] = alpha >= spec.threshold
        if mask.any():
            masks.append(mask)
            labels.append(int(digits[which]) + 1)
    return _sample(np.clip(image, 0.0, 1.0), masks, labels, image_id)


def _free_spot(occupied: np.ndarray, square: int, rng: np.random.Generator) -> tuple[int, int] | None:
    """A top-left corner drawn uniformly among those whose square touches no occupied pixel; None if none is free.
    (Every free corner is found, from the occupied pixels' summed-area table, rather than by retrying random ones.)"""
    table = np.pad(occupied.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    inside = table[square:, square:] - table[:-square, square:] - table[square:, :-square] + table[:-square, :-square]
    free = np.argwhere(inside == 0)
    if len(free) == 0:
        return None
    y, x = free[int(rng.integers(len(free)))]
    return int(y), int(x)


def _upsample(digit: np.ndarray, square: int) -> np.ndarray:
    tensor = torch.from_numpy(digit)[None, None]
    return F.interpolate(tensor, size=(square, square), mode="bilinear", align_corners=False)[0, 0].numpy()


def _sample(image: np.ndarray, masks: list[np.ndarray], labels: list[int], image_id: int) -> Sample:
    side = image.shape[-1]
    stacked = np.stack(masks) if masks else np.zeros((0, side, side), dtype=bool)
    semantic = np.zeros((side, side), dtype=np.int64)
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for k, (mask, label) in enumerate(zip(masks, labels)):
        semantic[mask] = label
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        boxes[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    target = {
        "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(boxes), format="XYXY", canvas_size=(side, side)),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": tv_tensors.Mask(torch.from_numpy(stacked.astype(np.uint8))),
        "semantic": tv_tensors.Mask(torch.from_numpy(semantic)),
        "image_id": image_id,
    }
    return tv_tensors.Image(torch.from_numpy(image.astype(np.float32))), target
