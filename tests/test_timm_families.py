"""The timm-built families: published sizes, the any-size adaptations of PiT and CoAtNet, and the timm bridge."""
from __future__ import annotations

import copy
import warnings

import pytest
import timm
import torch
from timm.layers import RelPosMlp

import zoo.models as zm
from zoo.models.coatnet import AnySizeRelPosMlp
from zoo.models.timm_bridge import NoPretrainedWeightsError, register_with_timm



def _param_count_m(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6


@pytest.mark.parametrize(
    ("name", "paper_params_m", "rel_tol"),
    [
        ("deit_tiny", 5.7, 0.01),
        ("pit_ti", 4.9, 0.02),
        ("pit_xs", 10.6, 0.02),
        ("mobilenetv2_100", 3.50, 0.01),
        ("coatnet_nano", 15.15, 0.005),  # timm's table for coatnet_rmlp_nano_rw_224
        ("coatnet_pico", 10.85, 0.005),  # timm's coatnet_pico_rw_224
    ],
)
def test_params_with_1000_classes_match_published(name: str, paper_params_m: float, rel_tol: float) -> None:
    assert zm.get_entry(name).published.params_m == paper_params_m
    assert _param_count_m(zm.create(name)) == pytest.approx(paper_params_m, rel=rel_tol)


def _same_weights_in_timm(zoo_model: torch.nn.Module, timm_variant: str) -> torch.nn.Module:
    reference = timm.create_model(timm_variant, pretrained=False, num_classes=10)
    reference.load_state_dict(zoo_model.state_dict(), strict=True)  # same keys: the adaptation adds no state
    return reference.eval()


@pytest.mark.parametrize(
    ("name", "timm_variant"), [("pit_ti", "pit_ti_224"), ("coatnet_nano", "coatnet_rmlp_nano_rw_224")]
)
def test_adapted_model_equals_unmodified_timm_at_construction_size(name: str, timm_variant: str) -> None:
    torch.manual_seed(0)
    model = zm.create(name, num_classes=10).eval()
    reference = _same_weights_in_timm(model, timm_variant)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
        with pytest.raises(RuntimeError):
            reference(torch.randn(1, 3, 160, 160))  # the reason for the adaptation
        logits = model(torch.randn(1, 3, 160, 160))
    assert logits.shape == (1, 10) and torch.isfinite(logits).all()


def test_pit_position_embedding_is_resized_not_dropped() -> None:
    torch.manual_seed(0)
    model = zm.create("pit_ti", num_classes=10).eval()
    x = torch.randn(1, 3, 160, 160)
    grid = model.token_grid((160, 160))
    assert grid == (19, 19) and model.position_embedding(grid).shape[-2:] == grid
    with torch.no_grad():
        before = model(x)
        model.pos_embed.add_(torch.randn_like(model.pos_embed))
        assert not torch.allclose(before, model(x))


def test_pit_forward_intermediates_refuses_other_sizes_clearly() -> None:
    model = zm.create("pit_ti", num_classes=10).eval()
    with pytest.raises(NotImplementedError, match="construction size"):
        model.forward_intermediates(torch.randn(1, 3, 160, 160))


def test_coatnet_bias_at_a_new_size_equals_timm_built_for_that_size() -> None:
    torch.manual_seed(0)
    source = RelPosMlp(window_size=(7, 7), num_heads=8, hidden_dim=64)
    adapted = AnySizeRelPosMlp(copy.deepcopy(source))
    timm_at_5 = RelPosMlp(window_size=(5, 3), num_heads=8, hidden_dim=64)
    timm_at_5.mlp.load_state_dict(source.mlp.state_dict())
    adapted.eval(), timm_at_5.eval()
    adapted.feature_size = (5, 3)
    assert torch.equal(adapted.get_bias(), timm_at_5.get_bias())


def test_coatnet_odd_sizes_training_after_inference_mode_and_ema_copy() -> None:
    torch.manual_seed(0)
    model = zm.create("coatnet_nano", num_classes=10).eval()
    with torch.inference_mode():  # builds the 80-pixel tables as inference tensors would be
        first = model(torch.randn(1, 3, 80, 80))
    assert first.shape == (1, 10)
    model.train()
    model(torch.randn(2, 3, 80, 80)).sum().backward()  # would fail on inference tensors saved for backward
    mlp_grad = model.stages[3].blocks[0].attn.rel_pos.mlp.fc1.weight.grad
    assert mlp_grad is not None and mlp_grad.abs().sum() > 0

    ema = copy.deepcopy(model).eval()  # EMA helpers deep-copy the model: the size hooks must survive
    model.eval()
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(ema(x), model(x))


def test_deit_runs_at_a_size_not_divisible_by_16() -> None:
    model = zm.create("deit_tiny", num_classes=10).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 200, 200))
    assert logits.shape == (1, 10) and torch.isfinite(logits).all()


def test_pretrained_weights_are_refused_clearly() -> None:
    with pytest.raises(NoPretrainedWeightsError, match="no pretrained weights"):
        timm.create_model("zoo_mobilenetv2_100", pretrained=True)
    with pytest.raises(NoPretrainedWeightsError):
        zm.create("deit_tiny", pretrained=True)


def test_register_with_timm_lists_every_model_and_is_idempotent() -> None:
    assert set(timm.list_models("zoo_*")) == {f"zoo_{name}" for name in zm.list_models()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # timm warns when a name is registered over
        assert register_with_timm() == []
    assert set(timm.list_models(module="timm_bridge")) == set(timm.list_models("zoo_*"))


def test_paper_figures_come_from_the_registry() -> None:
    """The report layer asks `zoo.models` for paper figures: a model's, a knob variant's, and the paper's pairs."""
    patch4 = zm.published("mobilevit_s[patch_size=[4, 4, 4]]")
    assert (patch4.top1, patch4.paper_latency_ms) == (77.6, 8.23)
    assert zm.published("mobilevit_xxs[patch_size=[4, 4, 4]]").top1 is None  # the default's figures do not fit it
    assert zm.published("deit_tiny") is zm.get_entry("deit_tiny").published
    assert list(zm.published_variants("mobilevit_s"))[-1] == "mobilevit_s[fusion=false]"
    assert zm.paper_comparisons() == [("pit_ti", "deit_tiny")]
    for model, other in zm.paper_comparisons():  # each pair names registered models, the first the cheaper
        assert zm.published(model).gmacs < zm.published(other).gmacs
    with pytest.raises(zm.UnknownModelError):
        zm.published("no_such_model")
