"""Every registered model: one instance runs at every size the samplers may draw, trains, and is built by timm.

The heaviest file of the suite, kept fast: one test item per model builds it once and runs every check on that
instance (num_classes 10; batch 2 only where it is cheap: small sizes and backward; backward at two sizes, one
below and one inside the multi-scale range). Each model is built in one worker only.
"""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

import zoo.models as zm

MODELS = zm.list_models()
# make test-fast's models: the cheapest of each family (CoAtNet, FastViT and RepViT take 3-10 s each: make test only).
FAST_MODELS = ("deit_tiny", "efficientformerv2_s0", "efficientvit_b0", "mobilenetv2_100", "mobilenetv4_conv_small",
               "mobilevit_xxs", "mobilevit_xxs_aft", "mobilevitv2_050", "pit_ti", "swiftformer_xs")
MULTI_SCALE_SIZES = (160, 192, 224, 256, 288, 320)
SMALL_SIZES = (24, 32, 40, 48, 64, 80, 96)  # the default data set's sizes; 24, 40, 48, 80 are not multiples of 32
BACKWARD_SIZES = (48, 160)
NUM_CLASSES = 10
BATCH = 2  # > 1 so a lost batch dimension shows, and batch norm can train on 1x1 maps


def per_model(names=MODELS):
    """`names` as parameters, those outside FAST_MODELS marked slow."""
    assert set(FAST_MODELS) <= set(MODELS), sorted(set(FAST_MODELS) - set(MODELS))
    return [n if n in FAST_MODELS else pytest.param(n, marks=pytest.mark.slow) for n in names]


def _batch_for(size: int) -> int:
    # The batch dimension is checked at the small sizes; one image keeps the large ones cheap.
    return BATCH if size < min(MULTI_SCALE_SIZES) else 1


def _forwards_at_every_size(model: torch.nn.Module) -> None:
    model.eval()
    wrong = []
    with torch.no_grad():
        for size in SMALL_SIZES + MULTI_SCALE_SIZES:
            batch = _batch_for(size)
            logits = model(torch.randn(batch, 3, size, size))
            if logits.shape != (batch, NUM_CLASSES) or not torch.isfinite(logits).all():
                wrong.append((size, tuple(logits.shape)))
    assert not wrong, f"wrong or non-finite logits at (size, shape): {wrong}"


def _backward_gives_finite_gradients_to_every_parameter(model: torch.nn.Module, size: int) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    logits = model(torch.randn(BATCH, 3, size, size))
    F.cross_entropy(logits, torch.arange(BATCH) % NUM_CLASSES).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{size} px: parameters without a gradient: {missing[:5]}"
    not_finite = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not not_finite, f"{size} px: non-finite gradients: {not_finite[:5]}"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters() if p.grad is not None), size


def _timm_builds_the_same_model_under_the_zoo_prefix(name: str, model: torch.nn.Module) -> None:
    """timm.create_model('zoo_<name>') is the same class with the same state keys, and the zoo model's weights
    load into it strictly and give the same logits."""
    via_timm = timm.create_model(f"zoo_{name}", num_classes=NUM_CLASSES)
    assert type(via_timm) is type(model)
    assert via_timm.state_dict().keys() == model.state_dict().keys()
    via_timm.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(via_timm.eval()(x), model.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", per_model())
def test_model_forwards_at_every_size_trains_and_is_built_by_timm(name: str) -> None:
    torch.manual_seed(0)
    model = zm.create(name, num_classes=NUM_CLASSES)
    _forwards_at_every_size(model)
    for size in BACKWARD_SIZES:
        _backward_gives_finite_gradients_to_every_parameter(model, size)
    _timm_builds_the_same_model_under_the_zoo_prefix(name, model)


def test_unknown_name_suggests_the_closest_and_lists_all() -> None:
    with pytest.raises(zm.UnknownModelError) as caught:
        zm.create("mobilevit_xss")
    message = str(caught.value)
    assert "'mobilevit_xs'" in message
    assert all(name in message for name in MODELS)
