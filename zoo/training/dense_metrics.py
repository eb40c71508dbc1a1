"""Detection and segmentation metrics: thin wrappers over torchmetrics, and their results as plain floats.

* detection: `MeanAveragePrecision` (xyxy boxes, ``iou_type="bbox"``) on a COCO evaluation backend, pycocotools
  where it is installed, else faster-coco-eval (the same numbers, its authors check them against pycocotools).
  ``update(preds, targets)`` takes torchvision's lists of dicts: preds ``boxes``/``scores``/``labels``, targets
  ``boxes``/``labels`` (``iscrowd`` honoured when present). `detection_summary` gives mAP@[.5:.95] (``map``), mAP@.5
  (``map_50``), mAP@.75, the size buckets and the recalls; torchmetrics reports -1 for a figure without data (no
  small objects, say).
* segmentation: `MulticlassJaccardIndex` averaged over classes (mIoU, ``average="macro"``) with `ignore_index`
  255 (VOC's borders) left out; ``update`` takes logits [B, C, H, W] (or class indices [B, H, W]) and targets
  [B, H, W]. A class absent from both predictions and targets does not count towards the mean.
"""
from __future__ import annotations

import importlib.util

from torchmetrics import Metric
from torchmetrics.classification import MulticlassJaccardIndex
from torchmetrics.detection import MeanAveragePrecision

COCO_BACKENDS = ("pycocotools", "faster_coco_eval")  # torchmetrics' names, in the order preferred


def coco_backend() -> str:
    """The first COCO evaluation backend installed (import names as torchmetrics spells them)."""
    for name in COCO_BACKENDS:
        if importlib.util.find_spec(name) is not None:
            return name
    raise ModuleNotFoundError("detection metrics need a COCO evaluation backend: pip install pycocotools "
                              "(or faster-coco-eval)")


def detection_metric(backend: str | None = None, *, class_metrics: bool = False,
                     sync_on_compute: bool = True) -> MeanAveragePrecision:
    """COCO box mAP over xyxy pixel boxes; `backend` one of COCO_BACKENDS, default the first installed;
    `sync_on_compute=False` when the caller has already gathered every rank's images into it."""
    chosen = backend or coco_backend()
    if chosen not in COCO_BACKENDS:
        raise ValueError(f"detection_metric: backend: unknown backend {chosen!r} (allowed: {', '.join(COCO_BACKENDS)})")
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=class_metrics, backend=chosen,
                                  sync_on_compute=sync_on_compute)
    metric.warn_on_many_detections = False  # COCO's protocol scores each image's top 100 by design (SSD gives 300)
    return metric


def detection_summary(metric: MeanAveragePrecision) -> dict[str, float]:
    """The metric's compute() as floats: map, map_50, map_75, map_small/medium/large, mar_1/10/100, mar_* ...
    (per-class tensors and the class list are left out)."""
    return {key: float(value) for key, value in metric.compute().items() if key != "classes" and value.numel() == 1}


def segmentation_metric(num_classes: int, ignore_index: int | None = 255) -> MulticlassJaccardIndex:
    """mIoU over `num_classes` classes (the background included), pixels of `ignore_index` not scored."""
    return MulticlassJaccardIndex(num_classes=num_classes, average="macro", ignore_index=ignore_index)


def segmentation_summary(metric: Metric) -> dict[str, float]:
    """The metric's compute() as {"miou": float}."""
    return {"miou": float(metric.compute())}
