"""Every registered model as a dense backbone: multi-scale features, SSDLite detection, DeepLabv3 segmentation.

Kept fast: one backbone per model for all its feature contracts (one test item each), 64/128 px inputs, 3-4
classes, batch 2 (SSD and the ASPP image pooling need more than one image to train BatchNorm on 1 x 1 maps). The
generic heads are trained over four backbones; the detector at 128 px (its six maps are then 8, 4, 2, 1, 1, 1
rows).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import zoo.models as zm
from test_all_models import per_model
from zoo.models import registry
from zoo.models.dense import (
    ASPP_RATES,
    MissingFeatureError,
    build_detector,
    build_segmenter,
    feature_backbone,
)
from zoo.models.features import FeatureLevel, StagedFeatures

MODELS = zm.list_models()
EXACT_SIZES = (64, 128)  # multiples of 64: every stride divides them, so a map has H/s rows (PiT's stride 8 aside)
ODD_SIZES = (96, 200, 320)  # 96/32 and 200/16 are odd: families that crop or round show it here
DETECTION_SIZE = 128
NUM_CLASSES = 3  # with the background
HEAD_CLASSES = 777  # a width no layer but a classifier head has
# The generic heads are trained over four backbones of four kinds (the paper's MobileViT, a CNN, a ViT with token
# levels, PiT's unpadded strides); every other backbone's part is its features and gradients, checked per model.
HEAD_BACKBONES = ("mobilevit_xxs", "mobilenetv2_100", "deit_tiny", "pit_ti")


def _backbone(name: str):
    torch.manual_seed(0)
    return feature_backbone(name).eval()


def _rows(model: nn.Module, size: int) -> tuple[list[int], list[int], list[int]]:
    with torch.no_grad():
        maps = model(torch.randn(1, 3, size, size))
    return [m.shape[-2] for m in maps], [m.shape[-1] for m in maps], [m.shape[1] for m in maps]


def _strides_and_channels_at_exact_sizes(backbone) -> None:
    assert backbone.strides == sorted(set(backbone.strides)) and {16, 32} <= set(backbone.strides)
    for size in EXACT_SIZES:
        rows, cols, channels = _rows(backbone, size)
        assert channels == backbone.channels
        assert rows == cols  # square in, square out
        for stride, n in zip(backbone.strides, rows):
            # Exact at the strides the heads read; one row short at most below them (PiT's unpadded patch conv).
            expected = size // stride
            assert n == expected if stride >= 16 else expected - 1 <= n <= expected, (size, stride, n)


def _within_a_row_of_the_stride_at_odd_sizes(backbone) -> None:
    for size in ODD_SIZES:
        rows, cols, channels = _rows(backbone, size)
        assert channels == backbone.channels and rows == cols
        for stride, n in zip(backbone.strides, rows):
            # ceil(H/s) for padded convs; a row fewer where a pool floors (CoAtNet), a row more where a family
            # rounds a map up to its patch size (MobileViTv2), one fewer for PiT's unpadded patch conv.
            assert math.floor(size / stride) - 1 <= n <= math.ceil(size / stride) + 1, (size, stride, n)


def _features_are_the_classifiers_parameters(name: str, backbone) -> None:
    """A trained classifier's checkpoint loads into the backbone: every backbone tensor is one of the classifier's,
    same name and shape, the classifier's head is gone, and the load is strict over the backbone's keys."""
    classifier = zm.create(name, num_classes=HEAD_CLASSES).state_dict()
    own = backbone.classifier.state_dict()
    missing = [k for k in own if k not in classifier or classifier[k].shape != own[k].shape]
    assert not missing, missing[:5]
    head = {k for k, t in classifier.items() if HEAD_CLASSES in t.shape}
    assert head and head.isdisjoint(own), sorted(head & set(own))
    backbone.classifier.load_state_dict({k: classifier[k] for k in own}, strict=True)
    key = next(k for k, t in own.items() if t.is_floating_point() and t.numel() > 1)
    assert torch.equal(backbone.classifier.state_dict()[key], classifier[key])  # the values, not only the names


def _every_backbone_parameter_gets_a_gradient(backbone) -> None:
    """The cheap per-model gradient check behind the heads (trained over four backbones below): a loss on every
    map reaches every backbone parameter with a finite gradient (batch 2: BatchNorm on the 1 x 1 maps)."""
    backbone.train()
    backbone.zero_grad(set_to_none=True)
    maps = backbone(torch.randn(2, 3, EXACT_SIZES[0], EXACT_SIZES[0]))
    sum(m.square().mean() for m in maps).backward()
    _all_parameters_learn(backbone)
    backbone.eval()


@pytest.mark.parametrize("name", per_model())
def test_backbone_features_sizes_weights_and_gradients(name: str) -> None:
    """One backbone per model for all its feature contracts: strides and channels at the exact sizes, within a
    row of the stride at odd sizes, the classifier's checkpoint loads into it, every parameter gets a gradient."""
    backbone = _backbone(name)
    _strides_and_channels_at_exact_sizes(backbone)
    _within_a_row_of_the_stride_at_odd_sizes(backbone)
    _features_are_the_classifiers_parameters(name, backbone)
    _every_backbone_parameter_gets_a_gradient(backbone)


def test_mobilevit_features_are_its_classifier_computation() -> None:
    torch.manual_seed(0)
    model = zm.create("mobilevit_xxs", num_classes=4).eval()
    backbone = feature_backbone("mobilevit_xxs").eval()
    backbone.classifier.load_state_dict(model.state_dict(), strict=False)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(backbone(x)[-1], model.forward_features(x), atol=1e-5)


def test_vit_levels_are_its_tokens_and_their_pool() -> None:
    torch.manual_seed(0)
    model = zm.create("deit_tiny", num_classes=4).eval()
    backbone = feature_backbone("deit_tiny").eval()
    backbone.classifier.load_state_dict(model.state_dict(), strict=False)
    x = torch.randn(1, 3, 80, 80)
    with torch.no_grad():
        s16, s32 = backbone(x)
        tokens = model.forward_features(x)[:, 1:]  # the final-norm tokens, class token dropped
    assert torch.allclose(s16.flatten(2).transpose(1, 2), tokens, atol=1e-5)
    assert s32.shape[-2:] == (3, 3) and torch.equal(s32[..., 0, 0], s16[..., :2, :2].amax(dim=(-2, -1)))


def test_pit_levels_are_timms_intermediates_at_the_construction_size() -> None:
    torch.manual_seed(0)
    model = zm.create("pit_ti", num_classes=4, img_size=64).eval()  # timm's own intermediates run at 64 only
    backbone = feature_backbone("pit_ti", image_size=64).eval()
    backbone.classifier.load_state_dict(model.state_dict(), strict=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, timms = backbone(x), model.forward_intermediates(x, intermediates_only=True)
    assert [m.shape for m in ours] == [m.shape for m in timms]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ours, timms))
    with torch.no_grad():
        assert [m.shape[-1] for m in backbone(torch.randn(1, 3, 96, 96))] == [11, 6, 3]  # and at other sizes


def test_out_strides_select_and_prune() -> None:
    full = feature_backbone("mobilevit_xxs")
    s16 = feature_backbone("mobilevit_xxs", out_strides=[16])
    assert (s16.strides, s16.channels) == ([16], [full.channels[full.strides.index(16)]])
    assert sum(p.numel() for p in s16.parameters()) < sum(p.numel() for p in full.parameters())  # layer5 gone
    assert feature_backbone("mobilevit_xxs", out_strides=[32, 16]).strides == [16, 32]


def test_a_stride_the_backbone_lacks_names_the_model_and_the_strides() -> None:
    with pytest.raises(MissingFeatureError, match=r"^deit_tiny: no features at stride 8; it has strides 16, 32; "
                                                  r"asked for 8, 16$"):
        feature_backbone("deit_tiny", out_strides=[8, 16])


class _Shallow(StagedFeatures):
    """A backbone that stops at stride 8: what a head must refuse."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model, [FeatureLevel(2, 8), FeatureLevel(4, 8), FeatureLevel(8, 8)])

    def stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self.model[index](x)


def _shallow_model(num_classes: int = 1, **_) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 8, 3, 2, 1), nn.Conv2d(8, 8, 3, 2, 1))


@pytest.mark.parametrize("build, needs", [
    (lambda: build_detector("shallow_net", NUM_CLASSES, 128), "SSDLite needs 16, 32"),
    (lambda: build_segmenter("shallow_net", NUM_CLASSES, output_stride=16), "DeepLabv3 at output stride 16 needs 16"),
])
def test_a_too_shallow_backbone_is_refused_by_the_heads(monkeypatch, build, needs) -> None:
    entry = registry.ModelEntry("shallow_net", "test", _shallow_model, registry.Published(),
                                hooks=registry.FamilyHooks(features=_Shallow))
    monkeypatch.setitem(registry._REGISTRY, "shallow_net", entry)
    with pytest.raises(MissingFeatureError) as caught:
        build()
    message = str(caught.value)
    assert "\n" not in message and message.startswith("shallow_net: no features at stride 16")
    assert "it has strides 2, 4, 8;" in message and message.endswith(needs)
    assert isinstance(caught.value, ValueError)


def test_the_segmenter_takes_output_stride_16_or_32_only() -> None:
    with pytest.raises(ValueError, match=r"output_stride must be one of \[16, 32\], got 8"):
        build_segmenter("mobilevit_xxs", NUM_CLASSES, output_stride=8)


def _detection_batch(size: int):
    torch.manual_seed(0)
    images = [torch.rand(3, size, size) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, size / 2, size / 2 + 3]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[size / 3, size / 4, size - 2.0, size - 5.0], [1.0, 1.0, 20.0, 30.0]]),
         "labels": torch.tensor([2, 1])},
    ]
    return images, targets


def _all_parameters_learn(model: nn.Module) -> None:
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", HEAD_BACKBONES)
def test_detector_trains_and_detects(name: str) -> None:
    torch.manual_seed(0)
    detector = build_detector(name, NUM_CLASSES, image_size=DETECTION_SIZE).train()
    images, targets = _detection_batch(DETECTION_SIZE)
    losses = detector(images, targets)
    assert set(losses) == {"bbox_regression", "classification"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    _all_parameters_learn(detector)

    detector.eval()
    with torch.no_grad():
        detections = detector([images[0], torch.rand(3, 96, 80)])  # any image size: resized to 128 inside
    assert len(detections) == 2
    for found, (height, width) in zip(detections, [(DETECTION_SIZE,) * 2, (96, 80)]):
        boxes = found["boxes"]
        assert boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) == len(found["labels"]) > 0
        assert (boxes[:, 2:] >= boxes[:, :2]).all()
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()  # in the image's own pixels
        assert ((found["labels"] >= 1) & (found["labels"] < NUM_CLASSES)).all()


@pytest.mark.parametrize("name", HEAD_BACKBONES)
def test_segmenter_returns_input_sized_logits_and_trains(name: str) -> None:
    torch.manual_seed(0)
    segmenter = build_segmenter(name, NUM_CLASSES + 1, output_stride=16, image_size=64).train()
    images = torch.rand(2, 3, 64, 80)
    logits = segmenter(images)
    assert logits.shape == (2, NUM_CLASSES + 1, 64, 80)
    nn.functional.cross_entropy(logits, torch.randint(0, NUM_CLASSES + 1, (2, 64, 80))).backward()
    _all_parameters_learn(segmenter)


@pytest.mark.parametrize("name", HEAD_BACKBONES)
def test_segmenter_at_output_stride_32(name: str) -> None:
    segmenter = build_segmenter(name, 2, output_stride=32).eval()
    assert segmenter.features.strides == [32]
    assert [branch[0].dilation[0] for branch in segmenter.head[0].convs[1:4]] == list(ASPP_RATES[32])
    with torch.no_grad():
        assert segmenter(torch.rand(1, 3, 96, 96)).shape == (1, 2, 96, 96)
