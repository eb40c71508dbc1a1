"""FLOP counting: published GMACs, attention counted, the PiT/no_grad trap, AFT analytic counts, params."""
from __future__ import annotations

import functools

import pytest
import timm
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import zoo.models as zm
from zoo.measure.flops import MacCount, count_macs, sdpa_macs
from zoo.measure.params import count_params

# (zoo model, resolution, published GMACs low, high): papers / timm tables (see shared/reference/papers.md).
PUBLISHED = [
    ("deit_tiny", 224, 1.26, 1.26),
    ("pit_ti", 224, 0.70, 0.70),
    ("mobilenetv2_100", 224, 0.30, 0.31),
    ("mobilevit_xs", 256, 1.03, 1.03),
    ("mobilevit_xxs", 256, 0.41, 0.41),
]


@functools.lru_cache(maxsize=None)
def _count_1k(name: str, resolution: int) -> MacCount:
    return count_macs(zm.create(name), resolution)


@pytest.mark.parametrize(("name", "resolution", "low", "high"), PUBLISHED)
def test_gmacs_match_published_within_3_percent(name: str, resolution: int, low: float, high: float) -> None:
    gmacs = _count_1k(name, resolution).gmacs
    assert low * 0.97 <= gmacs <= high * 1.03, f"{name}: {gmacs:.4f} GMACs vs published {low}-{high}"


def test_timm_coatnet_nano_matches_timm_table() -> None:
    gmacs = count_macs(timm.create_model("coatnet_nano_rw_224"), 224).gmacs
    assert gmacs == pytest.approx(2.41, rel=0.03)


def test_attention_matmuls_are_counted_exactly_for_deit_tiny() -> None:
    count = _count_1k("deit_tiny", 224)
    assert count.gmacs > 1.2  # 1.08 when fused CPU attention counts as zero
    # 12 layers x 3 heads x (QK^T + AV) over 197 tokens of 64 channels.
    assert count.attention_macs == 12 * sdpa_macs((1, 3, 197, 64), (1, 3, 197, 64), (1, 3, 197, 64))
    assert count.attention_macs == 12 * 3 * 197 * 197 * 128


def test_fused_formula_agrees_with_the_math_path() -> None:
    # Forcing the math path makes torch count QK^T and AV as plain bmm: the totals must agree.
    model = zm.create("mobilevit_xxs", num_classes=10)
    fused = count_macs(model, 128)
    with sdpa_kernel(SDPBackend.MATH):
        math = count_macs(model, 128)
    assert fused.attention_macs > 0
    assert math.attention_macs == 0 and math.by_op.get("bmm", 0) > 0
    assert fused.macs == math.macs


def test_pit_counts_under_no_grad_and_leaves_the_model_as_it_was() -> None:
    model = zm.create("pit_ti", num_classes=10).train()
    with torch.no_grad():
        under_no_grad = count_macs(model, 224)
    plain = count_macs(model, 224)
    assert under_no_grad.macs == plain.macs > 0
    assert model.training  # mode restored
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_count_scales_with_batch_and_accepts_rectangles() -> None:
    model = zm.create("mobilenetv2_100", num_classes=10)
    one = count_macs(model, (32, 64))
    two = count_macs(model, (32, 64), batch_size=2)
    assert one.input_shape == (1, 3, 32, 64)
    assert two.macs == 2 * one.macs


def _aft_layers():
    import zoo.models.aft_layers as layers

    return layers


def test_aft_conv_tiny_matches_analytic_count() -> None:
    layers = _aft_layers()
    tokens, dim = 14 * 14, 192
    patch_embed, head = tokens * dim * 3 * 16 * 16, dim * 1000
    mlp = 2 * tokens * dim * 4 * dim
    expected = patch_embed + 12 * (layers.aft_conv_macs(tokens, dim, 32, 11).total + mlp) + head
    assert count_macs(zm.create("aft_conv_tiny"), 224).macs == expected


def test_aft_full_tiny_matches_analytic_count() -> None:
    layers = _aft_layers()
    tokens, dim = 14 * 14, 192
    patch_embed, head = tokens * dim * 3 * 16 * 16, dim * 1000
    mlp = 2 * (tokens + 1) * dim * 4 * dim  # the class token goes through the MLPs too
    mixer = layers.aft_full_macs(tokens, dim, 128, prefix_tokens=1).total
    assert count_macs(zm.create("aft_full_tiny"), 224).macs == patch_embed + 12 * (mixer + mlp) + head


def test_params_with_own_and_1000_class_heads() -> None:
    params, params_1k = (count_params(zm.create("mobilevit_xxs", num_classes=n)) for n in (10, 1000))
    assert params_1k == pytest.approx(1.272e6, rel=0.01)  # paper: 1.272 M
    head_difference = (1000 - 10) * (320 + 1)  # Linear(320, classes) weights and biases
    assert params_1k - params == head_difference
    model = zm.create("mobilevit_xxs", num_classes=10)
    next(model.parameters()).requires_grad_(False)
    assert count_params(model) < params  # frozen parameters are not trainable
    assert count_params(model, trainable_only=False) == params
