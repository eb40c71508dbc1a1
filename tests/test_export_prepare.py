"""`prepare_for_export`: baked position embeddings give the eager logits, and the export graph has no
antialiased bicubic resize; AFT-conv's per-head kernel expansion has no repeat_interleave (Core ML's float tile)."""
from __future__ import annotations

import pytest
import torch

import zoo.models as zm
from zoo.models.aft_layers import AFTConv
from zoo.models.export import BAKED_BUFFER, prepare_for_export


@pytest.mark.parametrize(("name", "resolution"), [("deit_tiny", 224), ("deit_tiny", 256), ("pit_ti", 256),
                                                  ("pit_ti", 224)])
def test_baked_position_embedding_gives_the_eager_logits(name: str, resolution: int) -> None:
    torch.manual_seed(0)
    model = zm.create(name, num_classes=10).eval()
    x = torch.randn(2, 3, resolution, resolution)
    prepared = prepare_for_export(model, resolution)
    with torch.no_grad():
        expected, got = model(x), prepared(x)
    assert torch.equal(expected, got)
    assert getattr(prepared, BAKED_BUFFER).requires_grad is False
    assert type(model).__name__ in type(prepared).__name__ and prepared is not model
    assert not hasattr(model, BAKED_BUFFER)  # the trained model is left as it was


def test_exported_graph_has_no_antialiased_bicubic() -> None:
    model = zm.create("deit_tiny", num_classes=10)
    ops_of = lambda m: {str(n.target) for n in torch.export.export(m, (torch.randn(1, 3, 256, 256),)).graph.nodes}
    prepared_ops = ops_of(prepare_for_export(model, 256))
    assert not any("bicubic" in op for op in prepared_ops)
    assert any("bicubic" in op for op in ops_of(model.eval()))  # the bake is what removes it


def test_pit_refuses_another_size_after_baking() -> None:
    prepared = prepare_for_export(zm.create("pit_ti", num_classes=10), 224)
    with pytest.raises(ValueError, match="exported for token grid"):
        prepared(torch.randn(1, 3, 256, 256))


def test_aft_conv_kernel_expansion_is_export_friendly_and_exact() -> None:
    torch.manual_seed(0)
    mixer = AFTConv(dim=16, heads=4, kernel_size=3).eval()
    with torch.no_grad():
        mixer.gamma.fill_(0.7)
        mixer.beta.fill_(0.2)
    x = torch.randn(2, 36, 16)
    graph = torch.export.export(mixer, (x, (6, 6))).graph
    assert not any("repeat_interleave" in str(n.target) for n in graph.nodes)
    # the reference: repeat_interleave of the per-head kernel, as the formula states it
    kernel = mixer.position_kernel()
    expanded = kernel.unsqueeze(1).expand(4, 4, 3, 3).reshape(16, 3, 3)
    assert torch.equal(expanded, kernel.repeat_interleave(4, dim=0))


def test_xnnpack_friendly_ops_match_the_fused_ops_and_are_restored() -> None:
    import torch.nn.functional as F

    from zoo.models.export import xnnpack_friendly_ops

    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 4)
    bias = torch.randn(3, 5, 7)
    x, weight, shift = torch.randn(2, 5, 16), torch.randn(16), torch.randn(16)
    sdpa, layer_norm = F.scaled_dot_product_attention, F.layer_norm
    norm = torch.nn.LayerNorm(16)  # the module calls F.layer_norm by attribute: the rewrite reaches it
    expected = [sdpa(q, k, v), sdpa(q, k, v, attn_mask=bias), layer_norm(x, (16,), weight, shift, 1e-6), norm(x)]
    with xnnpack_friendly_ops():
        assert F.scaled_dot_product_attention is not sdpa and F.layer_norm is not layer_norm
        got = [F.scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, v, attn_mask=bias),
               F.layer_norm(x, (16,), weight, shift, 1e-6), norm(x)]
    assert F.scaled_dot_product_attention is sdpa and F.layer_norm is layer_norm
    for want, have in zip(expected, got):
        assert torch.allclose(want, have, atol=1e-5)


def test_aft_conv_kernel_is_baked_as_a_constant_with_identical_logits() -> None:
    torch.manual_seed(0)
    model = zm.create("mobilevit_xs_aft", num_classes=10).eval()  # AFT-conv mixers inside MobileViT
    for module in model.modules():
        if isinstance(module, AFTConv):
            with torch.no_grad():
                module.gamma.fill_(0.5)
    x = torch.randn(1, 3, 64, 64)
    prepared = prepare_for_export(model, 64)
    with torch.no_grad():
        assert torch.equal(model(x), prepared(x))
    mixers = [m for m in prepared.modules() if isinstance(m, AFTConv)]
    assert mixers and all(m.export_conv_weight.requires_grad is False for m in mixers)
    graph = torch.export.export(prepared, (x,)).graph
    assert "aten.var.correction" not in {str(n.target) for n in graph.nodes}  # no kernel re-parameterisation
