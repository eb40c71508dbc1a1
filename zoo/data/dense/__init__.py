"""Dense-prediction data: detection (SSDLite) and semantic segmentation (DeepLabv3) for every backbone.

* `ScatteredDigits` (`scattered`): the offline task, digits scattered on a canvas with boxes, labels and masks,
  both tasks from one data set (11 classes with the background);
* `CocoDetectionData` (`coco`): COCO 2017 detection through torchvision's `CocoDetection` (needs pycocotools);
* `VocSegmentationData` (`voc`): PASCAL VOC 2012 segmentation through torchvision's `VOCSegmentation`.

Each yields ``(float32 image [3, H, W], target dict)`` (see `common`); ``collate_detection`` batches for
torchvision's detection models, ``collate_segmentation`` for a segmenter. A data set that cannot be used raises
`DenseDataError` (a `DataError`: exit 2 at the command line) naming the file and what is expected.
"""
from zoo.data.dense.coco import BOX_TOLERANCE, CocoDetectionData
from zoo.data.dense.common import (
    IGNORE_INDEX,
    DenseDataError,
    collate_detection,
    collate_segmentation,
    default_transforms,
)
from zoo.data.dense.scattered import NUM_CLASSES, ScatteredDigits
from zoo.data.dense.voc import VOC_CLASSES, VocSegmentationData

__all__ = [
    "BOX_TOLERANCE",
    "IGNORE_INDEX",
    "NUM_CLASSES",
    "VOC_CLASSES",
    "CocoDetectionData",
    "DenseDataError",
    "ScatteredDigits",
    "VocSegmentationData",
    "collate_detection",
    "collate_segmentation",
    "default_transforms",
]
