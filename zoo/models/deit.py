"""DeiT (Touvron et al., arXiv 2012.12877): timm's ViT built so one instance takes any input size.

`dynamic_img_size` resamples the 14x14 position embedding to the input's patch grid on every forward, and
`dynamic_img_pad` pads the image up to a multiple of the 16-pixel patch, so sizes such as 200 run too.

Family hooks: built at the run's base resolution (its position grid is tied to the construction size), and for
export the resample is baked: timm skips its size-match early-out while exporting (`is_exporting()`), so the
antialiased bicubic resize (`aten._upsample_bicubic2d_aa`, which no phone exporter lowers) would appear in the
graph even at the construction size. The resample depends only on the weights and the input size, so at a fixed
size it is a constant, evaluated once in eager mode by timm's own function and added from a buffer.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

from zoo.models.export import BAKED_BUFFER, reclass
from zoo.models.features import FeatureLevel, StagedFeatures, halve
from zoo.models.registry import FamilyHooks, Published
from zoo.models.timm_bridge import register_timm

__all__ = ["DeiTFeatures", "bake_deit_for_export", "deit_tiny", "token_grid"]


def token_grid(model: VisionTransformer, resolution: int) -> tuple[int, int]:
    """The patch grid a DeiT makes from a square image of `resolution` pixels."""
    # dynamic_img_pad pads up to the next multiple of the patch: ceil division.
    return tuple(-(-resolution // p) for p in model.patch_embed.patch_size)  # type: ignore[return-value]


def _baked_pos_embed(self: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    # timm's `_pos_embed` for the dynamic-size path (patch embed output NHWC), with the resample replaced by the
    # stored result. Class/register tokens are concatenated first, as timm does when no_embed_class is False.
    batch, _, _, channels = x.shape
    x = x.view(batch, -1, channels)
    to_cat = []
    if self.cls_token is not None:
        to_cat.append(self.cls_token.expand(batch, -1, -1))
    if self.reg_token is not None:
        to_cat.append(self.reg_token.expand(batch, -1, -1))
    pos_embed = getattr(self, BAKED_BUFFER)
    if self.no_embed_class:
        x = x + pos_embed
        x = torch.cat(to_cat + [x], dim=1) if to_cat else x
    else:
        x = torch.cat(to_cat + [x], dim=1) if to_cat else x
        x = x + pos_embed
    return self.pos_drop(x)


def bake_deit_for_export(model: nn.Module, resolution: int) -> None:
    """In place, on an eval copy: the position embedding resampled for `resolution`, stored as a buffer."""
    if not getattr(model, "dynamic_img_size", False) or model.pos_embed is None:
        return  # fixed-size ViT: pos_embed is added as is, nothing to bake
    with torch.no_grad():
        baked = resample_abs_pos_embed(
            model.pos_embed,
            new_size=token_grid(model, resolution),
            old_size=model.patch_embed.grid_size,
            num_prefix_tokens=0 if model.no_embed_class else model.num_prefix_tokens,
        )
    model.register_buffer(BAKED_BUFFER, baked.detach().clone(), persistent=False)
    reclass(model, {"_pos_embed": _baked_pos_embed})


class DeiTFeatures(StagedFeatures):
    """The features hook, a family adaptation: a plain ViT has one stride, its patch's 16. Stride 16 is the last
    block's tokens after the final norm, class token dropped, on the padded patch grid (timm's
    `forward_intermediates`, with the same dynamic size and padding as the classifier); stride 32 is a 2x2
    max-pool of it (`zoo.models.features.halve`), as ViTDet's simple feature pyramid. No parameters are added,
    and no finer level is made (ViTDet's deconvolutions would be new, untrained layers)."""

    def __init__(self, model: VisionTransformer) -> None:
        patch, dim = model.patch_embed.patch_size[0], model.embed_dim
        super().__init__(model, [FeatureLevel(patch, dim), FeatureLevel(2 * patch, dim)])
        model.prune_intermediate_layers(1, prune_norm=False, prune_head=True)  # keeps every block and the norm

    def stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if index == 1:
            return halve(x)
        return self.model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)[0]


DEIT_HOOKS = FamilyHooks(sized_at_base_resolution=True, bake_for_export=bake_deit_for_export,
                         features=DeiTFeatures)


deit_tiny = register_timm(
    "deit_tiny", "deit_tiny_patch16_224", family="deit", hooks=DEIT_HOOKS,
    defaults={"dynamic_img_size": True, "dynamic_img_pad": True},
    published=Published(params_m=5.7, gmacs=1.26, resolution=224, top1=72.2, source="DeiT-Ti, arXiv 2012.12877",
                        arxiv="2012.12877", epochs=300, distilled=False, paper_device="iPhone 12 Neural Engine",
                        paper_latency_ms=10.99, paper_cpu_latency_ms=28.15, latency_source="arXiv 2110.02178 Table 3"),
    description="DeiT-Ti: 12 layers, width 192, 3 heads, patch 16, class token (timm deit_tiny_patch16_224)")
