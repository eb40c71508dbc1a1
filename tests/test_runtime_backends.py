"""Phone-runtime backends on a tiny model: export, parity / int8 agreement, delegation counts, one timing, skips."""
from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.measure.backends import INT8_BACKENDS, PHONE_BACKENDS, get_backend
from zoo.measure.latency import TimingConfig, measure_interleaved

FAST = TimingConfig(rounds=2, min_round_s=0.02, warmup_calls=1, min_samples_per_round=2)
SHAPE = (1, 3, 32, 32)

executorch = pytest.importorskip("executorch", reason="the `phone` extra is not installed")


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


def test_phone_backend_names_are_consistent() -> None:
    for name in PHONE_BACKENDS:
        backend = get_backend(name)
        assert backend.name == name and backend.batch_sizes == (1,)
    assert {"executorch-xnnpack-int8-1t", "onnxruntime-cpu-int8-1t"} <= INT8_BACKENDS


def test_executorch_fp32_exports_checks_parity_counts_delegation_and_times(tmp_path: Path) -> None:
    outcome = measure_interleaved(get_backend("executorch-xnnpack-1t"), {"m": TinyNet()}, {"m": SHAPE}, FAST,
                                  tmp_path)["m"]
    assert outcome.status == "ok", outcome.reason
    assert outcome.stats.median_ms > 0 and outcome.stats.rounds == FAST.rounds
    details = outcome.details
    assert details["threads"] == 1 and details["parity_max_abs_err"] <= details["parity_tolerance"]
    delegation = details["delegation"]
    assert delegation["delegated_nodes"] > 0 and delegation["non_delegated_nodes"] >= 0
    assert sum(delegation["non_delegated_ops"].values()) == delegation["non_delegated_nodes"]
    # the export rewrite leaves attention and layer norm to XNNPACK (no safe-softmax guards, no native LN)
    left = set(delegation["non_delegated_ops"])
    assert not left & {"aten_native_layer_norm_default", "aten_logical_not_default", "aten_where_self"}
    assert (tmp_path / "executorch-xnnpack-1t" / "m" / "model.pte").stat().st_size > 0


def test_executorch_int8_reports_agreement_on_a_separate_batch(tmp_path: Path) -> None:
    calibration = torch.randn(4, 3, 48, 48)  # another size: resized to the export size
    backend = get_backend("executorch-xnnpack-int8-1t", calibration_images=calibration)
    outcome = measure_interleaved(backend, {"m": TinyNet()}, {"m": SHAPE}, FAST, tmp_path)["m"]
    assert outcome.status == "ok", outcome.reason
    assert 0.0 <= outcome.details["int8_top1_agreement"] <= 1.0
    assert outcome.details["calibration"].startswith("given (4 images)")
    # the quantised graph is mostly delegated (quantised conv/linear run in XNNPACK)
    assert outcome.details["delegation"]["delegated_nodes"] > outcome.details["delegation"]["non_delegated_nodes"]


def test_litert_exports_checks_parity_and_times(tmp_path: Path) -> None:
    pytest.importorskip("litert_torch")
    outcome = measure_interleaved(get_backend("litert-1t"), {"m": TinyNet()}, {"m": SHAPE}, FAST, tmp_path)["m"]
    assert outcome.status == "ok", outcome.reason
    assert outcome.details["parity_max_abs_err"] <= outcome.details["parity_tolerance"]
    assert outcome.details["delegation"]["delegate_partitions"] >= 1


def test_onnxruntime_int8_records_synthetic_calibration(tmp_path: Path) -> None:
    outcome = measure_interleaved(get_backend("onnxruntime-cpu-int8-1t"), {"m": TinyNet()}, {"m": SHAPE}, FAST,
                                  tmp_path)["m"]
    assert outcome.status == "ok", outcome.reason
    assert outcome.details["calibration"].startswith("synthetic")
    assert 0.0 <= outcome.details["int8_top1_agreement"] <= 1.0


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


def test_int8_accuracy_gives_fp32_and_int8_top1_per_runtime(tmp_path: Path, monkeypatch) -> None:
    from zoo.measure import int8_accuracy as module

    torch.manual_seed(0)
    model = TinyNet()
    images, calibration = torch.randn(6, 3, 32, 32), torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        labels = model.eval()(images).argmax(dim=1)  # labels = the fp32 predictions: fp32 top-1 is 100 %
    # ONNX Runtime only (fast); the ExecuTorch int8 export itself is covered by the backend test above.
    rows = {row.runtime: row for row in module.int8_accuracy(model, calibration, images, labels,
                                                             runtimes=["onnxruntime"], workdir=tmp_path)}
    assert set(rows) == {"onnxruntime"}
    for row in rows.values():
        assert row.status == "ok", row.reason
        assert row.fp32_top1 == 100.0 and 0.0 <= row.int8_top1 <= 100.0
        assert row.drop == pytest.approx(100.0 - row.int8_top1) and row.as_dict()["images"] == 6

    def missing(*args, **kwargs):
        raise ImportError("No module named 'executorch'")

    monkeypatch.setitem(module._RUNNERS, "executorch-xnnpack", missing)
    (row,) = module.int8_accuracy(model, calibration, images, labels, runtimes=["executorch-xnnpack"])
    assert row.status == "skipped" and "executorch" in row.reason and row.int8_top1 is None
