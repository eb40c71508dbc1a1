"""LiteRT int8 backend: PT2E export of a zoo model, int8 graph, agreement, export cache, size, skips, failures."""
from __future__ import annotations

import builtins
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import zoo.models
from zoo.measure.backends import get_backend, int8_backends, int8_pairs, phone_backends, spec_of
from zoo.measure.backends.common import Exported
from zoo.measure.latency import TimingConfig, measure_interleaved

pytestmark = pytest.mark.xdist_group("test_litert_int8")  # its module fixture is built on one worker only

FAST = TimingConfig(rounds=1, min_round_s=0.0, warmup_calls=1, min_samples_per_round=1)
SHAPE = (1, 3, 64, 64)
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")

def _far_apart(model: nn.Module, winner: int = 3) -> nn.Module:
    """One logit 40 above the others for every input: int8 rounding cannot move the top-1 of an untrained net."""
    with torch.no_grad():
        model.get_classifier().bias[winner] = 40.0
    return model


@dataclass(frozen=True)
class Exports:
    model: nn.Module
    calibration: torch.Tensor
    cache: Path
    int8: Exported
    fp32: Exported


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    """mobilenetv2_100 at 64 px (the quickest zoo model through the converter) with one block a stage (timm's
    depth_multiplier 0.3: every op kind, 28 s of conversion down to 18 s), int8 and fp32, in one cache."""
    torch.manual_seed(0)
    model = _far_apart(zoo.models.create("mobilenetv2_100", num_classes=10, depth_multiplier=0.3).eval())
    calibration = torch.randn(4, 3, 96, 96, generator=torch.Generator().manual_seed(5))  # resized to 64
    cache = tmp_path_factory.mktemp("exports")
    int8 = get_backend("litert-int8-1t", calibration_images=calibration)
    fp32 = get_backend("litert-1t")
    int8.export_cache_dir = fp32.export_cache_dir = cache
    return Exports(model, calibration, cache, int8.load(model, SHAPE, cache / "work"),
                   fp32.load(model, SHAPE, cache / "work"))


def test_the_int8_backends_are_declared_beside_litert() -> None:
    assert {"litert-int8-1t", "litert-int8"} <= set(int8_backends())
    names = list(phone_backends())  # table order: each int8 column right after its fp32 partner's
    for threads in ("-1t", ""):
        assert names[names.index(f"litert{threads}") + 1] == f"litert-int8{threads}"
        assert (f"litert{threads}", f"litert-int8{threads}") in int8_pairs()
    assert spec_of("litert-int8").runtime == spec_of("litert-1t").runtime == "litert"
    one, every = get_backend("litert-int8-1t"), get_backend("litert-int8")
    assert (one.threads, every.threads, one.int8, one.batch_sizes) == (1, None, True, (1,))
    assert one.export_kind == every.export_kind == "litert-int8"  # one cached file for both thread counts


@pytest.mark.slow
def test_the_export_is_int8_and_agrees_with_pytorch(exports: Exports) -> None:
    details = exports.int8.details
    assert details["calibration"] == "given (4 images)" and details["export_cached"] is False
    assert details["int8_top1_agreement"] == 1.0  # on the check batch, not the calibration batch
    assert details["io_dtypes"] == ["int8", "int8"] and details["delegation"]["delegate_partitions"] >= 1
    # run() takes and returns float: it (de)quantises with the signature's scale and zero point
    logits = exports.int8.run(torch.randn(SHAPE).numpy())
    assert logits.dtype == np.float32 and logits.shape == (1, 10) and int(logits.argmax()) == 3


@pytest.mark.slow
def test_every_weight_is_per_channel_symmetric_int8(exports: Exports) -> None:
    from zoo.measure.backends.litert import make_interpreter

    interpreter = make_interpreter(Path(exports.int8.details["artifact"]), 1)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    weighted = [op for op in interpreter._get_ops_details() if op["op_name"] in WEIGHTED_OPS]
    # one weighted op per convolution (depthwise included) and the head: every layer with weights became int8 there
    assert len(weighted) == sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in exports.model.modules()) == 26
    for op in weighted:
        weight = tensors[op["inputs"][1]]
        quantization = weight["quantization_parameters"]
        channels = weight["shape"][quantization["quantized_dimension"]]  # output channels (depthwise: the last)
        assert weight["dtype"] == np.int8 and len(quantization["scales"]) == channels > 1, op["op_name"]
        assert not quantization["zero_points"].any(), op["op_name"]  # symmetric
    dtypes = exports.int8.details["tensor_dtypes"]
    assert dtypes["int8"] > dtypes.get("float32", 0)


@pytest.mark.slow
def test_the_int8_file_is_about_a_quarter_of_the_fp32_file(exports: Exports) -> None:
    ratio = exports.fp32.details["file_bytes"] / exports.int8.details["file_bytes"]
    assert 3.0 < ratio < 4.5, ratio


@pytest.mark.slow
def test_the_all_thread_backend_loads_the_cached_file_and_exports_nothing(exports: Exports, monkeypatch) -> None:
    import zoo.measure.backends.litert_int8 as litert_int8

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(litert_int8, "export_litert_int8", no_export)
    backend = get_backend("litert-int8", calibration_images=exports.calibration)
    backend.export_cache_dir = exports.cache
    assert backend.has_cached_export(exports.model, SHAPE)
    loaded = backend.load(exports.model, SHAPE, exports.cache / "work")
    assert loaded.details["export_cached"] is True and loaded.details["artifact"] == exports.int8.details["artifact"]
    assert loaded.details["int8_top1_agreement"] == 1.0
    # other calibration images are another key: that export is not in the cache
    other = get_backend("litert-int8", calibration_images=exports.calibration + 1)
    other.export_cache_dir = exports.cache
    assert not other.has_cached_export(exports.model, SHAPE)


class DataDependent(nn.Module):
    """A branch on a tensor's value: torch.export cannot trace it, so the int8 export fails at its first step."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        return self.head(pooled) if pooled.sum() > 0 else -self.head(pooled)


@pytest.mark.slow
def test_a_model_the_pt2e_path_cannot_take_is_a_failed_cell_naming_the_stage(tmp_path: Path) -> None:
    outcome = measure_interleaved(get_backend("litert-int8-1t"), {"m": DataDependent()}, {"m": (1, 3, 16, 16)},
                                  FAST, tmp_path)["m"]
    assert outcome.status == "failed"
    assert "litert int8 export of DataDependent failed in torch.export" in outcome.reason


def test_without_litert_torch_the_backend_is_skipped_with_the_reason(monkeypatch) -> None:
    real_import = builtins.__import__

    def no_litert(name, *args, **kwargs):
        if name == "litert_torch" or name.startswith("litert_torch."):
            raise ImportError("No module named 'litert_torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_litert)
    outcome = measure_interleaved(get_backend("litert-int8-1t"), {"m": DataDependent()}, {"m": (1, 3, 16, 16)},
                                  FAST)["m"]
    assert outcome.status == "skipped"
    assert "litert_torch" in outcome.reason and "phone" in outcome.reason


def test_float_images_are_quantised_with_the_signature_scale_and_zero_point() -> None:
    from zoo.measure.backends.litert_int8 import _dequantize, _quantize

    detail = {"dtype": np.int8, "quantization": (0.5, -3)}
    array = np.array([[-100.0, -1.0, 0.0, 0.26, 100.0]], dtype=np.float32)
    quantized = _quantize(array, detail)
    assert quantized.dtype == np.int8 and quantized.tolist() == [[-128, -5, -3, -2, 127]]
    assert _dequantize(quantized, detail).tolist() == [[-62.5, -1.0, 0.0, 0.5, 65.0]]
    floats = {"dtype": np.float32, "quantization": (0.0, 0)}
    assert _quantize(array, floats) is array and _dequantize(array, floats) is array
