"""The bridge between the zoo registry and timm, in both directions.

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
from typing import Any, Callable

import timm
import torch.nn as nn
from timm.models import is_model, model_entrypoint, register_model

from zoo.models.registry import create, list_models

__all__ = ["TIMM_PREFIX", "NoPretrainedWeightsError", "create_timm_model", "register_with_timm"]

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
