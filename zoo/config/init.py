"""`init:` — where a run's weights start: from scratch, another matrix's classification cell, a file, timm's weights.

runs.yaml (one key for every task) and `python -m zoo.train --init=...` spell it:

    init: scratch                      # the default: random weights from the seed (run ids as they always were)
    init: {matrix: runs.yaml}          # that matrix's classification cell of the same model/recipe/sampler/seed
    init: {file: weights.safetensors}  # a zoo checkpoint, or a timm-layout state dict (.safetensors / .pth)
    init: timm                         # timm's published weights for the same architecture (its cache, the hub)
    init: {matrix: runs.yaml, backbone_lr_scale: 0.1, freeze_backbone_epochs: 1}   # the fine-tuning knobs

On the command line: `--init=timm`, `--init=matrix:runs.yaml`, `--init=file:PATH`, `--init.backbone_lr_scale=0.1`.

The fine-tuning knobs are the matrix's (every model, recipe and sampler alike, never per model); their defaults
are the references': ml-cvnets trains the whole network at one learning rate from the first update, and
torchvision's SSDLite reference leaves all of MobileNetV3's layers trainable. "Backbone" is what was loaded.

A pretrained init is resolved by the plan (`zoo.runner.init_source`): `source` (the source run id,
`sha256:<hex>` of a file, or `timm:<architecture.tag>`) and `weights` (the file to read) are filled in there and
recorded; the run id hashes the kind, the source and the knobs — not where the file lies — so scratch and
fine-tuned cells never share an id, and a scratch config hashes as it did before this key existed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from zoo.config.typed import Checker, ConfigError

InitKind = Literal["scratch", "matrix", "file", "timm"]
SPELLINGS = "scratch, timm, {matrix: PATH}, {file: PATH} (command line: scratch, timm, matrix:PATH, file:PATH)"


@dataclass(frozen=True)
class InitConfig:
    """Where a run's weights start, and how a pretrained part is fine-tuned."""

    kind: InitKind = "scratch"
    path: str | None = None  # matrix: the matrix file; file: the weights file (as written)
    backbone_lr_scale: float = 1.0  # the loaded parameters' learning rate, times the run's
    freeze_backbone_epochs: int = 0  # the loaded parameters take no step for this many first epochs
    # Set by the plan, never by hand: what the weights are (hashed) and the file they are read from (not hashed).
    source: str = ""
    weights: str = ""
    weights_state: Literal["", "ema", "raw"] = ""  # a zoo checkpoint's: "raw" where its EMA was short

    @classmethod
    def expand_shorthand(cls, value: Any, source: str, path: str) -> Any:
        """runs.yaml's and the command line's short spellings as this class's fields (`zoo.config.typed.coerce`
        calls it before building the dataclass)."""
        if value is None:
            return {}
        if isinstance(value, str):
            kind, sep, rest = value.partition(":")
            if kind in ("scratch", "timm") and not sep:
                return {"kind": kind}
            if kind in ("matrix", "file") and sep and rest:
                return {"kind": kind, "path": rest}
            raise ConfigError(f"{source}: {path}: expected one of {SPELLINGS}, got {value!r}")
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {path}: expected one of {SPELLINGS}, got {value!r}")
        data = dict(value)
        if isinstance(data.get("name"), str):  # `--init=timm --init.backbone_lr_scale=0.1` (typed.set_dotted)
            data = {**cls.expand_shorthand(data.pop("name"), source, path), **data}
        given = [key for key in ("matrix", "file", "timm") if key in data]
        if len(given) > 1:
            raise ConfigError(f"{source}: {path}: one of matrix, file or timm, got {', '.join(given)}")
        if given == ["timm"]:
            if data.pop("timm") is not True:
                raise ConfigError(f"{source}: {path}.timm: expected true (timm's weights for the run's model)")
            data["kind"] = "timm"
        elif given:
            data["kind"], data["path"] = given[0], data.pop(given[0])
        return data

    def validate(self, source: str, path: str) -> None:
        check = Checker(self, source, path)
        check.non_negative("backbone_lr_scale", "freeze_backbone_epochs")
        needs_path = self.kind in ("matrix", "file")
        check.require(bool(self.path) == needs_path, "path" if self.path else self.kind,
                      f"a path with init {self.kind}" if needs_path else f"unset with init {self.kind}",
                      self.path)
        if self.kind == "scratch":
            check.require(self.backbone_lr_scale == 1.0 and self.freeze_backbone_epochs == 0,
                          "backbone_lr_scale", "1.0 with freeze_backbone_epochs 0 under init scratch (nothing is "
                          "pretrained to fine-tune)", (self.backbone_lr_scale, self.freeze_backbone_epochs))

    @property
    def pretrained(self) -> bool:
        return self.kind != "scratch"

    @property
    def tuned_apart(self) -> bool:
        """The loaded parameters train apart from the new ones (their own learning rate, or frozen first)."""
        return self.pretrained and (self.backbone_lr_scale != 1.0 or self.freeze_backbone_epochs > 0)

    def identity(self) -> dict[str, Any]:
        """What the run id hashes: the weights (their source) and the knobs, not where a file lies."""
        return {"kind": self.kind, "source": self.source, "backbone_lr_scale": self.backbone_lr_scale,
                "freeze_backbone_epochs": self.freeze_backbone_epochs}

    def describe(self) -> str:
        """One phrase for plans and boards: `scratch`, `matrix runs.yaml (run 0123abcd4567)`, ..."""
        if not self.pretrained:
            return "scratch"
        where = {"matrix": f"matrix {self.path}", "file": f"file {self.path}", "timm": "timm"}[self.kind]
        knobs = []
        if self.backbone_lr_scale != 1.0:
            knobs.append(f"backbone lr x{self.backbone_lr_scale:g}")
        if self.freeze_backbone_epochs:
            knobs.append(f"backbone frozen {self.freeze_backbone_epochs} epoch(s)")
        return " ".join([where, *([f"({self.source})"] if self.source else []), *([f"[{', '.join(knobs)}]"]
                                                                                   if knobs else [])])
