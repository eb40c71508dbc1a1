"""One registry for every zoo model: name -> factory plus the published figures we check against."""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch.nn as nn


@dataclass(frozen=True)
class Published:
    """Figures a paper reports for a model (1000 classes), used by tests, the reproduction table and the
    architecture board. Figures from papers, never from our runs; None where the paper (or what we know of it)
    does not say. `resolution` is the paper's (ImageNet train/test) resolution of `top1`."""

    params_m: float | None = None
    gmacs: float | None = None
    resolution: int | None = None
    top1: float | None = None
    source: str = ""
    # Citation of `top1` and what produced it (the architecture board's "published" columns).
    arxiv: str | None = None  # e.g. "2110.02178"
    table: str | None = None  # where in the paper, e.g. "Table 3"; None when not checked
    epochs: int | None = None  # ImageNet training epochs behind `top1`
    distilled: bool | None = None  # knowledge distillation behind `top1`
    # The paper's own latency figure for this model, on the paper's device (`latency_source` when another
    # paper's table timed it, e.g. MobileViT's Table 3 timing MobileNetV2).
    paper_device: str | None = None
    paper_latency_ms: float | None = None
    latency_source: str | None = None
    # The same table's CPU figure on that device, where it gives one (MobileViT's Table 3: Neural Engine and CPU).
    paper_cpu_latency_ms: float | None = None
    # The registry name of the model the paper sets this one against (PiT-Ti against DeiT-Ti: about half the
    # GMACs, hardly less latency); `paper_comparisons` lists the pairs, the report tests them on our measurements.
    compared_with: str | None = None


@dataclass(frozen=True)
class FamilyHooks:
    """What a family needs beyond its factory, declared in the family's own file and passed to `register`.

    Shared code (the training parts, export preparation, every latency backend) asks the family through these
    hooks instead of naming families, so adding a family touches its file and its registration only.
    """

    # Built at the run's base resolution (the factory gets `img_size`): a learned position grid tied to the
    # construction size, so the fixed sampler never resizes it (DeiT, PiT).
    sized_at_base_resolution: bool = False
    # In place, on an eval-mode copy: make the graph at `resolution` static (bake run-time resizes, index
    # rebuilds) so phone exporters lower it. Logits at that size must stay the eager model's.
    bake_for_export: Callable[[nn.Module, int], None] | None = None
    # The fused inference model (structural reparameterisation: FastViT, RepViT, MobileOne branches).
    # Training, checkpoints and accuracy use the unfused model; every export and timing uses this one.
    reparameterize: Callable[[nn.Module], nn.Module] | None = None
    # Multi-scale features of a family timm's `forward_intermediates` does not serve (ours, or a timm model whose
    # version is tied to the construction size): the classifier in, a module speaking timm's feature protocol out
    # (`feature_info`, `forward_intermediates`, `prune_intermediate_layers`; `zoo.models.features.StagedFeatures`).
    features: Callable[[nn.Module], nn.Module] | None = None


NO_HOOKS = FamilyHooks()


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    factory: Callable[..., nn.Module]
    published: Published
    description: str = ""
    hooks: FamilyHooks = NO_HOOKS
    # Paper figures of knob variants, keyed by `model_label` (MobileViT-S's patch-size ablations).
    variants: Mapping[str, Published] = field(default_factory=dict)


class UnknownModelError(ValueError):
    """Raised for a model name the registry does not know; the message lists the known ones."""


_REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, family: str, published: Published | None = None, description: str = "",
             hooks: FamilyHooks = NO_HOOKS, variants: Mapping[str, Published] | None = None):
    """Decorator: register `factory(num_classes=..., drop_path_rate=..., **knobs) -> nn.Module` as `name`;
    `variants`: the paper's figures of knob variants, keyed by their `model_label`."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        for label in variants or {}:
            if model_name(label) != name or label == name:
                raise ValueError(f"{name}: variant {label!r} is not a knob variant of it (model_label)")
        _REGISTRY[name] = ModelEntry(name, family, factory, published or Published(), description, hooks,
                                     dict(variants or {}))
        return factory

    return wrap


# Every lookup below sees every family: importing this module imports the `zoo.models` package first, whose
# __init__ imports each family module (which registers its models).
def list_models(family: str | None = None) -> list[str]:
    return sorted(n for n, e in _REGISTRY.items() if family is None or e.family == family)


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        known = sorted(_REGISTRY)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownModelError(f"unknown model {name!r}.{hint} Known models: {', '.join(known)}")
    return _REGISTRY[name]


MODEL_NAME_ATTR = "zoo_model_name"  # set on every model `create` builds: how shared code finds its family hooks


def create(name: str, num_classes: int = 1000, **knobs) -> nn.Module:
    """Build a registered model. Every factory accepts `num_classes` and `drop_path_rate`."""
    model = get_entry(name).factory(num_classes=num_classes, **knobs)
    setattr(model, MODEL_NAME_ATTR, name)  # a plain attribute: not in the state_dict, kept by deepcopy
    return model


def hooks_of(model: nn.Module) -> FamilyHooks:
    """The family hooks of a model built by `create` (a model built another way has none)."""
    name = getattr(model, MODEL_NAME_ATTR, None)
    return get_entry(name).hooks if name else NO_HOOKS


def model_label(name: str, kwargs: dict | None = None) -> str:
    """How a built architecture is named in stores and boards: the registry name, plus its knobs when it has any
    (`mobilevit_xxs[patch_size=[4, 4, 4]]`), so a knob variant is never measured or shown as the default model."""
    if not kwargs:
        return name
    return name + "[" + ",".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in sorted(kwargs.items())) + "]"


def model_name(label: str) -> str:
    """The registry name inside a `model_label`."""
    return label.split("[", 1)[0]


DEFAULT_DEPLOY_RESOLUTION = 224  # a model without a published resolution is deployed at ImageNet's usual size


def deploy_resolution(label: str, overrides: Mapping[str, int] | None = None) -> int:
    """The one place a model's deployment resolution is decided: `overrides[label]` (or of its registry name,
    e.g. `measure.deploy_resolutions`), else the paper's resolution, else 224."""
    overrides = overrides or {}
    name = model_name(label)
    return overrides.get(label) or overrides.get(name) or get_entry(name).published.resolution \
        or DEFAULT_DEPLOY_RESOLUTION


def fused_for_export(labels: list[str] | tuple[str, ...]) -> list[str]:
    """Those of `labels` whose family reparameterises (fuses branches) before every export and latency, eager
    included: boards say so, since their figures are the fused graph's and their accuracy the unfused model's."""
    return [label for label in labels if get_entry(model_name(label)).hooks.reparameterize is not None]


def published(label: str) -> Published:
    """The paper's figures of a model or knob variant (`model_label`): the registry name's own, a registered
    variant's, or an empty entry for another knob variant (the default model's figures do not describe it).
    An unknown name raises `UnknownModelError`."""
    entry = get_entry(model_name(label))
    if label == entry.name:
        return entry.published
    return entry.variants.get(label) or Published(source="knob variant: no paper figure")


def published_variants(name: str) -> dict[str, Published]:
    """The knob variants of model `name` that a paper reports, label -> figures, in registration order."""
    return dict(get_entry(name).variants)


def paper_comparisons() -> list[tuple[str, str]]:
    """(model, the model its paper sets it against) for every registered model with `compared_with`, by name."""
    return [(name, entry.published.compared_with) for name, entry in sorted(_REGISTRY.items())
            if entry.published.compared_with]
