"""MobileViT: paper parameter counts, exact equivalence with timm's reference, knobs, mixer hook, gradients."""
from __future__ import annotations

import timm
import torch
import torch.nn as nn
import pytest

from zoo.models import create, get_entry
from zoo.models import mobilevit
from zoo.models.mobilevit import build_mobilevit, load_timm_state_dict, resolve_mixer, timm_key_to_zoo
from zoo.models.mobilevit_blocks import MobileViTBlock, fold_patches, unfold_patches


def _perturb_norms(model: nn.Module, seed: int = 0) -> None:
    """Jitter BN statistics and randomise BN/LN affine, so agreement does not hinge on default (identity) values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                std = module.running_var.sqrt()
                module.running_mean.add_(0.2 * std * torch.randn(std.shape, generator=g))
                module.running_var.mul_(torch.empty_like(std).uniform_(0.7, 1.4, generator=g))
            if isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
                module.weight.uniform_(0.5, 1.5, generator=g)
                module.bias.normal_(0, 0.2, generator=g)


def _calibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Set BN running stats to this batch's statistics, as after training: untrained nets with identity stats
    shrink activations layer by layer until the logits barely depend on the input."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one batch sets the stats exactly
    model.train()
    with torch.no_grad():
        model(x)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    return model.eval()


def _sharpen_attention(model: nn.Module, std: float = 0.3) -> None:
    """Larger q/k/v weights than the 0.02 init, so attention is far from uniform and token layout matters."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("qkv"):  # ours: mixer.qkv, timm: attn.qkv
                module.weight.normal_(0, std)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevit_xs", "mobilevit_s"])
def test_param_count_matches_paper(name: str) -> None:
    published = get_entry(name).published.params_m
    params_m = _count(create(name, num_classes=1000)) / 1e6
    assert abs(params_m - published) / published <= 1e-3, (name, params_m, published)


@pytest.mark.parametrize(
    ("variant", "size"),
    [("xxs", (256, 256)), ("xxs", (160, 160)), ("xxs", (56, 72)), ("xs", (160, 160)), ("s", (160, 160))],
)
def test_matches_timm_reference(variant: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    reference = timm.create_model(f"mobilevit_{variant}", pretrained=False)
    x = torch.randn(2, 3, *size)
    _sharpen_attention(reference)
    _calibrate_batchnorm(reference, x)
    _perturb_norms(reference)
    ours = build_mobilevit(variant).eval()
    with torch.no_grad():
        expected = reference(x)
        before = ours(x)
        result = load_timm_state_dict(ours, reference.state_dict())
        got = ours(x)
    assert not result.missing_keys and not result.unexpected_keys
    # The check is only meaningful if the weights matter: our own init must disagree with timm's weights.
    assert (before - expected).abs().max() > 1e-2
    assert (expected[0] - expected[1]).abs().max() > 1e-2  # logits depend on the input
    assert (got - expected).abs().max() <= 1e-4


def test_timm_key_map_rejects_unknown_keys() -> None:
    assert timm_key_to_zoo("stages.2.1.transformer.0.attn.qkv.weight") == "layers.2.1.transformer.0.mixer.qkv.weight"
    with pytest.raises(KeyError):
        timm_key_to_zoo("stages.2.1.something_new.weight")


def test_unfold_groups_pixels_by_position_inside_patch() -> None:
    batch, channels, height, width, patch = 2, 3, 6, 8, (2, 4)
    x = torch.arange(batch * channels * height * width, dtype=torch.float32).reshape(batch, channels, height, width)
    tokens, grid = unfold_patches(x, patch)
    assert grid == (3, 2) and tokens.shape == (batch * 8, 6, channels)
    # Sequence b*P + (i*pw + j), token (r*n_w + c) is pixel (r*ph + i, c*pw + j) of image b: checked everywhere.
    ph, pw = patch
    n_h, n_w = grid
    for b in range(batch):
        for i in range(ph):
            for j in range(pw):
                for r in range(n_h):
                    for c in range(n_w):
                        expected = x[b, :, r * ph + i, c * pw + j]
                        assert torch.equal(tokens[(b * ph + i) * pw + j, r * n_w + c], expected), (b, i, j, r, c)
    assert torch.equal(fold_patches(tokens, patch, grid), x)


class RecordingMixer(nn.Module):
    """A stand-in token mixer: records every call's grid and token shape, mixes with a Linear."""

    calls: list[tuple[tuple[int, int], tuple[int, ...]]] = []

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        nn.init.constant_(self.proj.weight, 0.01)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        RecordingMixer.calls.append((grid, tuple(x.shape)))
        return self.proj(x)


@pytest.fixture
def recording_mixer(monkeypatch: pytest.MonkeyPatch):
    RecordingMixer.calls = []
    monkeypatch.setitem(mobilevit._MIXERS, "recording", RecordingMixer)
    return RecordingMixer


@pytest.mark.parametrize(
    ("patch_size", "size", "grids"),
    [
        ((2, 2, 2), 256, [(16, 16), (8, 8), (4, 4)]),
        ((4, 4, 4), 256, [(8, 8), (4, 4), (2, 2)]),
        ((8, 4, 2), 256, [(4, 4), (4, 4), (4, 4)]),
        ((2, 2, 2), 160, [(10, 10), (5, 5), (3, 3)]),  # layer5's 5x5 map is resized to 6x6
        ((8, 4, 2), 160, [(3, 3), (3, 3), (3, 3)]),
    ],
)
def test_mixer_hook_sees_patch_grids(recording_mixer, patch_size, size, grids) -> None:
    model = create("mobilevit_xxs", num_classes=10, mixer="recording", patch_size=patch_size).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, 10) and torch.isfinite(out).all()
    depths, dims = (2, 4, 3), (64, 80, 96)
    expected = []
    for grid, depth, dim, p in zip(grids, depths, dims, patch_size):
        expected += [(grid, (p * p, grid[0] * grid[1], dim))] * depth
    assert recording_mixer.calls == expected


def test_external_mixer_keeps_its_own_init() -> None:
    model = build_mobilevit("xxs", num_classes=10, mixer_factory=RecordingMixer)
    mixers = [m for m in model.modules() if isinstance(m, RecordingMixer)]
    assert len(mixers) == 9
    assert all(torch.all(m.proj.weight == 0.01) for m in mixers)


def test_unknown_mixer_and_knob_are_rejected() -> None:
    assert resolve_mixer("attention") is None
    with pytest.raises(ValueError, match="attention"):
        resolve_mixer("no_such_mixer")
    with pytest.raises(TypeError, match="patch_size"):
        build_mobilevit("xxs", patch_sizes=(2, 2, 2))
    with pytest.raises(ValueError):
        build_mobilevit("xxs", patch_size=(2, 2))


@pytest.mark.parametrize("size", [160, 256])
def test_patch_size_changes_output_with_same_weights(size: int) -> None:
    torch.manual_seed(0)
    patches = [(2, 2, 2), (4, 4, 4), (8, 4, 2)]
    models = {p: build_mobilevit("xxs", num_classes=10, patch_size=p, transformer_dropout=0.0) for p in patches}
    x = torch.randn(2, 3, size, size)
    base = models[(2, 2, 2)]
    _sharpen_attention(base)
    _calibrate_batchnorm(base, x)
    outputs = {}
    with torch.no_grad():
        for patch, model in models.items():
            model.load_state_dict(base.state_dict())  # patch size adds no parameters
            outputs[patch] = model.eval()(x)
    for i, a in enumerate(patches):
        for b in patches[i + 1 :]:
            assert (outputs[a] - outputs[b]).abs().max() > 1e-2, (a, b)


@pytest.mark.parametrize("size", [160, 256])
def test_fusion_off_drops_concat_conv_and_changes_output(size: int) -> None:
    torch.manual_seed(0)
    fused = build_mobilevit("xxs", num_classes=10).eval()
    plain = build_mobilevit("xxs", num_classes=10, fusion=False).eval()
    # Each removed fusion conv: 3x3 over 2C -> C without bias, plus BN scale and shift.
    removed = sum(c * 2 * c * 9 + 2 * c for c in (48, 64, 80))
    assert _count(fused) - _count(plain) == removed
    assert all(b.fuse is None for b in plain.modules() if isinstance(b, MobileViTBlock))
    x = torch.randn(2, 3, size, size)
    _calibrate_batchnorm(fused, x)
    plain.load_state_dict(fused.state_dict(), strict=False)
    with torch.no_grad():
        assert (fused(x) - plain(x)).abs().max() > 1e-2


@pytest.mark.parametrize("size", [(200, 200), (56, 72)])
def test_sizes_not_divisible_by_patch_work(size: tuple[int, int]) -> None:
    model = build_mobilevit("xxs", num_classes=10, patch_size=(4, 4, 4)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_dropout_knobs_reach_their_modules() -> None:
    xxs = build_mobilevit("xxs", num_classes=10)
    assert xxs.head_drop.p == 0.1
    assert {m.p for n, m in xxs.named_modules() if n.endswith("mixer_drop")} == {0.05}
    xs = build_mobilevit("xs", num_classes=10, drop_rate=0.3, attn_drop=0.2, drop_path_rate=0.2)
    assert xs.head_drop.p == 0.3
    assert {m.p for n, m in xs.named_modules() if n.endswith("ffn_drop")} == {0.1}
    assert {m.attn_drop for n, m in xs.named_modules() if n.endswith(".mixer")} == {0.2}
    rates = [getattr(m.drop_path, "drop_prob", 0.0) for m in xs.modules() if hasattr(m, "drop_path")]
    assert len(rates) == 9 and rates[0] == 0.0 and rates[-1] == pytest.approx(0.2)
    assert rates == sorted(rates)


def test_width_and_depth_overrides() -> None:
    model = build_mobilevit("xxs", num_classes=10, transformer_dims=(32, 48, 64), transformer_depths=(1, 2, 1))
    blocks = [m for m in model.modules() if isinstance(m, MobileViTBlock)]
    assert [len(b.transformer) for b in blocks] == [1, 2, 1]
    assert [b.final_norm.normalized_shape[0] for b in blocks] == [32, 48, 64]
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_backward_with_drop_path_gives_finite_gradients() -> None:
    """With stochastic depth on, at 32 px (1 x 1 maps at stride 32); every size without it: test_all_models.py."""
    torch.manual_seed(0)
    model = create("mobilevit_xxs", num_classes=10, drop_path_rate=0.1).train()
    x = torch.randn(2, 3, 32, 32)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([1, 7]))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
