"""A pretrained run's initial weights (`init:` other than scratch): read, matched by name and shape, loaded, reported.

Where they come from (`zoo.config.init.InitConfig`, resolved by the plan):

- `matrix` / `file` holding a zoo checkpoint: its EMA weights where it has them (what the recipe evaluated) unless
  the plan asked for the raw ones (`init.weights_state`: a source whose EMA was shorter than its horizon, which the
  board ranks by its raw weights too), else its raw weights;
- `file` holding a state dict (`model.safetensors`, `.pth`; a timm training checkpoint's `state_dict_ema` /
  `state_dict` too): in zoo's layout, or timm's for zoo's own MobileViT (bit-identical to timm's: converted by
  `zoo.models.mobilevit.timm_key_to_zoo`);
- `timm`: timm's published weights for the model's architecture, through `timm.create_model(..., pretrained=True)`
  (timm's cache, the Hugging Face hub where the network allows it), built at the run's base resolution where the
  family ties its position grid to it (timm's checkpoint filter resamples the grid). The plan checks the cache
  first, then the network (none with HF_HUB_OFFLINE=1 or ZOO_OFFLINE=1, or when huggingface.co does not answer).

What loads into what: a classifier takes every tensor of the same name and shape; a detector or segmenter takes
them into its backbone (`zoo.models.features.FeatureBackbone.classifier`, the classifier's own names). The rest is
reported: tensors of the model left as initialised (a head, layers the source lacks), source tensors with no
place (the source's head, layers the backbone pruned), and same-name tensors of another shape — the head where the
class count differs; anywhere else the source is another architecture, which the plan refuses (`check_source`).
"""
from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from zoo.config import RunConfig
from zoo.models import create, get_entry, model_label
from zoo.training.components import build_model
from zoo.training.dense_task import dense_model
from zoo.models.features import FeatureBackbone
from zoo.models.mobilevit import timm_key_to_zoo

# zoo's own families whose weights timm publishes under another implementation: zoo name -> timm architecture.
# The AFT variants and knob variants (MobileViT-S's patch/fusion ablations) have none.
OWN_TIMM_ARCHITECTURES = {"mobilevit_xxs": "mobilevit_xxs", "mobilevit_xs": "mobilevit_xs",
                          "mobilevit_s": "mobilevit_s"}
HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm reads from a hub repository, in its order


class InitError(ValueError):
    """An init source that cannot serve a run (missing, not a checkpoint, another architecture, no weights)."""


@dataclass(frozen=True)
class LoadReport:
    """What an init loaded into a model, and what it did not."""

    weights: str  # which weights: "EMA", "raw", "state dict", "timm <architecture.tag>"
    loaded: int  # tensors loaded
    total: int  # tensors of the target (the classifier, or the dense model's backbone)
    missing: tuple[str, ...] = ()  # target tensors left as initialised (the head, layers the source lacks)
    unexpected: tuple[str, ...] = ()  # source tensors with no place in the target (its head, pruned layers)
    mismatched: tuple[str, ...] = ()  # "name: source (..) vs model (..)": the head of another class count

    def line(self) -> str:
        parts = [f"loaded {self.loaded}/{self.total} tensors ({self.weights})"]
        new = self.missing + tuple(m.split(":")[0] for m in self.mismatched)
        if new:
            shaped = f", {len(self.mismatched)} of another shape" if self.mismatched else ""
            parts.append(f"new: {len(new)} tensors{shaped} ({_modules(new)})")
        if self.unexpected:
            parts.append(f"unused from the source: {len(self.unexpected)} tensors ({_modules(self.unexpected)})")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"weights": self.weights, "loaded": self.loaded, "total": self.total, "missing": list(self.missing),
                "unexpected": list(self.unexpected), "mismatched": list(self.mismatched)}


def _modules(keys: tuple[str, ...], shown: int = 6) -> str:
    """The modules the tensors belong to (a stage's blocks one by one), in order: `blocks.5, conv_head, classifier`."""
    modules: list[str] = []
    for key in keys:
        parts = key.split(".")[:-1] or [key]
        depth = 2 if len(parts) > 1 and parts[1].isdigit() else 1
        module = ".".join(parts[:depth])
        if module not in modules:
            modules.append(module)
    listed = ", ".join(modules[:shown])
    return f"{listed} +{len(modules) - shown} more" if len(modules) > shown else listed


# ------------------------------------------------------------------------------------------------------ reading
def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_weights_file(path: Path, prefer_ema: bool = True) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, which weights) of a zoo checkpoint or a state dict file; InitError names what is wrong."""
    if not path.is_file():
        raise InitError(f"{path}: file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: Any = load_file(str(path), device="cpu")
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InitError(f"{path}: not a checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:160]}); "
                        f"expected a zoo checkpoint.pt or a state dict (.safetensors, .pth)") from None
    state, which = _unwrap(raw, prefer_ema)
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InitError(f"{path}: not a checkpoint (no mapping of tensor names to tensors inside)")
    return {k.removeprefix("module."): v for k, v in state.items()}, which


def _unwrap(raw: Any, prefer_ema: bool) -> tuple[dict, str]:
    if not isinstance(raw, dict):
        return {}, ""
    if isinstance(raw.get("model"), dict) and "epoch" in raw:  # zoo.training.engine.checkpoint_state
        if prefer_ema and isinstance(raw.get("ema"), dict):
            return raw["ema"], "EMA"
        return raw["model"], "raw"
    for key, which in (("state_dict_ema", "EMA"), ("model_ema", "EMA"), ("state_dict", "state dict"),
                       ("model", "state dict")):  # timm's train.py checkpoints and their kin
        if isinstance(raw.get(key), dict) and (prefer_ema or which != "EMA"):
            return raw[key], which
    return raw, "state dict"


def to_zoo_layout(model: str, state: dict[str, torch.Tensor], origin: str) -> dict[str, torch.Tensor]:
    """A timm-layout state dict of zoo's own MobileViT in zoo's names; anything else as it is."""
    if model not in OWN_TIMM_ARCHITECTURES or not any(k.startswith("stages.") for k in state):
        return state
    try:
        return {timm_key_to_zoo(k): v for k, v in state.items()}
    except KeyError as err:
        raise InitError(f"{origin}: a timm-layout state dict, but not of {model} ({err.args[0]})") from None


# --------------------------------------------------------------------------------------------------------- timm
def timm_tag(cfg: RunConfig) -> str:
    """timm's `architecture.tag` of the weights for the run's model; InitError where timm publishes none."""
    name = cfg.model
    if cfg.model_kwargs:
        raise InitError(f"{model_label(name, cfg.model_kwargs)} is a knob variant of {name}: timm's weights are for "
                        f"the default architecture (give weights of this variant with init: {{file: PATH}})")
    if name in OWN_TIMM_ARCHITECTURES:
        import timm

        pretrained = timm.models.get_pretrained_cfg(OWN_TIMM_ARCHITECTURES[name])
    else:
        pretrained = getattr(create(name, num_classes=2), "pretrained_cfg", None)
        if pretrained is None:
            raise InitError(f"{name}: zoo's own architecture: timm publishes no weights for it (give a checkpoint "
                            f"with init: {{file: PATH}} or train one: init: {{matrix: PATH}})")
        import timm

        pretrained = timm.models.get_pretrained_cfg(f"{pretrained['architecture']}.{pretrained['tag']}")
    if pretrained is None or not (pretrained.hf_hub_id or pretrained.url or pretrained.file) \
            or pretrained.tag == "untrained":
        arch = pretrained.architecture if pretrained is not None else name
        raise InitError(f"{name}: timm has no published weights for its architecture {arch} (give a checkpoint "
                        f"with init: {{file: PATH}} or train one: init: {{matrix: PATH}})")
    return f"{pretrained.architecture}.{pretrained.tag}"


def check_timm_available(tag: str) -> str:
    """Where timm will find `tag`'s weights ("cache", "hub"); InitError saying how to give a file instead."""
    import timm
    from huggingface_hub import constants, try_to_load_from_cache

    pretrained = timm.models.get_pretrained_cfg(tag)
    if pretrained.file and Path(pretrained.file).is_file():
        return "file"
    if pretrained.hf_hub_id and any(isinstance(try_to_load_from_cache(pretrained.hf_hub_id, name), str)
                                    for name in HF_FILES):
        return "cache"
    if pretrained.url and (Path(torch.hub.get_dir()) / "checkpoints" / Path(pretrained.url).name).is_file():
        return "cache"
    if not constants.HF_HUB_OFFLINE and _reachable("huggingface.co"):
        return "hub"
    where = f"https://huggingface.co/{pretrained.hf_hub_id}" if pretrained.hf_hub_id else pretrained.url
    raise InitError(f"timm weights {tag}: not in timm's cache ({constants.HF_HUB_CACHE}) and no network here: "
                    f"download {HF_FILES[0]} of {where} elsewhere and give it as init: {{file: PATH}} (or copy the "
                    f"Hugging Face cache here)")


def _reachable(host: str) -> bool:
    if os.environ.get("ZOO_OFFLINE"):
        return False
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


def timm_state(cfg: RunConfig, tag: str) -> dict[str, torch.Tensor]:
    """timm's published weights for `tag`, through timm's own pretrained machinery, in zoo's layout."""
    import timm

    kwargs: dict[str, Any] = {}
    if cfg.model not in OWN_TIMM_ARCHITECTURES and get_entry(cfg.model).hooks.sized_at_base_resolution:
        kwargs["img_size"] = cfg.sampler.base_resolution  # timm's checkpoint filter resamples the position grid
    reference = timm.create_model(tag, pretrained=True, **kwargs)
    return to_zoo_layout(cfg.model, reference.state_dict(), f"timm {tag}")


# ----------------------------------------------------------------------------------------------------- loading
def source_state(cfg: RunConfig) -> tuple[dict[str, torch.Tensor], str]:
    """The run's init weights in zoo's layout, and which weights they are."""
    init = cfg.init
    if init.kind == "timm":
        tag = init.source.removeprefix("timm:") or timm_tag(cfg)
        return timm_state(cfg, tag), f"timm {tag}"
    path = Path(init.weights or init.path or "")
    state, which = read_weights_file(path, prefer_ema=init.weights_state != "raw")
    return to_zoo_layout(cfg.model, state, str(path)), which


def init_target(model: nn.Module) -> nn.Module:
    """What the init loads into: a dense model's backbone classifier (its names), else the model itself."""
    backbone = next((m for m in model.modules() if isinstance(m, FeatureBackbone)), None)
    return backbone.classifier if backbone is not None else model


def match(target: dict[str, torch.Tensor], state: dict[str, torch.Tensor], which: str
          ) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """The source tensors the target takes (same name and shape), and the report of the rest."""
    same = {k: v for k, v in state.items() if k in target and tuple(v.shape) == tuple(target[k].shape)}
    mismatched = tuple(f"{k}: source {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
                       for k in target if k in state and k not in same)
    missing = tuple(k for k in target if k not in state)
    unexpected = tuple(k for k in state if k not in target)
    return same, LoadReport(which, len(same), len(target), missing, unexpected, mismatched)


def load_init(model: nn.Module, cfg: RunConfig) -> tuple[LoadReport, set[str]]:
    """Load the run's init weights into `model` (in place); the report, and the names (in `model`) of the
    backbone: the tensors loaded, a classifier's head apart."""
    target = init_target(model)
    state, which = source_state(cfg)
    loadable, report = match(target.state_dict(), state, which)
    if not loadable:
        raise InitError(f"{cfg.init.describe()}: no tensor of {cfg.model} in it: {report.line()}")
    target.load_state_dict(loadable, strict=False)
    prefix = next(name for name, module in model.named_modules() if module is target)
    # The backbone the knobs tune: what loaded, less a classifier's head (loaded where the class counts agree).
    heads = head_keys(cfg) if target is model else set()
    return report, {f"{prefix}.{k}" if prefix else k for k in loadable if k not in heads}


# ---------------------------------------------------------------------------------------------------- plan time
def check_source(cfg: RunConfig) -> LoadReport:
    """What the run's init would load, checked before anything trains: InitError where the source is not a
    checkpoint, holds no tensor of the model, or is another architecture (a same-name tensor of another shape
    outside a classifier's head: the first one named, with both shapes)."""
    model = build_model(cfg, 2) if cfg.task == "classification" else dense_model(cfg, 2)
    target = init_target(model).state_dict()
    state, which = source_state(cfg)
    loadable, report = match(target, state, which)
    heads = head_keys(cfg) if cfg.task == "classification" else set()
    wrong = [k for k in target if k in state and k not in loadable and k not in heads]
    origin = cfg.init.describe()
    if wrong:
        key = wrong[0]
        raise InitError(f"{origin} belongs to another architecture than {model_label(cfg.model, cfg.model_kwargs)}: "
                        f"{key} is {tuple(state[key].shape)} there, {tuple(target[key].shape)} in the model "
                        f"({len(wrong)} tensors differ)")
    if not loadable:
        raise InitError(f"{origin} holds no tensor of {cfg.model} (its first: {next(iter(state))}; the model's "
                        f"first: {next(iter(target))})")
    return report


def head_keys(cfg: RunConfig) -> set[str]:
    """The classifier's tensors whose shape follows the class count (its head), found by building it twice."""
    two, three = build_model(cfg, 2).state_dict(), build_model(cfg, 3).state_dict()
    return {k for k in two if two[k].shape != three[k].shape}
