"""Can a backbone carry a task's head? Asked when a matrix loads, so a backbone without the strides a head reads
stops `zoo.run` with one line naming the model (exit 2) instead of failing every cell of it."""
from __future__ import annotations

from typing import Any

from zoo.models.features import MissingFeatureError, feature_backbone

HEAD_STRIDES: dict[str, tuple[tuple[int, ...], str]] = {
    "detection": ((16, 32), "SSDLite"),  # zoo.models.dense.ssdlite.FEATURE_STRIDES
    "segmentation": ((16,), "DeepLabv3 at output stride 16"),  # zoo.training.dense_engine's output stride
}


def missing_features(model: str, task: str, image_size: int, knobs: dict[str, Any]) -> str | None:
    """None when `model` has the features `task`'s head needs; else the MissingFeatureError's message (the model,
    the strides it has, the strides needed)."""
    strides, head = HEAD_STRIDES[task]
    try:
        feature_backbone(model, strides, image_size=image_size, needed_by=head, **knobs)
    except MissingFeatureError as err:
        return str(err)
    return None
