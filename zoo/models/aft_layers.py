"""AFT token mixers (Zhai et al., "An Attention Free Transformer", arXiv 2105.14103), written from the paper.

Every mixer is called as `mixer(x: Tensor[B, T, C], grid=(n_h, n_w)) -> Tensor[B, T, C]`, the T tokens lying on
an n_h x n_w grid in row-major order (token t = i * n_w + j). All of them compute, per channel,

    Y_t = sigmoid(Q_t) * sum_t' exp(K_t' + w[t, t']) * V_t' / sum_t' exp(K_t' + w[t, t'])

and differ only in the position bias w:
- `AFTFull`:   w = U V^T (rank r), U and V kept as r-channel 2-D maps of a construction grid and resized
               bilinearly to the input's grid (so the bias adapts to any resolution).
- `AFTLocal`:  the AFTFull bias kept inside a 2-D window (|i - i'| < s and |j - j'| < s), 0 (not -inf) outside.
- `AFTSimple`: w = 0, i.e. one softmax(K)-weighted average of V shared by every token: O(T d).
- `AFTConv`:   h heads, K has one channel per head, w^i is an s x s kernel over the relative 2-D offset
               (t' = t + offset, as in a cross-correlation), 0 outside; evaluated as a depthwise conv with the
               exp(w) - 1 kernel plus a global sum, with w^i = gamma^i (w^i - mean) / std + beta^i.

Prefix tokens (a class token) have no grid position. Models own them (create, prepend, read out); `AFTFull` /
`AFTLocal` are told how many lead the sequence (`num_prefix_tokens`) and give them a zero bias to and from every
token. `AFTSimple` ignores positions, so it takes any T. `AFTConv` needs T = n_h * n_w exactly.

Numerics: a max is subtracted before every exp (over tokens for K, per row for w, per head for the conv kernel),
so nothing overflows; the exp-weighted sums run in float32 (or float64 for float64 inputs) even in fp16/bf16 or
under autocast, and denominators are clamped to the smallest normal number so underflow gives 0, never NaN.

MAC counts (`aft_*_macs`, per call on `batch` samples, default 1) count the multiply-accumulates of matmul-like work: the Q/K/V/output
projections, the position-bias product U V^T, the depthwise conv (every output position times every kernel tap,
zero padding included, as torch's FLOP counter does) and the token-sum contractions done as matmuls or einsums.
Not counted: elementwise work (exp, sigmoid gate, exp(K) * V, division, bias adds, the bias-map resizing and
AFT-conv's kernel re-parameterisation) and the plain sum of exp(K) in AFT-conv's denominator.
torch.utils.flop_counter.FlopCounterMode reports exactly 2 x `total` for every mixer here.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Grid",
    "MixerMacs",
    "AFTFull",
    "AFTLocal",
    "AFTSimple",
    "AFTConv",
    "FactorizedPositionBias",
    "local_window_mask",
    "aft_full_macs",
    "aft_local_macs",
    "aft_simple_macs",
    "aft_conv_macs",
]

Grid = tuple[int, int]


# --- shared numerics -----------------------------------------------------------------------------------------------
def _stable_exp(x: Tensor, dim: int | tuple[int, ...]) -> Tensor:
    """exp(x - max over `dim`): in (0, 1]. The shift cancels between numerator and denominator, so the max is
    detached (its gradient would be exactly zero anyway)."""
    return torch.exp(x - x.amax(dim=dim, keepdim=True).detach())


def _safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    return numerator / denominator.clamp_min(torch.finfo(denominator.dtype).tiny)


@contextlib.contextmanager
def _no_autocast(device_type: str) -> Iterator[None]:
    """Run the exp-weighted sums in full precision even inside an autocast region (fp16 sums underflow)."""
    if torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    else:
        yield


def _mixing_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _check_grid(tokens: int, grid: Grid, prefix: int = 0) -> None:
    if tokens != prefix + grid[0] * grid[1]:
        raise ValueError(f"{tokens} tokens do not fit grid {grid} with {prefix} prefix token(s)")


def _init_linear(linear: nn.Linear) -> None:
    # DeiT-style N(0, 0.02). DeiT truncates at +-2 (absolute), i.e. 100 std: a plain normal is the same
    # distribution and ~25x faster to draw than trunc_normal_ on CPU.
    nn.init.normal_(linear.weight, std=0.02)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


class _ProjectedMixer(nn.Module):
    """Fused Q/K/V projection (K may be narrower than Q and V) and the output projection."""

    def __init__(self, dim: int, key_dim: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.key_dim = key_dim
        self.qkv = nn.Linear(dim, 2 * dim + key_dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _init_linear(self.qkv)
        _init_linear(self.proj)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """[B, T, C] -> q [B, T, C], k [B, T, key_dim], v [B, T, C], in the mixing dtype."""
        q, k, v = self.qkv(x).split([self.dim, self.key_dim, self.dim], dim=-1)
        dtype = _mixing_dtype(q.dtype)
        return q.to(dtype), k.to(dtype), v.to(dtype)

    def output(self, q: Tensor, mixed: Tensor, like: Tensor) -> Tensor:
        gated = torch.sigmoid(q) * mixed
        return self.proj(gated.to(like.dtype))


# --- AFT-full / AFT-local ---------------------------------------------------------------------------------------------
class FactorizedPositionBias(nn.Module):
    """Pair-wise bias w = U V^T over grid tokens; U, V are rank-channel maps of the construction grid.

    At another grid both maps are resized bilinearly; since w is bilinear in (U, V), this equals resizing the 4-D
    bias w[i, j, i', j'] bilinearly over (i, j) and over (i', j').
    """

    def __init__(self, rank: int, grid: Grid) -> None:
        super().__init__()
        self.construction_grid = tuple(grid)
        self.u = nn.Parameter(torch.empty(rank, *grid))
        self.v = nn.Parameter(torch.empty(rank, *grid))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.u, std=0.02)
        nn.init.normal_(self.v, std=0.02)

    def factors(self, grid: Grid, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        """U, V resized to `grid`, each [T, rank] (rows in row-major token order), in `dtype`."""
        u, v = self.u.to(dtype or self.u.dtype), self.v.to(dtype or self.v.dtype)
        if tuple(grid) != self.construction_grid:
            maps = torch.stack((u, v))  # resize both in one call
            u, v = F.interpolate(maps, size=tuple(grid), mode="bilinear", align_corners=False).unbind(0)
        return u.flatten(1).t(), v.flatten(1).t()

    def forward(self, grid: Grid, dtype: torch.dtype | None = None) -> Tensor:
        u, v = self.factors(grid, dtype)
        return u @ v.t()


def local_window_mask(grid: Grid, window: int, device: torch.device | None = None) -> Tensor:
    """[T, T] bool: True where tokens t = (i, j), t' = (i', j') satisfy |i - i'| < window and |j - j'| < window,
    the paper's 1-D rule |t - t'| < s applied along each grid axis (a (2s - 1) x (2s - 1) square)."""
    n_h, n_w = grid
    rows = torch.arange(n_h, device=device).repeat_interleave(n_w)
    cols = torch.arange(n_w, device=device).repeat(n_h)
    near_rows = (rows[:, None] - rows[None, :]).abs() < window
    near_cols = (cols[:, None] - cols[None, :]).abs() < window
    return near_rows & near_cols


class AFTFull(_ProjectedMixer):
    """AFT-full with a rank-`rank` factorised pair-wise position bias; O(T^2 d) time, O(T^2) memory."""

    def __init__(
        self,
        dim: int,
        rank: int = 128,
        construction_grid: Grid = (14, 14),
        num_prefix_tokens: int = 0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__(dim, key_dim=dim, qkv_bias=qkv_bias)
        self.num_prefix_tokens = num_prefix_tokens
        self.position_bias = FactorizedPositionBias(rank, construction_grid)

    def pair_bias(self, grid: Grid, dtype: torch.dtype | None = None) -> Tensor:
        """w over all tokens, [P + T, P + T], in `dtype`; prefix rows and columns are 0."""
        bias = self.position_bias(grid, dtype)
        prefix = self.num_prefix_tokens
        return F.pad(bias, (prefix, 0, prefix, 0)) if prefix else bias

    def forward(self, x: Tensor, grid: Grid) -> Tensor:
        _check_grid(x.shape[1], grid, self.num_prefix_tokens)
        q, k, v = self.project(x)
        with _no_autocast(x.device.type):
            bias = self.pair_bias(grid, k.dtype)  # in float32 even for fp16 weights: w may be large
            exp_bias = _stable_exp(bias, dim=-1)  # row-wise shift: cancels within each output token
            exp_k = _stable_exp(k, dim=1)  # per channel over tokens
            # One matmul gives numerator and denominator: exp(w) @ [exp(K) * V, exp(K)].
            stacked = torch.cat((exp_k * v, exp_k), dim=-1)
            numerator, denominator = torch.matmul(exp_bias, stacked).chunk(2, dim=-1)
            mixed = _safe_divide(numerator, denominator)
        return self.output(q, mixed, like=x)


class AFTLocal(AFTFull):
    """AFT-local: the AFT-full bias inside a `window` (see `local_window_mask`), 0 outside, so every pair of
    tokens stays connected. Evaluated densely: same cost as AFT-full."""

    def __init__(
        self,
        dim: int,
        window: int,
        rank: int = 128,
        construction_grid: Grid = (14, 14),
        num_prefix_tokens: int = 0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__(dim, rank, construction_grid, num_prefix_tokens, qkv_bias)
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window

    def pair_bias(self, grid: Grid, dtype: torch.dtype | None = None) -> Tensor:
        bias = self.position_bias(grid, dtype) * local_window_mask(grid, self.window, self.position_bias.u.device)
        prefix = self.num_prefix_tokens
        return F.pad(bias, (prefix, 0, prefix, 0)) if prefix else bias


# --- AFT-simple -------------------------------------------------------------------------------------------------------
class AFTSimple(_ProjectedMixer):
    """AFT-simple: Y_t = sigmoid(Q_t) * sum_t' softmax(K)_t' * V_t'. Position-free; accepts any T."""

    def __init__(self, dim: int, qkv_bias: bool = True) -> None:
        super().__init__(dim, key_dim=dim, qkv_bias=qkv_bias)

    def forward(self, x: Tensor, grid: Grid) -> Tensor:
        q, k, v = self.project(x)
        with _no_autocast(x.device.type):
            weights = torch.softmax(k, dim=1)  # over tokens, per channel (softmax subtracts the max)
            context = torch.einsum("btc,btc->bc", weights, v)  # a contraction over t: counted as a matmul
        return self.output(q, context.unsqueeze(1), like=x)


# --- AFT-conv ---------------------------------------------------------------------------------------------------------
class AFTConv(_ProjectedMixer):
    """AFT-conv: `heads` heads, an s x s position kernel per head, K with one channel per head.

    Channel c belongs to head c // (dim / heads). Head i computes, with kernel k^i = exp(w^i) - 1,
        Y^i = sigmoid(Q^i) * [conv(e^K * V^i, k^i) + sum_t' e^K_t' V^i_t'] / [conv(e^K, k^i) + sum_t' e^K_t'],
    all heads at once: one depthwise conv over the dim + heads channels of [e^K * V, e^K] (each head's kernel
    repeated over its channels) and one einsum for the global sums. To keep exp(w) finite the kernel and the
    global term are both scaled by exp(-m), m = max(0, max w^i): kernel exp(w - m) - exp(-m), global exp(-m).
    """

    def __init__(self, dim: int, heads: int, kernel_size: int = 11, qkv_bias: bool = True) -> None:
        if dim % heads:
            raise ValueError(f"AFT-conv width {dim} is not divisible by {heads} heads")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"AFT-conv kernel must be odd (centred on the token), got {kernel_size}")
        super().__init__(dim, key_dim=heads, qkv_bias=qkv_bias)
        self.heads = heads
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(heads, kernel_size, kernel_size))
        # gamma = beta = 0 at init: the mixer starts as per-head AFT-simple and learns how much position matters.
        self.gamma = nn.Parameter(torch.zeros(heads))
        self.beta = nn.Parameter(torch.zeros(heads))
        # Set by `bake_for_export` on an export copy only; None (no buffer, nothing in the state_dict) otherwise.
        self.register_buffer("export_conv_weight", None, persistent=False)
        self.register_buffer("export_global_scale", None, persistent=False)
        self.reset_kernel()

    def reset_kernel(self) -> None:
        # Random (not constant) so std(w) > 0 and gamma receives a gradient from the first step.
        nn.init.normal_(self.weight, std=1.0)
        nn.init.zeros_(self.gamma)
        nn.init.zeros_(self.beta)

    def position_kernel(self, dtype: torch.dtype | None = None) -> Tensor:
        """The re-parameterised w^i = gamma^i (w^i - mean) / std + beta^i, [heads, s, s], in `dtype`."""
        weight, gamma, beta = (p.to(dtype or p.dtype) for p in (self.weight, self.gamma, self.beta))
        mean = weight.mean(dim=(1, 2), keepdim=True)
        std = torch.sqrt(weight.var(dim=(1, 2), unbiased=False, keepdim=True) + 1e-5)
        return gamma[:, None, None] * (weight - mean) / std + beta[:, None, None]

    def conv_weight(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """The depthwise-conv weight [dim + heads, 1, s, s] and the global-term scale exp(-m) [heads].

        A function of the parameters only: an export copy stores it as a constant (`bake_for_export`), so the
        runtime sees a conv with static weights, which XNNPACK delegates.
        """
        if self.export_conv_weight is not None:  # baked: the constant, not a graph computing it
            return self.export_conv_weight.to(dtype), self.export_global_scale.to(dtype)
        heads, size = self.heads, self.kernel_size
        per_head = self.dim // heads
        w = self.position_kernel(dtype)
        shift = w.amax(dim=(1, 2)).clamp_min(0).detach()  # [heads]
        kernel = torch.exp(w - shift[:, None, None]) - torch.exp(-shift)[:, None, None]
        # Each head's kernel repeated over its channels. expand+reshape, not repeat_interleave: the same values in
        # the same order, but Core ML's converter turns repeat_interleave into a `tile` with float reps, which it
        # then rejects.
        per_channel = kernel.unsqueeze(1).expand(heads, per_head, size, size).reshape(heads * per_head, size, size)
        return torch.cat((per_channel, kernel)).unsqueeze(1), torch.exp(-shift)

    def bake_for_export(self) -> None:
        """Store the conv weight and global scale as constants (called by `prepare_for_export` on an eval copy).

        Computed from parameters on every call, the weight makes the exported graph a conv with a computed
        weight, which XNNPACK does not delegate (it ran on ExecuTorch's portable conv, ~35x slower than
        MobileNetV2 overall, and its int8 form had no kernel at all). At inference it is a constant. A baked
        mixer no longer follows its parameters: bake copies only, never a model that trains on.
        """
        with torch.no_grad():
            weight, scale = self.conv_weight(self.weight.dtype)
        self.register_buffer("export_conv_weight", weight.detach().clone(), persistent=False)
        self.register_buffer("export_global_scale", scale.detach().clone(), persistent=False)

    def forward(self, x: Tensor, grid: Grid) -> Tensor:
        batch, tokens, dim = x.shape
        _check_grid(tokens, grid)
        heads, per_head, size = self.heads, dim // self.heads, self.kernel_size
        q, k, v = self.project(x)
        with _no_autocast(x.device.type):
            weight, global_scale = self.conv_weight(k.dtype)

            exp_k = _stable_exp(k, dim=1)  # [B, T, heads]
            v_heads = v.view(batch, tokens, heads, per_head)
            exp_kv = (exp_k.unsqueeze(-1) * v_heads).view(batch, tokens, dim)

            # Local term: one depthwise conv over [e^K * V (dim channels), e^K (heads channels)].
            maps = torch.cat((exp_kv, exp_k), dim=-1).transpose(1, 2).reshape(batch, dim + heads, *grid)
            local = F.conv2d(maps, weight, padding=size // 2, groups=dim + heads).flatten(2).transpose(1, 2)

            # Global term: sum over all tokens, scaled like the kernel.
            global_kv = torch.einsum("bth,bthc->bhc", exp_k, v_heads)  # [B, heads, per_head]
            global_kv = global_kv * global_scale[:, None]
            global_k = exp_k.sum(dim=1) * global_scale  # [B, heads]

            numerator = local[..., :dim].reshape(batch, tokens, heads, per_head) + global_kv.unsqueeze(1)
            denominator = local[..., dim:] + global_k.unsqueeze(1)  # [B, T, heads]
            mixed = _safe_divide(numerator, denominator.unsqueeze(-1)).reshape(batch, tokens, dim)
        return self.output(q, mixed, like=x)


# --- analytic MAC counts ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MixerMacs:
    """Multiply-accumulates of one mixer call (see the module docstring for what is counted)."""

    projections: int
    position_bias: int = 0
    conv: int = 0
    weighted_sums: int = 0

    @property
    def total(self) -> int:
        return self.projections + self.position_bias + self.conv + self.weighted_sums


def aft_full_macs(tokens: int, dim: int, rank: int, prefix_tokens: int = 0, batch: int = 1) -> MixerMacs:
    """`tokens` grid tokens plus `prefix_tokens`, per call on `batch` samples: Q, K, V, out projections
    4 T d^2; exp(w) @ [e^K V, e^K] 2 T^2 d (T counting the prefix); U V^T over the grid tokens^2 r, once per call
    whatever the batch (the bias does not depend on the sample)."""
    total_tokens = tokens + prefix_tokens
    return MixerMacs(
        projections=batch * 4 * total_tokens * dim * dim,
        position_bias=tokens * tokens * rank,
        weighted_sums=batch * 2 * total_tokens * total_tokens * dim,
    )


def aft_local_macs(tokens: int, dim: int, rank: int, prefix_tokens: int = 0, batch: int = 1) -> MixerMacs:
    """Same as AFT-full: `AFTLocal` evaluates its masked bias densely."""
    return aft_full_macs(tokens, dim, rank, prefix_tokens, batch)


def aft_simple_macs(tokens: int, dim: int, batch: int = 1) -> MixerMacs:
    """Per call on `batch` samples: projections 4 T d^2; the softmax(K)-weighted sum of V, T d."""
    return MixerMacs(projections=batch * 4 * tokens * dim * dim, weighted_sums=batch * tokens * dim)


def aft_conv_macs(tokens: int, dim: int, heads: int, kernel_size: int, batch: int = 1) -> MixerMacs:
    """Per call on `batch` samples: projections T d (3 d + heads) (K is `heads` wide); the depthwise conv over
    d + heads channels, T (d + heads) s^2; the global sum of e^K V, T d."""
    return MixerMacs(
        projections=batch * tokens * dim * (3 * dim + heads),
        conv=batch * tokens * (dim + heads) * kernel_size * kernel_size,
        weighted_sums=batch * tokens * dim,
    )
