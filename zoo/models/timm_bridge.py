"""The bridge between the zoo registry and timm, in both directions.

- `register_timm` registers a zoo model that is a timm architecture (with the family's adaptations): one call per
  model, its paper figures beside it; the factory it registers is built here, the same for every such family.
- `create_timm_model` builds a timm architecture the way every zoo factory must: randomly initialised (there are
  no weights offline), with the zoo's `num_classes` / `drop_path_rate` / `drop_rate` conventions.
- `register_with_timm` exposes every zoo model to timm as `zoo_<name>`, so timm tooling (`timm.create_model`,
  `timm.list_models("zoo_*")`, timm's train script) can build them.

timm's `register_model` keys a model by its entrypoint's `__name__` and files it under the last component of the
entrypoint's `__module__` (appending the name to that module's `__all__`), so each generated entrypoint gets a
`zoo_` name, this module as its home, and is set as an attribute here: `__all__` then stays truthful.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, Callable

import timm
import torch.nn as nn
from timm.models import is_model, model_entrypoint, register_model

from zoo.models.registry import NO_HOOKS, FamilyHooks, Published, create, list_models, register

__all__ = ["TIMM_PREFIX", "NoPretrainedWeightsError", "create_timm_model", "mark_any_input_size", "register_timm",
           "register_with_timm"]

TIMM_PREFIX = "zoo_"


class NoPretrainedWeightsError(RuntimeError):
    """Raised for `pretrained=True`: this project trains everything itself and downloads no weights."""


def create_timm_model(
    variant: str,
    num_classes: int = 1000,
    drop_path_rate: float = 0.0,
    drop_rate: float | None = None,
    **knobs: Any,
) -> nn.Module:
    """Build timm's `variant` untrained; `drop_rate=None` keeps the architecture's own head dropout.

    `knobs` go to timm unchanged (e.g. `attn_drop_rate`, `in_chans`). Asking for pretrained weights is refused.
    """
    if knobs.pop("pretrained", False):
        raise NoPretrainedWeightsError(f"{variant}: no pretrained weights are available offline; train it instead.")
    if drop_rate is not None:
        knobs["drop_rate"] = drop_rate
    return timm.create_model(
        variant, pretrained=False, num_classes=num_classes, drop_path_rate=drop_path_rate, **knobs
    )


def mark_any_input_size(model: nn.Module) -> nn.Module:
    """Tell timm's data helpers (they read `pretrained_cfg`) that `model` takes any input size; returns it."""
    if isinstance(getattr(model, "pretrained_cfg", None), dict):
        model.pretrained_cfg["fixed_input_size"] = False
    return model


def register_timm(
    name: str,
    variant: str,
    *,
    family: str,
    published: Published,
    description: str,
    hooks: FamilyHooks = NO_HOOKS,
    defaults: Mapping[str, Any] | None = None,
    adapt: Callable[[nn.Module], nn.Module] | None = None,
    stochastic_depth: Callable[[nn.Module, float], nn.Module] | None = None,
    variants: Mapping[str, Published] | None = None,
) -> Callable[..., nn.Module]:
    """Register zoo model `name` as timm's `variant`, untrained; returns the registered factory.

    The factory takes `num_classes`, `drop_path_rate`, `drop_rate` (None: the architecture's own) and knobs for
    timm. `defaults`: timm arguments the family always sets, under the caller's knobs (e.g. a dynamic image size).
    `adapt`: the family's change to timm's model, in place or a new module (e.g. any input size). `stochastic_depth`:
    for an architecture whose timm builder refuses `drop_path_rate`, how to add it to the built model instead.
    """

    def factory(num_classes: int = 1000, drop_path_rate: float = 0.0, drop_rate: float | None = None,
                **knobs: Any) -> nn.Module:
        # timm drops None-valued arguments, so None keeps a refused `drop_path_rate` out of its builder.
        model = create_timm_model(variant, num_classes=num_classes,
                                  drop_path_rate=None if stochastic_depth else drop_path_rate, drop_rate=drop_rate,
                                  **{**(defaults or {}), **knobs})
        if adapt is not None:
            model = adapt(model)
        return stochastic_depth(model, drop_path_rate) if stochastic_depth else model

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"zoo model {name!r}: timm's {variant!r}, untrained ({description})"
    return register(name, family, published, description, hooks, variants)(factory)


def _make_entrypoint(zoo_name: str) -> Callable[..., nn.Module]:
    timm_name = TIMM_PREFIX + zoo_name

    # timm.create_model always passes the pretrained-cfg arguments; the zoo factories have no use for them.
    def entrypoint(
        pretrained: bool = False,
        pretrained_cfg: Any = None,
        pretrained_cfg_overlay: Any = None,
        cache_dir: Any = None,
        **kwargs: Any,
    ) -> nn.Module:
        if pretrained:
            raise NoPretrainedWeightsError(
                f"{timm_name} has no pretrained weights: zoo models are trained by this harness and nothing is "
                f"downloaded. Use pretrained=False (and checkpoint_path=... to load one of your own checkpoints)."
            )
        return create(zoo_name, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = timm_name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"zoo model {zoo_name!r} (see zoo.models.get_entry({zoo_name!r}))."
    entrypoint.zoo_name = zoo_name  # type: ignore[attr-defined]  # marks entrypoints this bridge made
    return entrypoint


def register_with_timm() -> list[str]:
    """Register every zoo model with timm as `zoo_<name>`; safe to call again (new zoo models get added).

    Returns the timm names registered by this call.
    """
    module = sys.modules[__name__]
    added = []
    for zoo_name in list_models():
        timm_name = TIMM_PREFIX + zoo_name
        if is_model(timm_name) and getattr(model_entrypoint(timm_name), "zoo_name", None) == zoo_name:
            continue  # already ours; registering again would make timm warn about overwriting
        entrypoint = _make_entrypoint(zoo_name)
        setattr(module, timm_name, entrypoint)
        register_model(entrypoint)
        added.append(timm_name)
    return added
