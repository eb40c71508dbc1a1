"""Building blocks of MobileViT (Mehta & Rastegari, arXiv 2110.02178): MV2, transformer layer, MobileViT block.

The transformer layer takes its token mixer as a module with the call signature
`mixer(x: Tensor[B, T, C], grid: tuple[int, int]) -> Tensor[B, T, C]`, where the T = n_h * n_w tokens lie on an
(n_h, n_w) grid in row-major order. Self-attention is the default mixer; AFT layers plug in through the same call.
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor

Grid = tuple[int, int]


class TokenMixer(Protocol):
    """What the transformer layer calls in place of self-attention."""

    def __call__(self, x: Tensor, grid: Grid) -> Tensor: ...


# (dim, num_heads) -> a module obeying TokenMixer.
MixerFactory = Callable[[int, int], TokenMixer]


class ConvBnAct(nn.Module):
    """Conv (no bias, 'same' padding) -> BatchNorm -> optional SiLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class InvertedResidual(nn.Module):
    """MV2 block: expand 1x1 -> depthwise 3x3 (stride) -> linear project 1x1, residual when shapes agree."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: float) -> None:
        super().__init__()
        hidden = int(round(in_channels * expansion))
        self.expand = ConvBnAct(in_channels, hidden, 1) if expansion != 1 else nn.Identity()
        self.depthwise = ConvBnAct(hidden, hidden, 3, stride=stride, groups=hidden)
        self.project = ConvBnAct(hidden, out_channels, 1, act=False)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.use_residual else y


class MultiHeadSelfAttention(nn.Module):
    """Standard MHSA as a token mixer; `grid` is unused (MobileViT has no positional information here).

    q, k, v come from one fused Linear laid out as [q; k; v] (each `dim` rows, heads contiguous inside), the same
    layout timm uses, so timm checkpoints load without reshuffling.
    """

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, grid: Grid) -> Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x)
        # Slices of the fused projection rather than unbind: the same numbers, but unbind exports as select/
        # squeeze copies that XNNPACK (ExecuTorch) does not delegate, splitting every attention block.
        q, k, v = (
            qkv[..., i * dim:(i + 1) * dim].reshape(batch, tokens, self.num_heads, dim // self.num_heads)
            .transpose(1, 2)
            for i in range(3)
        )
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.out_proj(y.transpose(1, 2).reshape(batch, tokens, dim))


class FeedForward(nn.Module):
    """Linear -> SiLU -> dropout -> Linear (hidden = 2d in MobileViT)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.SiLU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class TransformerLayer(nn.Module):
    """Pre-norm layer: x + mixer(LN(x)), then x + FFN(LN(x)); dropout and stochastic depth on both branches."""

    def __init__(
        self,
        dim: int,
        ffn_hidden: int,
        mixer: nn.Module,
        dropout: float = 0.0,
        ffn_dropout: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = mixer
        self.mixer_drop = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_hidden, ffn_dropout)
        self.ffn_drop = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, grid: Grid) -> Tensor:
        x = x + self.drop_path(self.mixer_drop(self.mixer(self.norm1(x), grid)))
        return x + self.drop_path(self.ffn_drop(self.ffn(self.norm2(x))))


def unfold_patches(x: Tensor, patch: tuple[int, int]) -> tuple[Tensor, Grid]:
    """[B, C, H, W] -> [B * ph * pw, n_h * n_w, C]: one sequence per pixel position inside a patch.

    Sequence b * P + (i * pw + j) holds pixel (i, j) of every patch, patches in row-major order. H and W must be
    multiples of the patch size. One permute + one copy, no loop over patches.
    """
    batch, channels, height, width = x.shape
    ph, pw = patch
    n_h, n_w = height // ph, width // pw
    x = x.reshape(batch, channels, n_h, ph, n_w, pw).permute(0, 3, 5, 2, 4, 1)
    return x.reshape(batch * ph * pw, n_h * n_w, channels), (n_h, n_w)


def fold_patches(tokens: Tensor, patch: tuple[int, int], grid: Grid) -> Tensor:
    """Inverse of `unfold_patches`: [B * ph * pw, n_h * n_w, C] -> [B, C, n_h * ph, n_w * pw]."""
    ph, pw = patch
    n_h, n_w = grid
    channels = tokens.shape[-1]
    x = tokens.reshape(-1, ph, pw, n_h, n_w, channels).permute(0, 5, 3, 1, 4, 2)
    return x.reshape(-1, channels, n_h * ph, n_w * pw)


class MobileViTBlock(nn.Module):
    """Local conv3x3 -> conv1x1 to width d -> unfold -> L transformer layers + LN -> fold -> conv1x1 back to C
    -> (fusion) concat with the block input -> conv3x3 2C -> C.

    Feature maps whose sides are not multiples of the patch size are resized bilinearly to the next multiple before
    unfolding and back afterwards, as the official code does, so any input size works.
    """

    def __init__(
        self,
        channels: int,
        dim: int,
        depth: int,
        patch: tuple[int, int],
        mixer_factory: MixerFactory | None = None,
        num_heads: int = 4,
        ffn_hidden: int | None = None,
        dropout: float = 0.0,
        attn_drop: float = 0.0,
        ffn_dropout: float = 0.0,
        drop_path_rates: Sequence[float] = (),
        fusion: bool = True,
    ) -> None:
        super().__init__()
        drop_path_rates = list(drop_path_rates) or [0.0] * depth
        if len(drop_path_rates) != depth:
            raise ValueError(f"need {depth} drop-path rates, got {len(drop_path_rates)}")
        self.patch = patch
        self.local_conv = ConvBnAct(channels, channels, 3)
        self.to_tokens = nn.Conv2d(channels, dim, 1, bias=False)

        def make_mixer() -> nn.Module:
            if mixer_factory is None:
                return MultiHeadSelfAttention(dim, num_heads, attn_drop)
            return mixer_factory(dim, num_heads)

        self.transformer = nn.ModuleList(
            TransformerLayer(dim, ffn_hidden or 2 * dim, make_mixer(), dropout, ffn_dropout, rate)
            for rate in drop_path_rates
        )
        self.final_norm = nn.LayerNorm(dim)
        self.from_tokens = ConvBnAct(dim, channels, 1)
        self.fuse = ConvBnAct(2 * channels, channels, 3) if fusion else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.to_tokens(self.local_conv(x))
        height, width = y.shape[-2:]
        ph, pw = self.patch
        # Next multiple of the patch size, in integer arithmetic (plain ints in export traces too).
        padded = ((height + ph - 1) // ph * ph, (width + pw - 1) // pw * pw)
        resized = padded != (height, width)
        if resized:
            y = F.interpolate(y, size=padded, mode="bilinear", align_corners=False)
        tokens, grid = unfold_patches(y, self.patch)
        for layer in self.transformer:
            tokens = layer(tokens, grid)
        y = fold_patches(self.final_norm(tokens), self.patch, grid)
        if resized:
            y = F.interpolate(y, size=(height, width), mode="bilinear", align_corners=False)
        y = self.from_tokens(y)
        return y if self.fuse is None else self.fuse(torch.cat((x, y), dim=1))
