"""Runtime tables from measurement records (pure functions) and the op-class breakdown on a tiny model."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch.nn as nn

from zoo.measure.flops import OP_CLASSES, count_macs, macs_by_class
from zoo.measure.store import Breakdown, Int8Record, Measurement
from zoo.report.runtime_tables import (
    breakdown_table,
    delegation_table,
    export_status_table,
    int8_accuracy_table,
    relative_to_mobilenet_table,
    runtime_latency_table,
)


def _rec(model: str, res: int, backend: str, ms: float | None, gmacs: float, status: str = "ok",
         reason: str = "", details: dict | None = None) -> Measurement:
    return Measurement(model, res, backend, "m", median_ms=ms, gmacs=gmacs, status=status, reason=reason,
                       details=details or {})


RECORDS = [
    _rec("mobilenetv2_100", 224, "executorch-xnnpack-1t", 4.0, 0.30,
         details={"delegation": {"delegated_nodes": 204, "non_delegated_nodes": 1, "delegated_subgraphs": 1,
                                 "non_delegated_ops": {"getitem": 1}}}),
    _rec("deit_tiny", 224, "executorch-xnnpack-1t", 40.0, 1.25),
    _rec("pit_ti", 224, "executorch-xnnpack-1t", 30.0, 0.70),
    _rec("mobilevit_xxs", 256, "executorch-xnnpack-1t", 20.0, 0.41),
    _rec("mobilevit_xxs", 224, "executorch-xnnpack-1t", 15.0, 0.31),  # not the deployment resolution
    _rec("mobilenetv2_100", 224, "litert-1t", 3.0, 0.30, details={"delegation": {"delegate_partitions": 1}}),
    _rec("deit_tiny", 224, "litert-1t", None, 1.25, status="failed", reason="ParityError: differs"),
]
DEPLOY = {"mobilenetv2_100": 224, "deit_tiny": 224, "pit_ti": 224, "mobilevit_xxs": 256}


def test_latency_table_keeps_deployment_resolution_and_failures_as_cells() -> None:
    table = runtime_latency_table(RECORDS, deploy_res=DEPLOY)
    assert table.headers[:3] == ["model", "res", "GMACs"]
    assert table.headers == ["model", "res", "GMACs", "executorch-xnnpack-1t ms", "litert-1t ms"]
    assert table.rows == [["mobilenetv2_100", "224", "0.300", "4.0", "3.0"],
                          ["deit_tiny", "224", "1.250", "40.0", "failed: ParityError: differs"],
                          ["pit_ti", "224", "0.700", "30.0", "–"],
                          ["mobilevit_xxs", "256", "0.410", "20.0", "–"]]


def test_two_records_of_one_cell_are_refused() -> None:
    with pytest.raises(ValueError, match="two records"):
        runtime_latency_table(RECORDS + [_rec("pit_ti", 224, "executorch-xnnpack-1t", 31.0, 0.70)])


def test_relative_table() -> None:
    relative = relative_to_mobilenet_table(RECORDS, ["executorch-xnnpack-1t"], deploy_res=DEPLOY)
    deit = next(row for row in relative.rows if row[0] == "deit_tiny")
    assert deit[1] == "10.00×" and deit[2] == "11.95×" and deit[3] == "3.75×"  # paper: 10.99/0.92, 28.15/7.50


def test_status_delegation_int8_and_breakdown_tables() -> None:
    status = export_status_table(RECORDS + [_rec("pit_ti", 224, "coreml", None, 0.7, "skipped", "needs macOS",
                                                 {"exported": True})])
    assert status.rows[2][status.headers.index("coreml")] == "ok"
    delegation = delegation_table(RECORDS, deploy_res=DEPLOY)
    assert delegation.rows[0][3] == "204/205" and "getitem 1" in delegation.rows[0][5]
    int8 = int8_accuracy_table([Int8Record(model="m", runtime="onnxruntime", fp32_top1=70.0, int8_top1=69.5),
                                Int8Record(model="n", run_id="r", status="skipped", reason="no checkpoint: c.pt")])
    assert int8.rows == [["m", "onnxruntime", "70.00", "69.50", "+0.50", "ok"],
                         ["n", "–", "–", "–", "–", "skipped: no checkpoint: c.pt"]]
    bd = breakdown_table([Breakdown(model="m", resolution=224, total_kernel_ms=10.0,
                                    ms_by_class={"convolution": 6.0, "attention": 4.0},
                                    gmacs_by_class={"convolution": 0.2})])
    assert bd.rows[0][3] == "6.0 (60%) / 0.200" and "|" in bd.markdown()


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.norm = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.norm(self.dw(self.conv(x))).mean(dim=(2, 3)))


def test_macs_by_class_splits_depthwise_and_sums_to_the_total() -> None:
    model = ConvNet()
    classes = macs_by_class(model, 16)
    assert set(classes) == set(OP_CLASSES)
    assert classes["depthwise conv"] == 16 * 16 * 8 * 9
    assert classes["convolution"] == 16 * 16 * 8 * 27
    assert sum(classes.values()) == count_macs(model, 16).macs


@pytest.mark.slow
def test_onnxruntime_profile_breakdown(tmp_path: Path) -> None:
    from zoo.measure.breakdown import op_class_breakdown

    record = op_class_breakdown(ConvNet(), 32, runs=3, name="conv", workdir=tmp_path)
    ms = record.ms_by_class
    assert set(ms) == set(OP_CLASSES) and record.total_kernel_ms > 0
    assert ms["depthwise conv"] > 0 and ms["convolution"] > 0
    assert record.gmacs_by_class["depthwise conv"] > 0
