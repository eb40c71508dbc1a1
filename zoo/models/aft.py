"""AFT models (Zhai et al., arXiv 2105.14103) and AFT mixers inside MobileViT.

Registered models (family "aft"):
- `aft_conv_tiny`      DeiT-tiny layout (patch 16, 12 pre-norm layers, width 192, MLP ratio 4) with AFT-conv,
                       kernel 11, 32 heads in place of attention; no position embedding, no class token, global
                       average pooling. Knob `heads` (e.g. 192), `kernel_size`.
- `aft_conv_tiny_h192` the same with 192 heads.
- `aft_full_tiny`      DeiT-tiny layout with AFT-full (rank-128 bias built for a 14 x 14 grid) and a class token.
                       No position embedding either: the pair-wise bias already encodes position, and a fixed-size
                       embedding would need resizing at every other resolution.
- `mobilevit_xs_aft`   MobileViT-XS with AFT-conv (kernel 3: the token grids there are 4..16 tokens a side).
- `mobilevit_xxs_aft`  MobileViT-XXS with AFT-simple: position-free like MobileViT's attention (which has no
                       position embedding either) and with exactly its parameters (4 d^2 + 4 d per layer), so
                       `mobilevit_xxs` vs `mobilevit_xxs_aft` isolates attention vs attention-free at equal size,
                       at O(T d) instead of O(T^2 d); XS covers the positional (conv) variant.

Any input size runs: the patch embedding pads the image up to a multiple of 16 (timm's `dynamic_img_pad`), AFT-full
resizes its bias maps to the token grid, AFT-conv is a convolution. The class token of `aft_full_tiny` is owned by
the model (prepended after the patch embedding, read out after the final norm); its AFT-full layers are built with
`num_prefix_tokens=1`, which gives it a zero position bias to and from every patch.

The mixers `aft_conv` (kernel 3) and `aft_simple` are also offered to MobileViT by name, e.g.
`create("mobilevit_s", mixer="aft_conv")`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import partial
from typing import Any

import torch
import torch.nn as nn
from timm.layers import DropPath, Mlp, PatchEmbed
from torch import Tensor

from zoo.models.aft_layers import AFTConv, AFTFull, AFTSimple, Grid
from zoo.models.features import FeatureLevel, StagedFeatures, halve
from zoo.models.mobilevit import MOBILEVIT_HOOKS, build_mobilevit, register_mixer
from zoo.models.registry import FamilyHooks, Published, register

__all__ = ["AftViTConfig", "AftBlock", "AftViT", "AftViTFeatures", "build_aft_vit", "AFT_VARIANTS"]


@dataclass(frozen=True)
class AftViTConfig:
    """An isotropic (DeiT-like) transformer whose token mixer is an AFT layer."""

    mixer: str = "conv"  # "conv" | "full"
    embed_dim: int = 192
    depth: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    heads: int = 32  # AFT-conv only
    kernel_size: int = 11  # AFT-conv only
    rank: int = 128  # AFT-full only
    construction_grid: Grid = (14, 14)  # AFT-full only: the grid its bias maps are stored at
    class_token: bool = False
    drop_rate: float = 0.0  # head dropout
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.mixer not in ("conv", "full"):
            raise ValueError(f"AFT mixer must be 'conv' or 'full', got {self.mixer!r}")


AFT_VARIANTS: dict[str, AftViTConfig] = {
    "conv_tiny": AftViTConfig(mixer="conv", heads=32, kernel_size=11),
    "conv_tiny_h192": AftViTConfig(mixer="conv", heads=192, kernel_size=11),
    "full_tiny": AftViTConfig(mixer="full", class_token=True),
}


class AftBlock(nn.Module):
    """Pre-norm transformer layer: x + mixer(LN(x), grid), then x + MLP(LN(x)); stochastic depth on both."""

    def __init__(self, dim: int, mixer: nn.Module, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = mixer
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, grid: Grid) -> Tensor:
        x = x + self.drop_path(self.mixer(self.norm1(x), grid))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class AftViT(nn.Module):
    """patch embed (padded to a multiple of the patch) -> [class token] -> AFT blocks -> LN -> pool -> head."""

    def __init__(self, config: AftViTConfig, num_classes: int = 1000) -> None:
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.patch_embed = PatchEmbed(
            img_size=None,
            patch_size=config.patch_size,
            embed_dim=dim,
            output_fmt="NHWC",  # keeps the token grid shape visible
            strict_img_size=False,
            dynamic_img_pad=True,
        )
        self.num_prefix_tokens = 1 if config.class_token else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if config.class_token else None
        rates = torch.linspace(0, config.drop_path_rate, config.depth).tolist()
        self.blocks = nn.ModuleList(AftBlock(dim, self._make_mixer(), config.mlp_ratio, r) for r in rates)
        self.norm = nn.LayerNorm(dim)
        self.num_features = dim
        self.head_drop = nn.Dropout(config.drop_rate)
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _make_mixer(self) -> nn.Module:
        c = self.config
        if c.mixer == "conv":
            return AFTConv(c.embed_dim, c.heads, c.kernel_size)
        return AFTFull(c.embed_dim, c.rank, c.construction_grid, num_prefix_tokens=self.num_prefix_tokens)

    def _init_weights(self) -> None:
        # DeiT-style N(0, 0.02) for linears and the class token (DeiT's truncation at +-2 is 100 std away, so a
        # plain normal is the same and far faster to draw); mixers initialise themselves.
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)
        for block in self.blocks:
            for module in block.mlp.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, std=0.02)
                    nn.init.zeros_(module.bias)
        if isinstance(self.head, nn.Linear):
            nn.init.normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] -> normalised tokens [B, prefix + ceil(H/16) * ceil(W/16), dim]."""
        x = self.patch_embed(x)  # [B, n_h, n_w, dim]
        grid = (x.shape[1], x.shape[2])
        x = x.flatten(1, 2)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for block in self.blocks:
            x = block(x, grid)
        return self.norm(x)

    def forward_head(self, tokens: Tensor) -> Tensor:
        pooled = tokens[:, 0] if self.cls_token is not None else tokens.mean(dim=1)
        return self.head(self.head_drop(pooled))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class AftViTFeatures(StagedFeatures):
    """The features hook, a family adaptation (an isotropic ViT has one stride, the patch's 16), as DeiT's:
    stride 16 is the final-norm tokens laid out on their ceil(H/16) x ceil(W/16) grid (AFT-full's class token
    dropped), stride 32 a 2x2 max-pool of it (`zoo.models.features.halve`, ViTDet's simple pyramid)."""

    def __init__(self, model: AftViT) -> None:
        patch, dim = model.config.patch_size, model.num_features
        super().__init__(model, [FeatureLevel(patch, dim), FeatureLevel(2 * patch, dim)])
        model.head_drop, model.head = nn.Identity(), nn.Identity()

    def stage(self, index: int, x: Tensor) -> Tensor:
        if index == 1:
            return halve(x)
        model, patch = self.model, self.model.config.patch_size
        rows, cols = -(-x.shape[-2] // patch), -(-x.shape[-1] // patch)  # the padded patch grid
        tokens = model.forward_features(x)[:, model.num_prefix_tokens:]
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, rows, cols)


AFT_HOOKS = FamilyHooks(features=AftViTFeatures)


def build_aft_vit(
    variant: str | AftViTConfig,
    num_classes: int = 1000,
    drop_path_rate: float = 0.0,
    drop_rate: float | None = None,
    **knobs: Any,
) -> AftViT:
    """Build an AFT transformer from a named variant (see `AFT_VARIANTS`) or a config, with config-field knobs."""
    if isinstance(variant, str):
        if variant not in AFT_VARIANTS:
            raise ValueError(f"unknown AFT variant {variant!r}; known: {', '.join(AFT_VARIANTS)}")
        variant = AFT_VARIANTS[variant]
    allowed = {f.name for f in fields(AftViTConfig)} - {"drop_rate", "drop_path_rate"}
    unknown = set(knobs) - allowed
    if unknown:
        raise TypeError(f"unknown AFT knob(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    if "construction_grid" in knobs:
        knobs["construction_grid"] = tuple(knobs["construction_grid"])
    overrides: dict[str, Any] = {"drop_path_rate": drop_path_rate, **knobs}
    if drop_rate is not None:  # None keeps the variant's own head dropout
        overrides["drop_rate"] = drop_rate
    return AftViT(replace(variant, **overrides), num_classes=num_classes)


def _aft_factory(variant: str):
    def create(
        num_classes: int = 1000, drop_path_rate: float = 0.0, drop_rate: float | None = None, **knobs: Any
    ) -> AftViT:
        return build_aft_vit(variant, num_classes, drop_path_rate, drop_rate, **knobs)

    create.__name__ = f"aft_{variant}"
    return create


_PAPER = "AFT paper Table (ImageNet, DeiT recipe, 224), arXiv 2105.14103"
for _variant, _params_m, _top1, _description in (
    ("conv_tiny", 5.4, 73.9, "AFT-conv tiny: DeiT-tiny layout, AFT-conv kernel 11, 32 heads, GAP, no class token / "
     "pos embed"),
    ("conv_tiny_h192", 5.9, 74.8, "AFT-conv tiny with 192 heads (one channel per head)"),
    ("full_tiny", 6.3, 72.4, "AFT-full tiny: DeiT-tiny layout, AFT-full (rank-128 bias, 14x14 grid), class token"),
):
    register(f"aft_{_variant}", family="aft", description=_description, hooks=AFT_HOOKS,
             published=Published(params_m=_params_m, resolution=224, top1=_top1, source=_PAPER, arxiv="2105.14103"),
             )(_aft_factory(_variant))


# --- AFT inside MobileViT (beyond the paper) ------------------------------------------------------------------------
def _aft_conv_mixer(dim: int, heads: int, kernel_size: int = 3) -> nn.Module:
    return AFTConv(dim, heads, kernel_size)


def _aft_simple_mixer(dim: int, heads: int) -> nn.Module:
    return AFTSimple(dim)  # no heads: every channel is its own softmax over tokens


register_mixer("aft_conv", _aft_conv_mixer)
register_mixer("aft_simple", _aft_simple_mixer)

_NO_PUBLISHED = Published(resolution=256, source="not in any paper: zoo's AFT-in-MobileViT variant")


@register(
    "mobilevit_xs_aft",
    family="aft",
    published=_NO_PUBLISHED,
    description="MobileViT-XS with AFT-conv (kernel 3, 4 heads) in place of self-attention",
    hooks=MOBILEVIT_HOOKS,
)
def mobilevit_xs_aft(
    num_classes: int = 1000,
    drop_path_rate: float = 0.0,
    drop_rate: float | None = None,
    kernel_size: int = 3,
    **knobs: Any,
) -> nn.Module:
    mixer = partial(_aft_conv_mixer, kernel_size=kernel_size)
    return build_mobilevit(
        "xs", num_classes, mixer, drop_path_rate=drop_path_rate, drop_rate=drop_rate, **knobs
    )


@register(
    "mobilevit_xxs_aft",
    family="aft",
    published=_NO_PUBLISHED,
    description="MobileViT-XXS with AFT-simple in place of self-attention (same parameter count)",
    hooks=MOBILEVIT_HOOKS,
)
def mobilevit_xxs_aft(
    num_classes: int = 1000, drop_path_rate: float = 0.0, drop_rate: float | None = None, **knobs: Any
) -> nn.Module:
    return build_mobilevit(
        "xxs", num_classes, _aft_simple_mixer, drop_path_rate=drop_path_rate, drop_rate=drop_rate, **knobs
    )
