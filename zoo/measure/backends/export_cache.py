"""Exports kept on disk and reused: keyed by the architecture, its weights, the input shape, the runtime and its
version, and (int8) the calibration images, so a forced re-time or a second thread count re-exports nothing.

An entry is a folder `<root>/<kind>/<key>/` holding the exported file(s) and `export.json` (the details the
exporter returned: exporter, delegation counts, the file's name), written last by rename: a folder without it is
an export that was interrupted, and is exported again. The key hashes:

- the backend's export kind (its name without the thread suffix: `-1t` and all-thread backends share a file);
- the model's label (`zoo.measure.suite` sets it: a knob variant such as a patch size has the default model's
  parameter shapes), its class, every parameter/buffer name, shape and value (the weights are in the file);
- the input shape, the versions of the packages that produce and run the file, `EXPORT_FORMAT`;
- int8: the calibration images' values.

A stale entry is harmless beyond disk space: nothing reads it once its key changes. The parity check runs on every
load, cached or not, so a file that no longer matches its model fails its cell instead of being timed.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from zoo.measure.machine import package_version

__all__ = ["CACHE_ENV", "EXPORT_FORMAT", "ExportCache", "MODEL_LABEL_ATTR", "cache_root", "export_key", "weights_digest"]

# Bump when an exporter's settings change what it writes for the same model (e.g. a new op rewrite).
EXPORT_FORMAT = 1
MODEL_LABEL_ATTR = "zoo_model_label"  # set by zoo.measure.suite on every model it builds
META_FILE = "export.json"
# One cache for every store on a machine: `ZOO_EXPORT_CACHE=DIR` makes the trained board's measurement step, the
# architecture board and `python -m zoo.measure` share their exports (the key holds everything that changes a file).
CACHE_ENV = "ZOO_EXPORT_CACHE"


def cache_root(artifacts: str | os.PathLike[str]) -> Path:
    """Where exports are cached: `$ZOO_EXPORT_CACHE` when set, else `<artifacts>/exports`."""
    shared = os.environ.get(CACHE_ENV)
    return Path(shared) if shared else Path(artifacts) / "exports"


def weights_digest(model: nn.Module) -> str:
    """Hash of the class, the label, and every parameter and buffer: name, shape, dtype and values."""
    digest = hashlib.sha256(f"{type(model).__qualname__}|{getattr(model, MODEL_LABEL_ATTR, '')}".encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _tensor_digest(images: torch.Tensor | None) -> str:
    if images is None:
        return ""
    return hashlib.sha256(images.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()


def export_key(kind: str, model: nn.Module, input_shape: Sequence[int], packages: Sequence[str],
               calibration: torch.Tensor | None) -> str:
    """The cache key of `model`'s export by `kind` (see the module docstring)."""
    payload = {
        "kind": kind,
        "model": weights_digest(model),
        "shape": [int(d) for d in input_shape],
        "versions": {name: package_version(name) for name in ("torch", *packages)},
        "format": EXPORT_FORMAT,
        "calibration": _tensor_digest(calibration),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


class ExportCache:
    """Export folders under `root`, by kind and key."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def folder(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def lookup(self, kind: str, key: str) -> dict[str, Any] | None:
        """The stored details of a complete entry (its metadata and its file present), else None."""
        folder = self.folder(kind, key)
        try:
            details = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(details, dict) or not (folder / str(details.get("file", ""))).is_file():
            return None
        return details

    def commit(self, kind: str, key: str, details: dict[str, Any]) -> None:
        """Mark the entry complete: its metadata written to a temporary name, then renamed into place."""
        folder = self.folder(kind, key)
        temporary = folder / (META_FILE + ".tmp")
        temporary.write_text(json.dumps(details, sort_keys=True, default=str), encoding="utf-8")
        os.replace(temporary, folder / META_FILE)
