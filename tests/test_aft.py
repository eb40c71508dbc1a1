"""AFT mixers against the paper's formula, numerics, vectorisation, MAC counts; AFT models and AFT-in-MobileViT."""
from __future__ import annotations

import copy
from typing import Callable

import pytest
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from zoo.models import create, get_entry
from zoo.models.aft_layers import (
    AFTConv,
    AFTFull,
    AFTLocal,
    AFTSimple,
    aft_conv_macs,
    aft_full_macs,
    aft_local_macs,
    aft_simple_macs,
    local_window_mask,
)

# A pair bias callable: (t, t') -> per-channel bias [C].
PairBias = Callable[[int, int], torch.Tensor]



def direct_aft(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: PairBias) -> torch.Tensor:
    """The paper's formula with loops over t and t' (one sample, [T, C] each, K already one value per channel):
    Y_t = sigmoid(Q_t) * sum_t' exp(K_t' + w_tt') V_t' / sum_t' exp(K_t' + w_tt'). No max shift, so keep it tame."""
    tokens = q.shape[0]
    out = torch.empty_like(v)
    for t in range(tokens):
        numerator = torch.zeros_like(v[0])
        denominator = torch.zeros_like(v[0])
        for t2 in range(tokens):
            weight = torch.exp(k[t2] + bias(t, t2))
            numerator += weight * v[t2]
            denominator += weight
        out[t] = torch.sigmoid(q[t]) * numerator / denominator
    return out


def _split_qkv(layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return layer.qkv(x).split([layer.dim, layer.key_dim, layer.dim], dim=-1)


def _sharpen(layer: nn.Module, std: float = 0.5) -> None:
    """Bigger Q/K/V weights than the 0.02 init so the token weights are far from uniform."""
    with torch.no_grad():
        layer.qkv.weight.normal_(0, std)
        layer.qkv.bias.normal_(0, std)


def _random_bias(layer: AFTFull, std: float) -> None:
    """U, V ~ N(0, std^2): with rank r, w = U V^T has std ~ std^2 sqrt(r)."""
    with torch.no_grad():
        layer.position_bias.u.normal_(0, std)
        layer.position_bias.v.normal_(0, std)


def _expected(layer: nn.Module, x: torch.Tensor, bias: PairBias, key_to_channels=lambda k: k) -> torch.Tensor:
    q, k, v = _split_qkv(layer, x)
    mixed = torch.stack([direct_aft(q[b], key_to_channels(k[b]), v[b], bias) for b in range(x.shape[0])])
    return layer.proj(mixed)


def _conv_bias(layer: AFTConv, grid: tuple[int, int]) -> PairBias:
    """AFT-conv as a pair bias: head i's kernel at offset t' - t (cross-correlation), 0 outside the window."""
    kernel = layer.position_kernel().detach()
    half = layer.kernel_size // 2
    per_head = layer.dim // layer.heads
    n_w = grid[1]

    def bias(t: int, t2: int) -> torch.Tensor:
        di, dj = t2 // n_w - t // n_w, t2 % n_w - t % n_w
        if abs(di) > half or abs(dj) > half:
            return torch.zeros(layer.dim, dtype=kernel.dtype)
        return kernel[:, di + half, dj + half].repeat_interleave(per_head)

    return bias


def _heads_to_channels(layer: AFTConv) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda k: k.repeat_interleave(layer.dim // layer.heads, dim=-1)


# --- each layer against the formula (float64) -----------------------------------------------------------------------
GRID = (3, 4)  # non-square, so a swapped row/column order fails


def _input(dim: int, prefix: int = 0, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, prefix + GRID[0] * GRID[1], dim, dtype=torch.float64)


@pytest.mark.parametrize("prefix", [0, 1])
def test_aft_full_matches_formula(prefix: int) -> None:
    torch.manual_seed(0)
    layer = AFTFull(8, rank=4, construction_grid=GRID, num_prefix_tokens=prefix).double()
    _sharpen(layer)
    _random_bias(layer, 1.0)
    u = layer.position_bias.u.detach().flatten(1)  # [r, T]
    v = layer.position_bias.v.detach().flatten(1)

    def bias(t: int, t2: int) -> torch.Tensor:
        if t < prefix or t2 < prefix:
            return torch.zeros(8, dtype=torch.float64)  # the class token has no position
        return (u[:, t - prefix] * v[:, t2 - prefix]).sum().expand(8)

    x = _input(8, prefix)
    with torch.no_grad():
        got, expected = layer(x, GRID), _expected(layer, x, bias)
    assert (got - expected).abs().max() <= 1e-5


def test_aft_local_matches_formula_with_2d_window() -> None:
    torch.manual_seed(1)
    layer = AFTLocal(8, window=2, rank=4, construction_grid=GRID).double()
    _sharpen(layer)
    _random_bias(layer, 1.0)
    full_bias = (layer.position_bias.u.flatten(1).t() @ layer.position_bias.v.flatten(1)).detach()
    n_w = GRID[1]

    def bias(t: int, t2: int) -> torch.Tensor:
        inside = abs(t // n_w - t2 // n_w) < 2 and abs(t % n_w - t2 % n_w) < 2
        return (full_bias[t, t2] if inside else torch.tensor(0.0, dtype=torch.float64)).expand(8)

    x = _input(8)
    with torch.no_grad():
        got, expected = layer(x, GRID), _expected(layer, x, bias)
    assert (got - expected).abs().max() <= 1e-5


def test_local_window_is_a_square_on_the_grid() -> None:
    mask = local_window_mask((3, 4), window=2)
    corner = mask[0].view(3, 4)  # token (0, 0)
    expected = torch.zeros(3, 4, dtype=torch.bool)
    expected[:2, :2] = True
    assert torch.equal(corner, expected)
    assert torch.equal(mask, mask.t())


def test_aft_local_with_window_covering_everything_equals_aft_full() -> None:
    torch.manual_seed(2)
    full = AFTFull(8, rank=4, construction_grid=GRID).double()
    _sharpen(full)
    _random_bias(full, 1.0)
    local = AFTLocal(8, window=max(GRID), rank=4, construction_grid=GRID).double()
    local.load_state_dict(full.state_dict())
    narrow = AFTLocal(8, window=1, rank=4, construction_grid=GRID).double()
    narrow.load_state_dict(full.state_dict())
    x = _input(8)
    with torch.no_grad():
        assert (local(x, GRID) - full(x, GRID)).abs().max() <= 1e-12
        assert (narrow(x, GRID) - full(x, GRID)).abs().max() > 1e-3  # the window does matter


def test_aft_simple_matches_formula() -> None:
    torch.manual_seed(3)
    layer = AFTSimple(8).double()
    _sharpen(layer)
    x = _input(8)
    with torch.no_grad():
        got = layer(x, GRID)
        expected = _expected(layer, x, lambda t, t2: torch.zeros(8, dtype=torch.float64))
    assert (got - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_aft_conv_matches_formula(kernel_size: int) -> None:
    torch.manual_seed(4)
    layer = AFTConv(8, heads=4, kernel_size=kernel_size).double()
    _sharpen(layer)
    with torch.no_grad():
        layer.gamma.normal_(0, 1.0)
        layer.beta.normal_(0, 1.0)
    x = _input(8)
    with torch.no_grad():
        got = layer(x, GRID)
        expected = _expected(layer, x, _conv_bias(layer, GRID), _heads_to_channels(layer))
    assert (got - expected).abs().max() <= 1e-5


def test_aft_conv_at_init_is_the_formula_with_zero_bias() -> None:
    torch.manual_seed(5)
    layer = AFTConv(8, heads=2, kernel_size=3).double()  # gamma = beta = 0 from the constructor
    _sharpen(layer)
    assert torch.count_nonzero(layer.gamma) == 0 and torch.count_nonzero(layer.beta) == 0
    x = _input(8)
    zero = torch.zeros(8, dtype=torch.float64)
    with torch.no_grad():
        got = layer(x, GRID)
        expected = _expected(layer, x, lambda t, t2: zero, _heads_to_channels(layer))
    assert (got - expected).abs().max() <= 1e-5


def test_tokens_must_fit_the_grid() -> None:
    with pytest.raises(ValueError, match="grid"):
        AFTConv(8, heads=2, kernel_size=3)(torch.randn(1, 13, 8), GRID)
    with pytest.raises(ValueError, match="prefix"):
        AFTFull(8, rank=2, num_prefix_tokens=1)(torch.randn(1, 12, 8), GRID)


def test_aft_full_bias_resizes_as_a_2d_map() -> None:
    layer = AFTFull(4, rank=1, construction_grid=(4, 6))
    with torch.no_grad():
        layer.position_bias.u.copy_(torch.arange(4.0)[:, None].expand(4, 6)[None])  # varies along rows only
        layer.position_bias.v.fill_(1.0)
    at_construction = layer.pair_bias((4, 6))
    assert torch.equal(at_construction[:, 0], torch.arange(4.0).repeat_interleave(6))
    resized = layer.pair_bias((8, 3)).view(8, 3, 24)
    assert torch.allclose(resized, resized[:, :1].expand_as(resized))  # still constant along a row
    row_values = resized[:, 0, 0]
    assert torch.all(row_values[1:] >= row_values[:-1]) and row_values[-1] > row_values[0]


# --- numerics ---------------------------------------------------------------------------------------------------------
def _layers() -> dict[str, nn.Module]:
    return {
        "full": AFTFull(16, rank=4, construction_grid=(4, 4)),
        "local": AFTLocal(16, window=2, rank=4, construction_grid=(4, 4)),
        "simple": AFTSimple(16),
        "conv": AFTConv(16, heads=4, kernel_size=3),
    }


def _boost_keys(layer: nn.Module, amount: float) -> torch.utils.hooks.RemovableHandle:
    """Add `amount` to K of token 0 and subtract it at token 1: exp() of them overflows without a max shift."""
    key = slice(layer.dim, layer.dim + layer.key_dim)

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        output[:, 0, key] += amount
        output[:, 1, key] -= amount
        return output

    return layer.qkv.register_forward_hook(hook)


def _widen_bias(layer: nn.Module, scale: float) -> None:
    """Position biases of about +-`scale`: exp(w) overflows float32 for scale >~ 90 unless shifted."""
    with torch.no_grad():
        if isinstance(layer, AFTConv):
            layer.gamma.fill_(scale / 2)  # the standardised kernel spans about +-2
        elif isinstance(layer, AFTFull):
            _random_bias(layer, scale**0.5 / 2)  # rank 4: w has std ~ scale / 2


def _check_against_float64(layer: nn.Module, x: torch.Tensor, tolerances: dict[torch.dtype, float]) -> None:
    """Output in each dtype is finite and close to float64 evaluation of the same (dtype-rounded) weights."""
    with torch.no_grad():
        for dtype, tolerance in tolerances.items():
            rounded, rounded_x = copy.deepcopy(layer).to(dtype), x.to(dtype)
            reference = copy.deepcopy(rounded).double()(rounded_x.double(), (4, 4))
            assert torch.isfinite(reference).all()
            got = rounded(rounded_x, (4, 4))
            assert torch.isfinite(got).all(), dtype
            assert (got.double() - reference).abs().max() <= tolerance, dtype


LOW_PRECISION = {torch.float32: 1e-4, torch.bfloat16: 0.1, torch.float16: 0.02}


@pytest.mark.parametrize("kind", ["full", "local", "simple", "conv"])
def test_huge_key_logits_stay_finite_and_accurate(kind: str) -> None:
    torch.manual_seed(6)
    layer = _layers()[kind]
    _sharpen(layer)
    _widen_bias(layer, 6.0)
    _boost_keys(layer, 100.0)  # exp(100) = inf in float32 / bfloat16 / float16 without the max shift
    _check_against_float64(layer, torch.randn(2, 16, 16), LOW_PRECISION)


@pytest.mark.parametrize("kind", ["full", "local"])
def test_huge_position_bias_stays_finite_and_accurate(kind: str) -> None:
    torch.manual_seed(7)
    layer = _layers()[kind]
    _sharpen(layer)
    _widen_bias(layer, 300.0)
    _check_against_float64(layer, torch.randn(2, 16, 16), LOW_PRECISION)


@pytest.mark.parametrize("shape", ["peak_at_centre", "all_taps_very_negative"])
def test_huge_conv_kernel_stays_finite_and_accurate(shape: str) -> None:
    torch.manual_seed(7)
    layer = AFTConv(16, heads=4, kernel_size=3)
    _sharpen(layer)
    with torch.no_grad():
        if shape == "peak_at_centre":  # a token attending to itself: w(0, 0) ~ +120 overflows exp unshifted
            layer.weight[:, 1, 1] = 10.0
            layer.gamma.fill_(40.0)
        else:  # exp(w) - 1 = -1: the window is cut out of the global sum
            layer.beta.fill_(-150.0)
    w = layer.position_kernel()
    assert w.abs().max() > 100
    _check_against_float64(layer, torch.randn(2, 16, 16), LOW_PRECISION)


@pytest.mark.parametrize("kind", ["full", "conv"])
def test_huge_keys_and_bias_together_stay_finite(kind: str) -> None:
    # Known limit: K and w are shifted by separate maxima (as in the paper); AFT-conv shifts its kernel by
    # m = max(0, max w) once per head. When K and w both span hundreds with maxima on different tokens, or a
    # border token's window lacks the kernel's largest taps while m > ~87, the float32 weights of the tokens that
    # matter underflow: the output stays finite (0 / tiny), but is not exact there.
    torch.manual_seed(8)
    layer = _layers()[kind]
    _sharpen(layer)
    _widen_bias(layer, 300.0)
    _boost_keys(layer, 100.0)
    with torch.no_grad():
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            assert torch.isfinite(layer.to(dtype)(torch.randn(2, 16, 16, dtype=dtype), (4, 4))).all(), dtype


def test_autocast_keeps_the_sums_in_float32() -> None:
    torch.manual_seed(9)
    layer = AFTConv(16, heads=4, kernel_size=3)
    _sharpen(layer)
    _boost_keys(layer, 100.0)
    x = torch.randn(2, 16, 16)
    with torch.no_grad():
        reference = layer(x, (4, 4))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = layer(x, (4, 4))
    assert got.dtype == torch.bfloat16 and torch.isfinite(got).all()
    assert (got.float() - reference).abs().max() <= 0.1


def test_gradients_are_finite_with_huge_logits() -> None:
    torch.manual_seed(8)
    for layer in _layers().values():
        _sharpen(layer)
        _boost_keys(layer, 100.0)
        layer(torch.randn(2, 16, 16), (4, 4)).square().sum().backward()
        for name, param in layer.named_parameters():
            assert param.grad is not None and torch.isfinite(param.grad).all(), (type(layer).__name__, name)


# --- vectorisation: the number of dispatched ops does not grow with heads or tokens -------------------------------------
class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def _count_ops(layer: nn.Module, grid: tuple[int, int], dim: int) -> int:
    x = torch.randn(1, grid[0] * grid[1], dim)
    with torch.no_grad(), _OpCounter() as counter:
        layer(x, grid)
    return counter.ops


def test_aft_conv_has_no_loop_over_heads_or_positions() -> None:
    one_head = _count_ops(AFTConv(192, heads=1, kernel_size=11), (4, 4), 192)
    all_heads = _count_ops(AFTConv(192, heads=192, kernel_size=11), (4, 4), 192)
    bigger_grid = _count_ops(AFTConv(192, heads=192, kernel_size=11), (14, 14), 192)
    assert one_head == all_heads == bigger_grid
    assert one_head < 150  # a loop over 192 heads or 196 positions would dispatch at least that many


@pytest.mark.parametrize("kind", ["full", "local", "simple"])
def test_other_mixers_have_no_loop_over_positions(kind: str) -> None:
    small, large = _layers()[kind], _layers()[kind]
    assert _count_ops(small, (2, 2), 16) == _count_ops(large, (8, 8), 16)


# --- analytic MACs against torch's FLOP counter ----------------------------------------------------------------------------
def _counted_macs(layer: nn.Module, x: torch.Tensor, grid: tuple[int, int]) -> float:
    with FlopCounterMode(display=False) as counter:
        layer(x, grid)
    return counter.get_total_flops() / 2  # FlopCounterMode counts 2 FLOPs per multiply-accumulate


@pytest.mark.parametrize("grid", [(14, 14), (5, 7)])
def test_mac_counts_match_flop_counter(grid: tuple[int, int]) -> None:
    batch, dim, tokens = 2, 48, grid[0] * grid[1]
    cases = [
        (AFTFull(dim, rank=16, construction_grid=(14, 14)), 0, aft_full_macs(tokens, dim, 16, batch=batch)),
        (AFTFull(dim, rank=16, num_prefix_tokens=1), 1, aft_full_macs(tokens, dim, 16, 1, batch=batch)),
        (AFTLocal(dim, window=3, rank=16), 0, aft_local_macs(tokens, dim, 16, batch=batch)),
        (AFTSimple(dim), 0, aft_simple_macs(tokens, dim, batch=batch)),
        (AFTConv(dim, heads=8, kernel_size=11), 0, aft_conv_macs(tokens, dim, 8, 11, batch=batch)),
        (AFTConv(dim, heads=48, kernel_size=3), 0, aft_conv_macs(tokens, dim, 48, 3, batch=batch)),
    ]
    for layer, prefix, macs in cases:
        x = torch.randn(batch, prefix + tokens, dim)
        assert _counted_macs(layer, x, grid) == macs.total, type(layer).__name__


def test_position_bias_macs_do_not_grow_with_the_batch() -> None:
    one, four = aft_full_macs(196, 192, 128), aft_full_macs(196, 192, 128, batch=4)
    assert four.position_bias == one.position_bias == 196 * 196 * 128
    assert four.projections == 4 * one.projections and four.weighted_sums == 4 * one.weighted_sums


def test_mac_breakdown_of_aft_conv() -> None:
    macs = aft_conv_macs(196, 192, 32, 11)
    assert macs.projections == 196 * 192 * (3 * 192 + 32)
    assert macs.conv == 196 * (192 + 32) * 121
    assert macs.weighted_sums == 196 * 192 and macs.position_bias == 0


# --- models ---------------------------------------------------------------------------------------------------------------
def _params_m(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6


@pytest.mark.parametrize("name", ["aft_conv_tiny", "aft_conv_tiny_h192", "aft_full_tiny"])
def test_param_counts_match_paper(name: str) -> None:
    published = get_entry(name).published.params_m
    assert abs(_params_m(create(name)) - published) / published <= 0.03


def test_heads_knob_gives_the_h192_model() -> None:
    assert _params_m(create("aft_conv_tiny", heads=192)) == _params_m(create("aft_conv_tiny_h192"))


@pytest.mark.parametrize("name", ["aft_conv_tiny", "aft_full_tiny"])
def test_model_runs_on_rectangles_and_backpropagates(name: str) -> None:
    """Rectangles only: every square sampler size, forward and backward, is tests/test_all_models.py's."""
    torch.manual_seed(9)
    model = create(name, num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 72, 100)).shape == (1, 10)  # padded up to 80 x 112
    model.train()
    model(torch.randn(2, 3, 48, 80)).logsumexp(-1).sum().backward()  # a grid the AFT-full bias is resized to
    for param_name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), param_name


def test_regularisation_knobs_are_honoured() -> None:
    model = create("aft_conv_tiny", num_classes=10, drop_path_rate=0.2, drop_rate=0.3)
    assert model.head.out_features == 10 and model.head_drop.p == 0.3
    assert model.blocks[-1].drop_path.drop_prob == pytest.approx(0.2)
    assert isinstance(model.blocks[0].drop_path, nn.Identity)  # linear rule starts at 0
    assert create("aft_full_tiny").head_drop.p == 0.0  # None keeps the DeiT default


def test_aft_conv_model_has_no_class_token_and_full_model_has_one() -> None:
    conv, full = create("aft_conv_tiny", num_classes=10), create("aft_full_tiny", num_classes=10)
    assert conv.cls_token is None and full.cls_token is not None
    assert full.blocks[0].mixer.num_prefix_tokens == 1
    tokens = full.forward_features(torch.randn(1, 3, 64, 64))
    assert tokens.shape == (1, 1 + 16, 192)


@pytest.mark.parametrize(("name", "mixer_type"), [("mobilevit_xs_aft", AFTConv), ("mobilevit_xxs_aft", AFTSimple)])
def test_mobilevit_with_aft_mixers(name: str, mixer_type: type) -> None:
    torch.manual_seed(10)
    model = create(name, num_classes=10)
    mixers = [m for m in model.modules() if isinstance(m, (AFTConv, AFTSimple, AFTFull))]
    assert len(mixers) == 2 + 4 + 3 and all(type(m) is mixer_type for m in mixers)
    if mixer_type is AFTConv:
        assert all(m.kernel_size == 3 and m.heads == 4 for m in mixers)
    with torch.no_grad():
        for size in (64, 256):  # 256: the paper's base size, token grids 16, 8 and 4 a side
            assert model.eval()(torch.randn(1, 3, size, size)).shape == (1, 10)
    model.train()
    model(torch.randn(2, 3, 64, 64)).logsumexp(-1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert mixers[0].qkv.weight.grad.abs().sum() > 0


def test_xxs_aft_has_the_parameters_of_mobilevit_xxs() -> None:
    assert _params_m(create("mobilevit_xxs_aft")) == _params_m(create("mobilevit_xxs"))


def test_aft_mixers_are_offered_to_mobilevit_by_name() -> None:
    model = create("mobilevit_xxs", num_classes=10, mixer="aft_conv")
    assert sum(isinstance(m, AFTConv) for m in model.modules()) == 9
