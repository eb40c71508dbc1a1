"""Recipe-driven image transforms (PIL image -> normalised CHW float tensor), built once per resolution.

Public API
----------
``TransformSpec`` — frozen (hashable) dataclass of the recipe's per-image augmentation and the eval crop.
``train_transform(spec, size)`` — timm's ImageNet training pipeline (``transforms_imagenet_train``):
    RandomResizedCrop(size, scale, ratio, interpolation) -> horizontal flip -> [RandAugment / AutoAugment string]
    -> [colour jitter] -> tensor -> normalise -> [random erasing]. Cached per (spec, size), so the multi-scale sampler reuses one per resolution.
``eval_transform(spec, size)`` — resize the shorter side to ``round(size / crop_pct)``, centre-crop ``size``,
    tensor, normalise. Cached likewise.

Mixup/CutMix mix whole batches, so they live in the training loop (timm's ``Mixup``), not here.

Pillow >= 13 rejects ``ImageOps.posterize(img, 0)``, which timm's "increasing" posterize asks for at magnitude 10
(DeiT's ``rand-m9-mstd0.5`` draws that ~2% of the time): the stock pipeline crashes a data worker within an epoch.
The augment ops built here get a posterize that keeps Pillow < 13's meaning of 0 bits (a black image).

Colour jitter follows timm (and therefore DeiT, which trained through timm): it is *not* applied when an
auto-augment string is set (RandAugment already changes colour), unless ``force_color_jitter`` is true.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from PIL import Image, ImageOps
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.data.transforms_factory import transforms_imagenet_train
from timm.data.transforms import str_to_interp_mode
from torchvision import transforms as T

Interpolation = Literal["bilinear", "bicubic"]
ErasingMode = Literal["const", "rand", "pixel"]


@dataclass(frozen=True)
class TransformSpec:
    """Per-image augmentation of a recipe. Defaults are the MobileViT "basic" recipe (RRC 0.08-1 + flip)."""

    scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area fraction range
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # RandomResizedCrop aspect ratio range
    hflip: float = 0.5
    auto_augment: str | None = None  # timm string, e.g. "rand-m9-mstd0.5-inc1" (DeiT's RandAugment)
    color_jitter: float | None = None  # brightness = contrast = saturation strength
    force_color_jitter: bool = False  # apply colour jitter even with auto_augment (timm skips it by default)
    re_prob: float = 0.0  # random erasing probability (DeiT: 0.25)
    re_mode: ErasingMode = "pixel"
    re_count: int = 1
    interpolation: Interpolation = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_DEFAULT_MEAN
    std: tuple[float, float, float] = IMAGENET_DEFAULT_STD
    crop_pct: float = 0.875  # eval: resize to size / crop_pct, centre-crop size

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"TransformSpec.scale: need 0 < min <= max <= 1, got {self.scale}")
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"TransformSpec.crop_pct: need 0 < crop_pct <= 1, got {self.crop_pct}")
        for name in ("hflip", "re_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"TransformSpec.{name}: must be within [0, 1], got {getattr(self, name)}")
        if self.auto_augment is not None:
            try:  # let timm parse it now, so a typo fails at config time rather than in a data worker
                transforms_imagenet_train(img_size=32, auto_augment=self.auto_augment, color_jitter=None)
            except (AssertionError, KeyError, ValueError, IndexError) as err:
                raise ValueError(
                    f"TransformSpec.auto_augment: {self.auto_augment!r} is not a timm augment string "
                    f"(e.g. 'rand-m9-mstd0.5-inc1', 'augmix-m5-w4-d2', 'original', 'v0'): {err!r}"
                ) from None


def _posterize(img: Image.Image, bits_to_keep: int, **_: object) -> Image.Image:
    """Posterize valid for 0..8 bits: 0 bits keeps no bits, i.e. black, as Pillow < 13 computed it."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def _fix_posterize(transform: T.Compose) -> T.Compose:
    """Point every posterize op of the (Rand/Auto/AugMix) augment step at `_posterize` (see the module docstring)."""
    for step in transform.transforms:
        ops = list(getattr(step, "ops", ()))  # RandAugment, AugMixAugment
        ops += [op for sub_policy in getattr(step, "policy", ()) for op in sub_policy]  # AutoAugment
        for op in ops:
            if op.name.startswith("Posterize"):
                op.aug_fn = _posterize
    return transform


def _check_size(size: int) -> None:
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"transform size: need a positive int, got {size!r}")


@lru_cache(maxsize=64)
def train_transform(spec: TransformSpec, size: int) -> T.Compose:
    """Training transform at `size`×`size` (RandAugment's translate range scales with the size, hence per size)."""
    _check_size(size)
    # transforms_imagenet_train is what timm's create_transform calls; it also takes force_color_jitter
    transform = transforms_imagenet_train(
        img_size=size,
        scale=spec.scale,
        ratio=spec.ratio,
        hflip=spec.hflip,
        auto_augment=spec.auto_augment,
        # timm's default is 0.4; None must mean "no jitter" here, so pass it through explicitly
        color_jitter=spec.color_jitter,
        force_color_jitter=spec.force_color_jitter,
        interpolation=spec.interpolation,
        mean=spec.mean,
        std=spec.std,
        re_prob=spec.re_prob,
        re_mode=spec.re_mode,
        re_count=spec.re_count,
    )
    return _fix_posterize(transform)


@lru_cache(maxsize=64)
def eval_transform(spec: TransformSpec, size: int) -> T.Compose:
    """Resize shorter side to round(size / crop_pct), centre-crop `size`, tensor, normalise."""
    _check_size(size)
    # round, not timm's floor: the paper's 288 -> 256 is crop_pct 0.889, and floor(256 / 0.889) gives 287
    resize_to = round(size / spec.crop_pct)
    return T.Compose(
        [
            T.Resize(resize_to, interpolation=str_to_interp_mode(spec.interpolation)),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(mean=spec.mean, std=spec.std),
        ]
    )
