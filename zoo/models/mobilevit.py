"""MobileViT XXS / XS / S (Mehta & Rastegari, arXiv 2110.02178), written from the paper's tables.

Public API
----------
`build_mobilevit(variant, num_classes=1000, mixer_factory=None, **knobs) -> MobileViT`
    variant: "xxs" | "xs" | "s". Knobs (all optional):
      patch_size            int or 3 ints, one per MobileViT stage, e.g. 2, (4, 4, 4), (8, 4, 2); square patches
      fusion                True: concat(block input, transformer output) -> conv3x3 (paper); False: no skip
      transformer_dims      3 ints, token width d per MobileViT stage
      transformer_depths    3 ints, transformer layers L per MobileViT stage
      num_heads             attention heads (4)
      transformer_dropout   dropout after the mixer and after the FFN (default 0.05 XXS, 0.1 XS/S)
      attn_drop             dropout on attention weights (0.0, as the official configs)
      ffn_dropout           dropout inside the FFN (0.0)
      drop_rate             head dropout before the classifier (None = 0.1)
      drop_path_rate        stochastic depth, rising linearly over all transformer layers to this value
    mixer_factory: `(dim, num_heads) -> nn.Module` whose forward is `mixer(x[B, T, C], grid=(n_h, n_w))`; it
      replaces self-attention in every transformer layer (a registered mixer name is accepted too). Tokens of one
      pixel group form an (H/ph) x (W/pw) grid in row-major order. External mixers keep their own initialisation.

`register_mixer(name, factory)` lets other families offer a mixer by name; the registered models
`mobilevit_xxs/xs/s` accept `mixer="attention"` (default), a registered name, or a factory.

`load_timm_state_dict(model, state_dict)` loads a timm `mobilevit_*` checkpoint through `timm_key_to_zoo`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from zoo.models.mobilevit_blocks import (
    ConvBnAct,
    InvertedResidual,
    MixerFactory,
    MobileViTBlock,
    MultiHeadSelfAttention,
)
from zoo.models.features import FeatureLevel, StagedFeatures
from zoo.models.registry import FamilyHooks, Published, register

__all__ = [
    "MobileViTConfig",
    "MobileViT",
    "VARIANTS",
    "build_mobilevit",
    "register_mixer",
    "resolve_mixer",
    "timm_key_to_zoo",
    "load_timm_state_dict",
    "MobileViTFeatures",
    "MOBILEVIT_HOOKS",
]


@dataclass(frozen=True)
class MobileViTConfig:
    """One MobileViT variant. `channels` = (stem, layer1, ..., layer5); layers 3-5 end in a MobileViT block."""

    channels: tuple[int, int, int, int, int, int]
    transformer_dims: tuple[int, int, int]
    mv2_expansion: float
    transformer_dropout: float
    transformer_depths: tuple[int, int, int] = (2, 4, 3)
    patch_size: tuple[int, int, int] = (2, 2, 2)
    num_heads: int = 4
    ffn_ratio: float = 2.0
    attn_drop: float = 0.0
    ffn_dropout: float = 0.0
    drop_rate: float = 0.1
    drop_path_rate: float = 0.0
    fusion: bool = True

    @property
    def last_channels(self) -> int:
        # conv1x1 after layer5 widens to 4x, capped at 960 (paper Table 4).
        return min(4 * self.channels[-1], 960)


VARIANTS: dict[str, MobileViTConfig] = {
    "xxs": MobileViTConfig((16, 16, 24, 48, 64, 80), (64, 80, 96), mv2_expansion=2, transformer_dropout=0.05),
    "xs": MobileViTConfig((16, 32, 48, 64, 80, 96), (96, 120, 144), mv2_expansion=4, transformer_dropout=0.1),
    "s": MobileViTConfig((16, 32, 64, 96, 128, 160), (144, 192, 240), mv2_expansion=4, transformer_dropout=0.1),
}

_MIXERS: dict[str, MixerFactory] = {}


def register_mixer(name: str, factory: MixerFactory) -> None:
    """Offer a token mixer by name: `factory(dim, num_heads) -> module(x, grid)`."""
    if name == "attention" or name in _MIXERS:
        raise ValueError(f"mixer {name!r} registered twice")
    _MIXERS[name] = factory


def resolve_mixer(mixer: str | MixerFactory | None) -> MixerFactory | None:
    """None/"attention" -> None (built-in attention); a registered name or a factory -> that factory."""
    if mixer is None or mixer == "attention":
        return None
    if callable(mixer):
        return mixer
    if mixer in _MIXERS:
        return _MIXERS[mixer]
    raise ValueError(f"unknown mixer {mixer!r}; known: {', '.join(['attention', *sorted(_MIXERS)])}")


class MobileViT(nn.Module):
    """stem -> layer1..layer5 -> conv1x1 -> global average pool -> dropout -> linear."""

    def __init__(self, config: MobileViTConfig, num_classes: int = 1000, mixer_factory: MixerFactory | None = None):
        super().__init__()
        self.config = config
        stem, *widths = config.channels
        self.stem = ConvBnAct(3, stem, 3, stride=2)

        total_layers = sum(config.transformer_depths)
        rates = torch.linspace(0, config.drop_path_rate, total_layers).tolist() if total_layers else []
        layers: list[nn.Sequential] = []
        in_ch = stem
        for index, out_ch in enumerate(widths):
            stride = 1 if index == 0 else 2
            blocks_count = 3 if index == 1 else 1  # layer2 is MV2 x3, the others open with a single MV2
            blocks: list[nn.Module] = []
            for b in range(blocks_count):
                blocks.append(InvertedResidual(in_ch, out_ch, stride if b == 0 else 1, config.mv2_expansion))
                in_ch = out_ch
            if index >= 2:
                vit = index - 2
                depth = config.transformer_depths[vit]
                dim = config.transformer_dims[vit]
                start = sum(config.transformer_depths[:vit])
                blocks.append(
                    MobileViTBlock(
                        out_ch,
                        dim,
                        depth,
                        (config.patch_size[vit], config.patch_size[vit]),
                        mixer_factory=mixer_factory,
                        num_heads=config.num_heads,
                        ffn_hidden=int(dim * config.ffn_ratio),
                        dropout=config.transformer_dropout,
                        attn_drop=config.attn_drop,
                        ffn_dropout=config.ffn_dropout,
                        drop_path_rates=rates[start : start + depth],
                        fusion=config.fusion,
                    )
                )
            layers.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*layers)
        self.num_features = config.last_channels
        self.final_conv = ConvBnAct(in_ch, self.num_features, 1)
        self.head_drop = nn.Dropout(config.drop_rate)
        self.classifier = nn.Linear(self.num_features, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # Kaiming for convs, truncated normal for linears, zeros for biases, unit norms; modules inside external
        # mixers (e.g. AFT) are left to their own initialisation.
        external: set[int] = set()
        for module in self.modules():
            mixer = getattr(module, "mixer", None)
            if isinstance(mixer, nn.Module) and not isinstance(mixer, MultiHeadSelfAttention):
                external.update(id(m) for m in mixer.modules())
        for module in self.modules():
            if id(module) in external:
                continue
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, num_features, H/32, W/32]."""
        return self.final_conv(self.layers(self.stem(x)))

    def forward_head(self, features: Tensor) -> Tensor:
        return self.classifier(self.head_drop(features.mean(dim=(2, 3))))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _triple(value: int | Sequence[int], name: str) -> tuple[int, int, int]:
    values = (value,) * 3 if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != 3 or any(v < 1 for v in values):
        raise ValueError(f"{name} needs one positive int or 3 of them (one per MobileViT stage), got {value!r}")
    return values  # type: ignore[return-value]


def build_mobilevit(
    variant: str,
    num_classes: int = 1000,
    mixer_factory: MixerFactory | str | None = None,
    **knobs: Any,
) -> MobileViT:
    """Build MobileViT `variant` ("xxs", "xs", "s") with optional knobs (see the module docstring)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown MobileViT variant {variant!r}; known: {', '.join(VARIANTS)}")
    allowed = {f.name for f in fields(MobileViTConfig)} - {"channels", "mv2_expansion", "ffn_ratio"}
    unknown = set(knobs) - allowed
    if unknown:
        raise TypeError(f"unknown MobileViT knob(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    overrides = {k: v for k, v in knobs.items() if v is not None}  # None = keep the variant's default
    for key in ("patch_size", "transformer_dims", "transformer_depths"):
        if key in overrides:
            overrides[key] = _triple(overrides[key], key)
    config = replace(VARIANTS[variant], **overrides)
    return MobileViT(config, num_classes=num_classes, mixer_factory=resolve_mixer(mixer_factory))


def _factory(variant: str):
    def create(
        num_classes: int = 1000,
        drop_path_rate: float = 0.0,
        drop_rate: float | None = None,
        mixer: str | MixerFactory = "attention",
        **knobs: Any,
    ) -> MobileViT:
        return build_mobilevit(
            variant, num_classes, mixer, drop_path_rate=drop_path_rate, drop_rate=drop_rate, **knobs
        )

    create.__name__ = f"mobilevit_{variant}"
    create.__doc__ = f"MobileViT-{variant.upper()}; knobs as `build_mobilevit`, plus `mixer`."
    return create


class MobileViTFeatures(StagedFeatures):
    """The features hook: strides 2, 4, 8, 16, 32 are the outputs of layer1..layer5 (layer1 keeps the stem's
    stride 2), the stride-32 one after the final 1x1 conv (`last_channels` wide), as timm's MobileViT features.
    Any input size: the MobileViT blocks resize a map that is not a multiple of the patch and back again."""

    def __init__(self, model: MobileViT) -> None:
        widths = model.config.channels[1:5]
        levels = [FeatureLevel(s, c) for s, c in zip((2, 4, 8, 16), widths)] + [FeatureLevel(32, model.num_features)]
        super().__init__(model, levels)
        model.head_drop, model.classifier = nn.Identity(), nn.Identity()

    def stage(self, index: int, x: Tensor) -> Tensor:
        model = self.model
        x = model.layers[index](model.stem(x) if index == 0 else x)
        return model.final_conv(x) if index == len(model.layers) - 1 else x

    def prune_after(self, index: int) -> None:
        for later in range(index + 1, len(self.model.layers)):
            self.model.layers[later] = nn.Identity()
        if index < len(self.model.layers) - 1:
            self.model.final_conv = nn.Identity()


MOBILEVIT_HOOKS = FamilyHooks(features=MobileViTFeatures)

_PAPER = "MobileViT paper"
_ABLATION = "arXiv 2110.02178, patch-size ablation (MobileViT-S)"
_S = Published(params_m=5.579, gmacs=2.0, resolution=256, arxiv="2110.02178", epochs=300, distilled=False,
               source="MobileViT paper, ablations on MobileViT-S")
# MobileViT-S ablations (papers.md): patch sizes (iPhone 12 ms, top-1) and the fusion's concat skip off (top-1 only).
_S_ABLATIONS = {
    "mobilevit_s[patch_size=[3, 3, 3]]": replace(_S, top1=78.5, paper_device="iPhone 12", paper_latency_ms=14.69,
                                                 latency_source=_ABLATION),
    "mobilevit_s[patch_size=[4, 4, 4]]": replace(_S, top1=77.6, paper_device="iPhone 12", paper_latency_ms=8.23,
                                                 latency_source=_ABLATION),
    "mobilevit_s[patch_size=[8, 4, 2]]": replace(_S, top1=77.3, paper_device="iPhone 12", paper_latency_ms=8.20,
                                                 latency_source=_ABLATION),
    "mobilevit_s[fusion=false]": replace(_S, top1=77.9),
}
_COMMON = dict(resolution=256, source=_PAPER, arxiv="2110.02178", epochs=300, distilled=False)
for _size, _published, _variants in (
    ("xxs", Published(params_m=1.272, gmacs=0.41, top1=69.0, **_COMMON), None),
    ("xs", Published(params_m=2.318, gmacs=1.03, top1=74.8, paper_device="iPhone 12 Neural Engine",
                     paper_latency_ms=7.28, paper_cpu_latency_ms=17.86, latency_source="arXiv 2110.02178 Table 3",
                     **_COMMON), None),
    ("s", Published(params_m=5.579, gmacs=2.0, top1=78.4, paper_device="iPhone 12", paper_latency_ms=9.85,
                    latency_source=_ABLATION, **_COMMON), _S_ABLATIONS),
):
    register(f"mobilevit_{_size}", family="mobilevit", published=_published, hooks=MOBILEVIT_HOOKS,
             description=f"MobileViT-{_size.upper()}, own implementation (GMACs approximate)",
             variants=_variants)(_factory(_size))


# --- timm checkpoint conversion -----------------------------------------------------------------------------------
# (timm pattern, our replacement), applied in order, first match wins. timm names a stage's MV2 blocks
# stages.i.j and its MobileViT block stages.i.1 (i >= 2); we keep the same indices under `layers`.
_TIMM_KEY_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), r)
    for p, r in [
        (r"^stem\.(conv|bn)\.", r"stem.\1."),
        (r"^stages\.(\d+)\.(\d+)\.conv1_1x1\.", r"layers.\1.\2.expand."),
        (r"^stages\.(\d+)\.(\d+)\.conv2_kxk\.", r"layers.\1.\2.depthwise."),
        (r"^stages\.(\d+)\.(\d+)\.conv3_1x1\.", r"layers.\1.\2.project."),
        (r"^stages\.(\d+)\.(\d+)\.conv_kxk\.", r"layers.\1.\2.local_conv."),
        (r"^stages\.(\d+)\.(\d+)\.conv_1x1\.", r"layers.\1.\2.to_tokens."),
        (r"^stages\.(\d+)\.(\d+)\.transformer\.(\d+)\.norm([12])\.", r"layers.\1.\2.transformer.\3.norm\4."),
        (r"^stages\.(\d+)\.(\d+)\.transformer\.(\d+)\.attn\.qkv\.", r"layers.\1.\2.transformer.\3.mixer.qkv."),
        (r"^stages\.(\d+)\.(\d+)\.transformer\.(\d+)\.attn\.proj\.", r"layers.\1.\2.transformer.\3.mixer.out_proj."),
        (r"^stages\.(\d+)\.(\d+)\.transformer\.(\d+)\.mlp\.(fc[12])\.", r"layers.\1.\2.transformer.\3.ffn.\4."),
        (r"^stages\.(\d+)\.(\d+)\.norm\.", r"layers.\1.\2.final_norm."),
        (r"^stages\.(\d+)\.(\d+)\.conv_proj\.", r"layers.\1.\2.from_tokens."),
        (r"^stages\.(\d+)\.(\d+)\.conv_fusion\.", r"layers.\1.\2.fuse."),
        (r"^final_conv\.", r"final_conv."),
        (r"^head\.fc\.", r"classifier."),
    ]
]


def timm_key_to_zoo(key: str) -> str:
    """Map one timm `mobilevit_*` state-dict key to ours; raises KeyError for a key we do not know."""
    for pattern, replacement in _TIMM_KEY_RULES:
        new_key, count = pattern.subn(replacement, key)
        if count:
            return new_key
    raise KeyError(f"no mapping for timm key {key!r}")


def load_timm_state_dict(model: MobileViT, state_dict: Mapping[str, Tensor], strict: bool = True):
    """Load a timm `mobilevit_xxs/xs/s` state dict (same variant, attention mixer) into `model`."""
    converted = {timm_key_to_zoo(k): v for k, v in state_dict.items()}
    return model.load_state_dict(converted, strict=strict)
