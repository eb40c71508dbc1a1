"""Recipe transforms: output sizes per resolution, what the basic/advanced specs contain, eval resize/crop."""
import pytest
import torch
from PIL import Image
from timm.data.auto_augment import RandAugment
from timm.data.random_erasing import RandomErasing
from torchvision import transforms as T

from zoo.data import TransformSpec, eval_transform, train_transform

BASIC = TransformSpec()
ADVANCED = TransformSpec(
    auto_augment="rand-m9-mstd0.5-inc1", color_jitter=0.3, re_prob=0.25, re_mode="pixel", interpolation="bicubic"
)


def _image(width: int = 50, height: int = 40) -> Image.Image:
    gradient = torch.linspace(0, 255, width).repeat(height, 1)
    return Image.fromarray(torch.stack([gradient, gradient.flip(1), gradient / 2], -1).to(torch.uint8).numpy())


@pytest.mark.parametrize("size", [32, 48, 96])
@pytest.mark.parametrize("spec", [BASIC, ADVANCED], ids=["basic", "advanced"])
def test_train_output_has_the_requested_size(spec, size):
    out = train_transform(spec, size)(_image())
    assert out.shape == (3, size, size) and out.dtype == torch.float32


@pytest.mark.parametrize("size", [32, 64, 256])
def test_eval_output_has_the_requested_size(size):
    out = eval_transform(BASIC, size)(_image(300, 200))
    assert out.shape == (3, size, size)


def _kinds(transform: T.Compose) -> set[type]:
    return {type(step) for step in transform.transforms}


def test_advanced_spec_includes_randaugment_and_random_erasing():
    kinds = _kinds(train_transform(ADVANCED, 64))
    assert RandAugment in kinds and RandomErasing in kinds
    erasing = next(step for step in train_transform(ADVANCED, 64).transforms if isinstance(step, RandomErasing))
    assert erasing.probability == 0.25 and erasing.mode == "pixel"
    assert T.ColorJitter not in kinds  # timm (and so DeiT) drops jitter when RandAugment is on


def test_basic_spec_is_crop_and_flip_only():
    kinds = _kinds(train_transform(BASIC, 64))
    assert RandAugment not in kinds and RandomErasing not in kinds and T.ColorJitter not in kinds
    assert T.RandomHorizontalFlip in kinds


def test_color_jitter_without_autoaugment_or_when_forced():
    assert T.ColorJitter in _kinds(train_transform(TransformSpec(color_jitter=0.4), 32))
    forced = TransformSpec(auto_augment="rand-m9-mstd0.5-inc1", color_jitter=0.4, force_color_jitter=True)
    assert T.ColorJitter in _kinds(train_transform(forced, 32))


def test_random_erasing_really_erases():
    torch.manual_seed(0)
    always = TransformSpec(re_prob=1.0, re_mode="const", scale=(1.0, 1.0), hflip=0.0)
    never = TransformSpec(scale=(1.0, 1.0), hflip=0.0)
    erased = train_transform(always, 32)(_image())
    plain = train_transform(never, 32)(_image())
    # An erased patch is exactly zero on every channel, and covers 2 %..1/3 of the image (timm's default areas).
    assert 0.02 * 32 * 32 <= int((erased == 0).all(dim=0).sum()) <= 32 * 32 / 3
    assert (plain == 0).all(dim=0).sum() == 0


def test_eval_resizes_by_crop_pct_then_centre_crops():
    paper = TransformSpec(crop_pct=0.889)  # MobileViT: resize 288, crop 256
    steps = eval_transform(paper, 256).transforms
    resize = next(step for step in steps if isinstance(step, T.Resize))
    crop = next(step for step in steps if isinstance(step, T.CenterCrop))
    assert resize.size == 288 and tuple(crop.size) == (256, 256)
    # crop_pct 1.0 keeps the whole (square) image: output equals a plain resize + normalise
    whole = eval_transform(TransformSpec(crop_pct=1.0), 16)(_image(40, 40))
    expected = T.Normalize(BASIC.mean, BASIC.std)(T.ToTensor()(_image(40, 40).resize((16, 16), Image.BILINEAR)))
    assert torch.allclose(whole, expected, atol=0.05)


def test_transforms_are_cached_per_spec_and_size():
    assert train_transform(ADVANCED, 64) is train_transform(ADVANCED, 64)
    assert train_transform(ADVANCED, 64) is not train_transform(ADVANCED, 96)
    assert eval_transform(BASIC, 64) is eval_transform(TransformSpec(), 64)  # equal specs share


def test_invalid_specs_are_rejected():
    with pytest.raises(ValueError, match="scale"):
        TransformSpec(scale=(0.5, 0.1))
    with pytest.raises(ValueError, match="auto_augment"):
        TransformSpec(auto_augment="randaug9")
    with pytest.raises(ValueError, match="size"):
        train_transform(BASIC, 0)


def test_posterize_at_full_magnitude_gives_black_instead_of_crashing():
    # Pillow >= 13 rejects 0 bits; timm's increasing posterize asks for 0 bits at magnitude 10 (m9 ± 0.5 reaches it)
    spec = TransformSpec(auto_augment="rand-m10-mstd0-inc1")
    augment = next(step for step in train_transform(spec, 32).transforms if isinstance(step, RandAugment))
    posterize = next(op for op in augment.ops if op.name == "PosterizeIncreasing")
    posterize.prob = 1.0
    try:
        out = posterize(_image())
    finally:
        posterize.prob = 0.5  # the transform is cached: leave it as built
    assert out.size == _image().size and out.getextrema() == ((0, 0), (0, 0), (0, 0))
