"""Every registered model: one instance runs at every size the samplers may draw, trains, and is built by timm.

The heaviest file of the suite, kept fast: num_classes 10, one instance per model reused across sizes, batch 2
only where it is cheap (small sizes, backward), backward at two sizes only (one below and one inside the
multi-scale range).
"""
from __future__ import annotations

import functools

import pytest
import timm
import torch
import torch.nn.functional as F

import zoo.models as zm

MODELS = zm.list_models()
MULTI_SCALE_SIZES = (160, 192, 224, 256, 288, 320)
SMALL_SIZES = (24, 32, 40, 48, 64, 80, 96)  # the default data set's sizes; 24, 40, 48, 80 are not multiples of 32
BACKWARD_SIZES = (48, 160)
NUM_CLASSES = 10
BATCH = 2  # > 1 so a lost batch dimension shows, and batch norm can train on 1x1 maps


def _batch_for(size: int) -> int:
    # The batch dimension is checked at the small sizes; one image keeps the large ones cheap.
    return BATCH if size < min(MULTI_SCALE_SIZES) else 1



@functools.cache
def _instance(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return zm.create(name, num_classes=NUM_CLASSES)


@pytest.mark.parametrize("size", SMALL_SIZES + MULTI_SCALE_SIZES)
@pytest.mark.parametrize("name", MODELS)
def test_one_instance_forwards_at_every_size(name: str, size: int) -> None:
    model = _instance(name).eval()
    batch = _batch_for(size)
    with torch.no_grad():
        logits = model(torch.randn(batch, 3, size, size))
    assert logits.shape == (batch, NUM_CLASSES)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("size", BACKWARD_SIZES)
@pytest.mark.parametrize("name", MODELS)
def test_backward_gives_finite_gradients_to_every_parameter(name: str, size: int) -> None:
    model = _instance(name).train()
    model.zero_grad(set_to_none=True)
    logits = model(torch.randn(BATCH, 3, size, size))
    F.cross_entropy(logits, torch.arange(BATCH) % NUM_CLASSES).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"
    not_finite = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not not_finite, f"non-finite gradients: {not_finite[:5]}"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", MODELS)
def test_timm_builds_the_same_model_under_the_zoo_prefix(name: str) -> None:
    torch.manual_seed(0)
    via_timm = timm.create_model(f"zoo_{name}", num_classes=NUM_CLASSES)
    assert type(via_timm) is type(_instance(name))
    assert via_timm.state_dict().keys() == _instance(name).state_dict().keys()
    with torch.no_grad():
        assert via_timm.eval()(torch.randn(1, 3, 64, 64)).shape == (1, NUM_CLASSES)


def test_unknown_name_suggests_the_closest_and_lists_all() -> None:
    with pytest.raises(zm.UnknownModelError) as caught:
        zm.create("mobilevit_xss")
    message = str(caught.value)
    assert "'mobilevit_xs'" in message
    assert all(name in message for name in MODELS)
