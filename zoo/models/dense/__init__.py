"""Dense-prediction models over any zoo backbone, from torchvision's heads: SSDLite detection
(`build_detector`, `ssdlite`) and DeepLabv3 segmentation (`build_segmenter`, `deeplab`).

The backbone is any registered model's multi-scale features (`zoo.models.features`); each head has one recipe for
every backbone, stated in its module, and never names a backbone. A backbone without features at a stride a head
needs raises `MissingFeatureError` (a `ValueError`) naming the model, its strides and the strides needed.
"""
from zoo.models.dense.deeplab import ASPP_RATES, Segmenter, build_segmenter
from zoo.models.dense.ssdlite import ASPECT_RATIOS, EXTRA_WIDTHS, FEATURE_STRIDES, SSDLiteBackbone, build_detector
from zoo.models.features import FeatureBackbone, MissingFeatureError, feature_backbone

__all__ = [
    "ASPECT_RATIOS",
    "ASPP_RATES",
    "EXTRA_WIDTHS",
    "FEATURE_STRIDES",
    "FeatureBackbone",
    "MissingFeatureError",
    "SSDLiteBackbone",
    "Segmenter",
    "build_detector",
    "build_segmenter",
    "feature_backbone",
]
