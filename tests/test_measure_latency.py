"""Latency backends on a tiny model: statistics, thread handling, ONNX parity, CUDA skip, Core ML export."""
from __future__ import annotations

import platform
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.measure.backends import UnknownBackendError, backend_names, get_backend
from zoo.measure.latency import (
    BackendSkip,
    LatencyBackend,
    LatencyStats,
    TimedBackend,
    TimingConfig,
    measure_interleaved,
    summarize_rounds,
)
from zoo.measure.machine import machine_info, usable_cpus

FAST = TimingConfig(rounds=2, min_round_s=0.05, warmup_calls=1, min_samples_per_round=3)
SHAPE = (1, 3, 32, 32)


class SharedLog(list):
    """A list that a deep copy shares: backends time a prepared copy, and the test reads the original's log."""

    def __deepcopy__(self, memo: dict) -> "SharedLog":
        return self


class TinyAttentionNet(nn.Module):
    """Conv stem, one attention layer, linear head; with the shape arithmetic and clamp that trip coremltools."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(16)
        self.qkv = nn.Linear(16, 48)
        self.gain = nn.Parameter(torch.tensor(0.5))
        self.head = nn.Linear(16, classes)
        self.threads_seen = SharedLog()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.threads_seen.append(torch.get_num_threads())
        x = self.stem(x)
        b, c, h, w = x.shape
        tokens = x.reshape(b, c, int(h * w)).transpose(1, 2)  # traced as aten::Int on a length-1 tensor
        q, k, v = self.qkv(self.norm(tokens)).reshape(b, -1, 3, 2, 8).permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, c)
        tokens = tokens + mixed * (1 + self.gain.clamp_min(0))  # clamp with an int bound on a float tensor
        return self.head(tokens.mean(dim=1))


def _check_stats(stats: LatencyStats, config: TimingConfig = FAST) -> None:
    assert stats.median_ms > 0 and stats.min_ms > 0 and stats.iqr_ms <= stats.max_ms - stats.min_ms
    assert stats.min_ms <= stats.median_ms <= stats.max_ms
    assert stats.rounds == config.rounds
    assert stats.runs >= config.rounds * config.min_samples_per_round
    assert len(stats.round_medians_ms) == config.rounds


def test_summarize_rounds_pools_round_medians_and_sample_iqr() -> None:
    stats = summarize_rounds([[0.001, 0.002, 0.003], [0.004, 0.005, 0.006], [0.007, 0.008, 0.009]], batch_size=1)
    assert stats.median_ms == pytest.approx(5.0)  # median of the round medians 2, 5, 8
    assert stats.iqr_ms == pytest.approx(4.0)  # 7 - 3 over the pooled samples
    assert (stats.min_ms, stats.max_ms, stats.runs, stats.rounds) == (pytest.approx(1.0), pytest.approx(9.0), 9, 3)
    with pytest.raises(ValueError):
        summarize_rounds([[], []], batch_size=1)


@pytest.mark.parametrize(("backend_name", "threads"), [("cpu-eager-1t", 1), ("cpu-eager", usable_cpus())])
def test_cpu_eager_times_with_its_threads_and_restores_the_count(backend_name: str, threads: int) -> None:
    model = TinyAttentionNet()
    previous = torch.get_num_threads()
    other = 3 if threads != 3 else 2
    torch.set_num_threads(other)  # a count the backend must not keep, nor time with
    try:
        stats = get_backend(backend_name).measure(model, SHAPE, FAST)
        assert torch.get_num_threads() == other
    finally:
        torch.set_num_threads(previous)
    _check_stats(stats)
    assert set(model.threads_seen) == {threads}


class _LoggingBackend(TimedBackend):
    """Fake backend: records the order models are timed in; 'broken' fails to prepare, 'mac' is skipped."""

    name = "logging"

    def __init__(self) -> None:
        self.log: list[str] = []

    def prepare(self, model, input_shape, workdir, config):
        if model.tag == "broken":
            raise RuntimeError("cannot export this one")
        if model.tag == "mac":
            raise BackendSkip("needs macOS", {"exported": True})
        backend = self

        class Runner:
            details = {"tag": model.tag}

            def time_round(self, config: TimingConfig) -> list[float]:
                backend.log.append(model.tag)
                return [0.001, 0.002, 0.003]

            def close(self) -> None:
                pass

        return Runner()


def _tagged(tag: str) -> nn.Module:
    module = nn.Identity()
    module.tag = tag
    return module


def test_models_are_interleaved_in_rounds_and_failures_stay_per_model() -> None:
    backend = _LoggingBackend()
    names = ["a", "broken", "b", "mac", "c"]
    outcomes = measure_interleaved(
        backend, {n: _tagged(n) for n in names}, {n: SHAPE for n in names}, TimingConfig(rounds=3)
    )
    assert backend.log == ["a", "b", "c"] * 3
    assert list(outcomes) == names
    assert outcomes["broken"].status == "failed" and "cannot export" in outcomes["broken"].reason
    assert outcomes["mac"].status == "skipped" and outcomes["mac"].details == {"exported": True}
    assert outcomes["a"].status == "ok" and outcomes["a"].stats.median_ms == pytest.approx(2.0)


@pytest.mark.slow
def test_onnxruntime_matches_pytorch_and_times(tmp_path: Path) -> None:
    outcome = measure_interleaved(get_backend("onnxruntime-cpu-1t"), {"tiny": TinyAttentionNet()}, {"tiny": SHAPE},
                                  FAST, tmp_path)["tiny"]
    assert outcome.status == "ok", outcome.reason
    _check_stats(outcome.stats)
    assert outcome.details["threads"] == 1
    assert outcome.details["parity_max_abs_err"] <= outcome.details["parity_tolerance"] <= 1e-3
    assert Path(outcome.details["onnx_path"]).is_file()


class _DriftingNet(nn.Module):
    """Each call scales its output by how often it was called: the export bakes in another factor than eager."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(32, 4)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.linear(x.flatten(1)[:, :32]) * float(self.calls)


@pytest.mark.slow
def test_onnxruntime_reports_an_output_mismatch_as_failed(tmp_path: Path) -> None:
    outcome = measure_interleaved(get_backend("onnxruntime-cpu-1t"), {"drift": _DriftingNet()}, {"drift": SHAPE},
                                  FAST, tmp_path)["drift"]
    assert outcome.status == "failed"
    assert "differs from PyTorch" in outcome.reason


def test_cuda_backends_time_on_a_gpu_or_say_why_not() -> None:
    for name in ("cuda", "cuda-bf16"):
        backend = get_backend(name)
        assert backend.batch_sizes == (1, 32)
        outcome = measure_interleaved(backend, {"tiny": TinyAttentionNet()}, {"tiny": SHAPE}, FAST)["tiny"]
        if torch.cuda.is_available():
            assert outcome.status == "ok", outcome.reason
            _check_stats(outcome.stats)
        else:
            assert (outcome.status, outcome.reason) == ("skipped", "no CUDA device")
            assert machine_info().gpu is None


@pytest.mark.slow
def test_coreml_exports_an_mlpackage(tmp_path: Path) -> None:
    backend = get_backend("coreml")
    outcome = measure_interleaved(backend, {"tiny": TinyAttentionNet()}, {"tiny": SHAPE}, FAST, tmp_path)["tiny"]
    if platform.system() == "Darwin":
        assert outcome.status == "ok", outcome.reason
        return
    assert outcome.status == "skipped", outcome.reason
    assert "prediction needs macOS" in outcome.reason
    package = Path(outcome.details["artifact"])
    assert package.suffix == ".mlpackage" and (package / "Manifest.json").is_file()
    assert outcome.details["size_bytes"] > 1000


def test_backend_names_resolve_and_unknown_names_list_the_known() -> None:
    assert {"cpu-eager-1t", "cpu-eager", "onnxruntime-cpu", "onnxruntime-cpu-1t", "cuda", "coreml"} <= set(
        backend_names()
    )
    assert all(get_backend(name).name == name for name in backend_names())
    with pytest.raises(UnknownBackendError, match="cpu-eager-1t"):
        get_backend("tpu")


class _TwoLinears(nn.Module):
    """A 'family' with a reparameterisation: two linear layers in training, one fused linear for inference."""

    def __init__(self, num_classes: int = 4, **_: object) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(12, 8), nn.Linear(8, num_classes)
        self.calls = SharedLog()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append("unfused")
        return self.second(self.first(x.mean(dim=(2, 3)).repeat(1, 4)))


class _Fused(nn.Module):
    def __init__(self, source: _TwoLinears) -> None:
        super().__init__()
        self.linear = nn.Linear(12, source.second.out_features)
        with torch.no_grad():
            self.linear.weight.copy_(source.second.weight @ source.first.weight)
            self.linear.bias.copy_(source.second.weight @ source.first.bias + source.second.bias)
        self.calls = source.calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append("fused")
        return self.linear(x.mean(dim=(2, 3)).repeat(1, 4))


@pytest.fixture
def fused_family(monkeypatch) -> nn.Module:
    from zoo.models import registry

    entry = registry.ModelEntry("test_two_linears", "test", _TwoLinears, registry.Published(),
                                hooks=registry.FamilyHooks(reparameterize=_Fused))
    monkeypatch.setitem(registry._REGISTRY, entry.name, entry)
    torch.manual_seed(0)
    return registry.create(entry.name, num_classes=4)


@pytest.mark.slow
def test_eager_and_onnx_time_the_reparameterised_model(fused_family: nn.Module, tmp_path: Path) -> None:
    eager = measure_interleaved(get_backend("cpu-eager-1t"), {"m": fused_family}, {"m": SHAPE}, FAST)["m"]
    assert eager.status == "ok", eager.reason
    assert set(fused_family.calls) == {"fused"} and len(fused_family.calls) >= FAST.rounds * 3
    import onnx

    fused_family.calls.clear()
    outcome = measure_interleaved(get_backend("onnxruntime-cpu-1t"), {"m": fused_family}, {"m": SHAPE}, FAST,
                                  tmp_path)["m"]
    assert outcome.status == "ok", outcome.reason
    # the parity reference is the caller's (unfused) model, run once; the export is the fused one
    assert fused_family.calls[0] == "unfused" and fused_family.calls.count("unfused") == 1
    ops = [node.op_type for node in onnx.load(outcome.details["onnx_path"]).graph.node]
    assert sum(op in {"Gemm", "MatMul"} for op in ops) == 1, ops


@pytest.mark.slow
def test_fp32_onnx_times_the_prepared_graph_deit_has_no_resize_at_256(tmp_path: Path) -> None:
    import onnx

    from zoo.models import create

    model = create("deit_tiny", num_classes=10)
    outcome = measure_interleaved(get_backend("onnxruntime-cpu-1t"), {"deit": model}, {"deit": (1, 3, 256, 256)},
                                  TimingConfig(rounds=1, min_round_s=0.0, warmup_calls=1, min_samples_per_round=1),
                                  tmp_path)["deit"]
    assert outcome.status == "ok", outcome.reason
    exported = onnx.load(outcome.details["onnx_path"])
    ops = {node.op_type for node in exported.graph.node} | {n.op_type for f in exported.functions for n in f.node}
    assert "Resize" not in ops and "MatMul" in ops


def test_backends_run_on_this_host_unless_they_name_a_device() -> None:
    assert {get_backend(name).device_id for name in backend_names()} == {None}
    assert "device_id" in LatencyBackend.__annotations__
