"""`prepare_for_export`: the family's hooks and each layer's own bake, on a copy; baked position embeddings give
the eager logits, and the export graph has no antialiased bicubic resize; AFT-conv's per-head kernel expansion has
no repeat_interleave (Core ML's float tile)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import zoo.models as zm
from zoo.models import registry
from zoo.models.aft_layers import AFTConv
from zoo.models.export import BAKED_BUFFER, prepare_for_export


class _SharedLog(list):
    """A list that a deep copy shares, so the copy's layers and the hooks write to one log."""

    def __deepcopy__(self, memo: dict) -> "_SharedLog":
        return self


class _BakedLayer(nn.Linear):
    def __init__(self, log: list) -> None:
        super().__init__(4, 4)
        self.log = log

    def bake_for_export(self) -> None:
        self.log.append("layer bake")


class _HookedNet(nn.Module):
    def __init__(self, num_classes: int = 4, log: list | None = None, **_: object) -> None:
        super().__init__()
        self.inner = nn.Sequential(_BakedLayer(log), nn.ReLU(), _BakedLayer(log))
        self.fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def test_prepare_fuses_then_bakes_the_family_then_every_layer_on_an_eval_copy(monkeypatch) -> None:
    log = _SharedLog()

    def fuse(model: nn.Module) -> nn.Module:
        log.append(("fuse", model.training))
        model.fused = True
        return model

    def bake(model: nn.Module, resolution: int) -> None:
        log.append(("family bake", resolution, model.fused))

    entry = registry.ModelEntry("test_hooked", "test", _HookedNet, registry.Published(),
                                hooks=registry.FamilyHooks(bake_for_export=bake, reparameterize=fuse))
    monkeypatch.setitem(registry._REGISTRY, entry.name, entry)
    model = zm.create(entry.name, log=log)
    assert zm.hooks_of(model) is entry.hooks
    prepared = prepare_for_export(model, 96)
    assert log == [("fuse", False), ("family bake", 96, True), "layer bake", "layer bake"]
    assert model.training and not model.fused and prepared is not model and not prepared.training
    # a model built without the registry has no family hooks: copied, its layers still baked
    log.clear()
    plain = prepare_for_export(_HookedNet(log=log), 96)
    assert log == ["layer bake", "layer bake"] and not plain.fused


def test_families_declare_their_hooks_and_export_names_none() -> None:
    sized = {name: zm.get_entry(name).hooks.sized_at_base_resolution for name in zm.list_models()}
    assert {name for name, flag in sized.items() if flag} >= {"deit_tiny", "pit_ti", "pit_xs"}
    assert not sized["mobilevit_xxs"] and not sized["coatnet_pico"] and not sized["mobilenetv2_100"]
    assert zm.hooks_of(nn.Linear(2, 2)) == registry.NO_HOOKS
    source = Path(__file__).resolve().parent.parent / "zoo" / "models" / "export.py"
    imported = {node.module for node in ast.walk(ast.parse(source.read_text())) if isinstance(node, ast.ImportFrom)}
    assert {m for m in imported if m and m.startswith("zoo")} == {"zoo.models.registry"}


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


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_explicit_attention_takes_multi_query_heads_like_sdpa() -> None:
    # MobileNetV4's Mobile MQA shares one key/value head across the query heads (SDPA broadcasts it; bmm cannot).
    import torch.nn.functional as F

    from zoo.models.export import xnnpack_friendly_ops

    torch.manual_seed(0)
    query, key, value = torch.randn(2, 4, 9, 16), torch.randn(2, 1, 5, 16), torch.randn(2, 1, 5, 8)
    expected = F.scaled_dot_product_attention(query, key, value)
    with xnnpack_friendly_ops():
        got = F.scaled_dot_product_attention(query, key, value)
    assert got.shape == (2, 4, 9, 8)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


class _PortableOpsNet(nn.Module):
    """One of each construct XNNPACK refuses as traced (group norm, a (2, 3) mean without keepdim, a leading
    unsqueeze, a 4-D matmul)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1, 12)
        self.conv = nn.Conv2d(12, 12, 1)
        self.key = nn.Conv2d(12, 12, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key = self.conv(self.norm(x)), self.key(x)
        scores = query.reshape(1, 3, 4, 36).transpose(-1, -2) @ key.reshape(1, 3, 4, 36)  # [1, 3, 36, 36]
        pooled = scores.softmax(-1).reshape(1, 3 * 36, 6, 6).mean((2, 3))  # [1, 108]
        return pooled.unsqueeze(0).reshape(1, 108, 1, 1).mean((2, 3))


def test_xnnpack_friendly_tensor_methods_give_the_same_values_and_are_restored() -> None:
    import torch.nn.functional as F

    from zoo.models.export import xnnpack_friendly_ops

    torch.manual_seed(0)
    x, a, b = torch.randn(2, 6, 5, 7), torch.randn(2, 3, 5, 8), torch.randn(2, 3, 8, 4)
    norm = nn.GroupNorm(3, 6)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    methods = (torch.Tensor.mean, torch.Tensor.unsqueeze, torch.Tensor.__matmul__, F.group_norm)

    def values() -> list[torch.Tensor]:
        return [x.mean((2, 3)), x.mean((-1, -2)), x.mean(1), x.mean(), x.unsqueeze(1), x.unsqueeze(-1),
                x.unsqueeze(0), a @ b, torch.matmul(a, b), a.matmul(b), a @ b[:1], norm(x)]

    expected = values()
    with xnnpack_friendly_ops():
        assert torch.Tensor.unsqueeze is not methods[1]
        got = values()
        assert got[4]._base is x and got[6]._base is x  # unsqueeze stays a view
    assert (torch.Tensor.mean, torch.Tensor.unsqueeze, torch.Tensor.__matmul__, F.group_norm) == methods
    assert [t.shape for t in got] == [t.shape for t in expected] and len(got) == 12
    for want, have in zip(expected, got):
        torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_xnnpack_friendly_ops_leave_nothing_to_portable_kernels(tmp_path: Path) -> None:
    from zoo.measure.backends.executorch_xnnpack import export_executorch

    from zoo.measure.backends.executorch_xnnpack import load_executorch

    torch.manual_seed(0)
    model, x = _PortableOpsNet().eval(), torch.randn(1, 12, 6, 6)
    plain = export_executorch(model, x, tmp_path / "plain.pte", friendly_ops=False)
    assert {"aten_native_group_norm_default", "aten_mean_dim", "aten_expand_copy_default",
            "aten_unsqueeze_copy_default"} <= set(plain["non_delegated_ops"])
    friendly = export_executorch(model, x, tmp_path / "friendly.pte")
    assert set(friendly["non_delegated_ops"]) == {"getitem"} and friendly["delegated_subgraphs"] == 1
    method, _program = load_executorch(tmp_path / "friendly.pte")
    with torch.no_grad():
        torch.testing.assert_close(method.execute([x])[0], model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_shared_provenance_writes_the_same_pte_byte_for_byte(tmp_path: Path, monkeypatch) -> None:
    """The lowering speed-up changes nothing in the program: int8 (quantize + lower) with and without it."""
    import contextlib
    import copy

    import torch.fx.traceback as fx_traceback

    from zoo.measure.backends import executorch_xnnpack as et

    torch.manual_seed(0)
    model, x = _PortableOpsNet().eval(), torch.randn(1, 12, 6, 6)
    calibration = [torch.randn(1, 12, 6, 6) for _ in range(2)]
    chain = [object(), object()]
    with et.shared_provenance():
        shared = fx_traceback.copy.deepcopy(chain)
        assert shared == chain and shared is not chain and shared[0] is chain[0]  # a new list, the same entries
    assert fx_traceback.copy is copy  # restored
    et.export_executorch(model, x, tmp_path / "shared.pte", calibration)
    monkeypatch.setattr(et, "shared_provenance", contextlib.nullcontext)
    et.export_executorch(model, x, tmp_path / "copied.pte", calibration)
    assert (tmp_path / "shared.pte").read_bytes() == (tmp_path / "copied.pte").read_bytes()
