"""Phone-runtime backends on a tiny model: export, parity / int8 agreement, delegation counts, one timing, skips."""
from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.measure.backends import get_backend, int8_backends, phone_backends
from zoo.measure.latency import TimingConfig, measure_interleaved

FAST = TimingConfig(rounds=2, min_round_s=0.02, warmup_calls=1, min_samples_per_round=2)
SHAPE = (1, 3, 32, 32)



class TinyNet(nn.Module):
    """Conv stem, depthwise conv, one attention layer with layer norm, linear head."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.norm = nn.LayerNorm(16)
        self.qkv = nn.Linear(16, 48)
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.dw(F.relu(self.stem(x))))
        tokens = x.flatten(2).transpose(1, 2)
        q, k, v = self.qkv(self.norm(tokens)).reshape(x.shape[0], -1, 3, 2, 8).permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(x.shape[0], -1, 16)
        return self.head((tokens + mixed).mean(dim=1))


def far_apart(model: TinyNet, winner: int = 7) -> TinyNet:
    """The model with one logit 40 above the others for every input: int8 rounding cannot move its top-1."""
    with torch.no_grad():
        model.head.bias[winner] = 40.0
    return model


class ChannelVote(nn.Module):
    """Class = the brightest of the 3 channels, logits 10x the channel means: margins of ~30 for `voting_images`."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 3)
        with torch.no_grad():
            self.head.weight.copy_(10 * torch.eye(3))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def voting_images(labels: list[int], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    images = 0.5 * torch.randn(len(labels), 3, 32, 32, generator=generator)
    for index, label in enumerate(labels):
        images[index, label] += 3.0
    return images


# What XNNPACK may leave to portable kernels in TinyNet: the qkv split and the token mean over dim 1.
PORTABLE_OPS_ALLOWED = {"getitem", "aten_squeeze_copy_dims", "aten_mean_dim"}


def _assert_mostly_delegated(delegation: dict) -> None:
    left = delegation["non_delegated_ops"]
    assert set(left) <= PORTABLE_OPS_ALLOWED, left
    assert sum(left.values()) == delegation["non_delegated_nodes"] > 0
    assert delegation["delegated_subgraphs"] >= 1
    assert delegation["delegated_nodes"] >= 3 * delegation["non_delegated_nodes"], delegation


def test_phone_backend_names_are_consistent() -> None:
    for name in phone_backends():
        backend = get_backend(name)
        assert backend.name == name and backend.batch_sizes == (1,)
    assert {"executorch-xnnpack-int8-1t", "onnxruntime-cpu-int8-1t"} <= set(int8_backends())


@pytest.mark.slow
def test_executorch_fp32_exports_checks_parity_counts_delegation_and_times(tmp_path: Path) -> None:
    outcome = measure_interleaved(get_backend("executorch-xnnpack-1t"), {"m": TinyNet()}, {"m": SHAPE}, FAST,
                                  tmp_path)["m"]
    assert outcome.status == "ok", outcome.reason
    assert outcome.stats.median_ms > 0 and outcome.stats.rounds == FAST.rounds
    details = outcome.details
    assert details["threads"] == 1 and details["parity_max_abs_err"] <= details["parity_tolerance"]
    # TinyNet's graph: XNNPACK takes most nodes; left to portable kernels are at most the qkv split (getitem,
    # squeeze copies) and the token mean over dim 1 (not a 4-D spatial pool). Invariants, not a node-count snapshot
    # (executorch 1.5 gave 39 delegated, 10 left, 3 partitions; counts move with every release).
    _assert_mostly_delegated(details["delegation"])
    # the export rewrite leaves attention and layer norm to XNNPACK (no safe-softmax guards, no native LN)
    left = set(details["delegation"]["non_delegated_ops"])
    assert not left & {"aten_native_layer_norm_default", "aten_logical_not_default", "aten_where_self"}
    assert (tmp_path / "executorch-xnnpack-1t" / "m" / "model.pte").stat().st_size > 0


@pytest.mark.slow
def test_executorch_int8_reports_agreement_on_a_separate_batch(tmp_path: Path) -> None:
    calibration = torch.randn(4, 3, 48, 48)  # another size: resized to the export size
    backend = get_backend("executorch-xnnpack-int8-1t", calibration_images=calibration)
    outcome = measure_interleaved(backend, {"m": far_apart(TinyNet())}, {"m": SHAPE}, FAST, tmp_path)["m"]
    assert outcome.status == "ok", outcome.reason
    assert outcome.details["int8_top1_agreement"] == 1.0
    assert outcome.details["calibration"] == "given (4 images)"
    # the same few ops as fp32 left to portable kernels; the quantise/dequantise nodes go to XNNPACK with their ops
    # (executorch 1.5: 106 delegated, 10 left)
    _assert_mostly_delegated(outcome.details["delegation"])


@pytest.mark.slow
def test_litert_exports_checks_parity_and_times(tmp_path: Path) -> None:
    outcome = measure_interleaved(get_backend("litert-1t"), {"m": TinyNet()}, {"m": SHAPE}, FAST, tmp_path)["m"]
    assert outcome.status == "ok", outcome.reason
    assert outcome.details["parity_max_abs_err"] <= outcome.details["parity_tolerance"]
    assert outcome.details["delegation"]["delegate_partitions"] >= 1


@pytest.mark.slow
def test_onnxruntime_int8_records_synthetic_calibration(tmp_path: Path) -> None:
    outcome = measure_interleaved(get_backend("onnxruntime-cpu-int8-1t"), {"m": far_apart(TinyNet())},
                                  {"m": SHAPE}, FAST, tmp_path)["m"]
    assert outcome.status == "ok", outcome.reason
    assert outcome.details["calibration"] == "synthetic (8 random images)"
    assert outcome.details["int8_top1_agreement"] == 1.0
    # it quantised the fp32 backend's own export of the model
    assert outcome.details["exporter"].startswith("dynamo (opset 18) + onnxruntime.quantization")


@pytest.mark.parametrize(("backend_name", "module"), [("executorch-xnnpack-1t", "executorch"),
                                                      ("litert-1t", "litert_torch")])
def test_a_missing_runtime_is_a_skipped_record_with_the_reason(monkeypatch, backend_name: str, module: str) -> None:
    real_import = builtins.__import__

    def no_runtime(name, *args, **kwargs):
        if name == module or name.startswith(module + "."):
            raise ImportError(f"No module named {module!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_runtime)
    outcome = measure_interleaved(get_backend(backend_name), {"m": TinyNet()}, {"m": SHAPE}, FAST)["m"]
    assert outcome.status == "skipped"
    assert module in outcome.reason and "phone" in outcome.reason


LABELS = [0, 1, 2, 2, 1, 0]
WRONG = [0, 1, 2, 2, 1, 1]  # the last label disagrees with the image: a right model scores 5 of 6


def _int8_rows(tmp_path: Path, runtimes: list[str]):
    from zoo.measure.int8_accuracy import int8_accuracy

    return int8_accuracy(ChannelVote(), voting_images([0, 1, 2, 1], seed=1), voting_images(LABELS, seed=2),
                         torch.tensor(WRONG), runtimes=runtimes, workdir=tmp_path)


@pytest.mark.slow
def test_int8_accuracy_evaluates_the_int8_backends_export(tmp_path: Path) -> None:
    (row,) = _int8_rows(tmp_path, ["onnxruntime"])
    assert row.status == "ok", row.reason
    assert row.fp32_top1 == pytest.approx(500 / 6) and row.int8_top1 == pytest.approx(500 / 6)
    assert row.drop == pytest.approx(0.0)
    assert row.as_dict() == {"runtime": "onnxruntime", "status": "ok", "fp32_top1": row.fp32_top1,
                             "int8_top1": row.int8_top1, "images": 6, "calibration_images": 4, "reason": "",
                             "drop": row.drop}
    # the int8 backend's own files: its fp32 export and the quantised one
    assert {p.name for p in (tmp_path / "onnxruntime").iterdir()} >= {"model.onnx", "model.int8.onnx"}


@pytest.mark.slow
def test_int8_accuracy_on_executorch(tmp_path: Path) -> None:
    (row,) = _int8_rows(tmp_path, ["executorch-xnnpack"])
    assert row.status == "ok", row.reason
    assert row.int8_top1 == pytest.approx(500 / 6)
    assert (tmp_path / "executorch-xnnpack" / "model.pte").stat().st_size > 0


def test_int8_accuracy_without_a_runtime_is_a_skipped_row(tmp_path: Path, monkeypatch) -> None:
    real_import = builtins.__import__

    def no_executorch(name, *args, **kwargs):
        if name == "executorch" or name.startswith("executorch."):
            raise ImportError("No module named 'executorch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_executorch)
    (row,) = _int8_rows(tmp_path, ["executorch-xnnpack"])
    assert (row.status, row.int8_top1, row.fp32_top1) == ("skipped", None, pytest.approx(500 / 6))
    assert row.reason.startswith("not installed: executorch not importable")
    with pytest.raises(ValueError, match="unknown int8 runtimes"):
        _int8_rows(tmp_path, ["tflite"])
