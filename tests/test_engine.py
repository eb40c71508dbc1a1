"""One run end to end on the bundled digits: resume equals uninterrupted, divergence is recorded, records are full."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from zoo.config import DataConfig, ExecConfig, RunConfig, SamplerConfig, WandbConfig, load_recipe
from zoo.training.distributed import DistContext
from zoo.training.engine import train_run
from zoo.runner.execute import Workspace, execute_run
from zoo.models.registry import _REGISTRY, register
from zoo.results import ResultsStore

TINY_DATA = DataConfig(kind="digits", options={"source_size": 16}, max_train_samples=96, max_val_samples=64,
                       eval_crop_pct=1.0)


def tiny_cfg(**overrides) -> RunConfig:
    base = dict(
        model="mobilevit_xxs_aft", recipe=load_recipe("basic"),
        sampler=SamplerConfig(name="multiscale", base_resolution=32, resolutions=(24, 32, 40)),
        data=TINY_DATA, epochs=2, batch_size=16, lr=0.002, lr_scaling="none", warmup_epochs=0.5,
    )
    base.update(overrides)
    return RunConfig(**base)


def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "out", tmp_path / "store", WandbConfig(mode="offline"),
                     ExecConfig(progress=False, log_every=2), "test")


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    cfg = tiny_cfg()
    straight = train_run(cfg, DistContext(), tmp_path / "a", progress=False)
    first = train_run(cfg, DistContext(), tmp_path / "b", progress=False, stop_after_epochs=1)  # "killed" after epoch 1
    assert len(first.history) == 1 and (tmp_path / "b" / "checkpoint.pt").is_file()
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["optimizer"]["state"]  # moments to resume
    resumed = train_run(cfg, DistContext(), tmp_path / "b", progress=False)
    assert resumed.resumed_from_epoch == 1 and resumed.updates == straight.updates
    for a, b in zip(straight.history, resumed.history):
        for key in ("train_loss", "val_top1", "val_loss", "val_ece"):
            assert getattr(a, key) == pytest.approx(getattr(b, key), abs=1e-6), key
    # The raw (non-EMA) weights are evaluated at the final epoch only, and the resumed run gets the same figure.
    assert [row.val_top1_raw is None for row in straight.history] == [True, False]
    assert resumed.history[-1].val_top1_raw == pytest.approx(straight.history[-1].val_top1_raw, abs=1e-6)
    # A finished run's checkpoint keeps the weights, EMA and curve but not the optimizer moments (half the disk);
    # running it again trains nothing and gives back the same figures.
    final = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert final["optimizer"]["state"] == {} and final["model"] and final["epoch"] == cfg.epochs
    again = train_run(cfg, DistContext(), tmp_path / "a", progress=False)
    assert again.resumed_from_epoch == cfg.epochs and again.updates == straight.updates
    assert again.history[-1].val_top1 == straight.history[-1].val_top1


class _Exploding(nn.Module):
    """Fine for a few steps, then NaN: exercises the divergence path exactly as a real blow-up would."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.head = nn.Linear(3, num_classes)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        if self.training:
            self.calls += 1
        logits = self.head(x.mean((2, 3)))
        return logits * float("nan") if self.calls >= 4 else logits


@pytest.fixture
def exploding_model():
    register("test_exploding", family="test")(lambda num_classes=10, drop_path_rate=0.0, **_: _Exploding(num_classes))
    yield "test_exploding"
    _REGISTRY.pop("test_exploding", None)


def test_divergence_is_recorded_with_its_step_and_the_next_run_goes_on(tmp_path, exploding_model):
    store = ResultsStore(tmp_path / "store")
    ws = workspace(tmp_path)
    bad = execute_run(tiny_cfg(model=exploding_model, sampler=SamplerConfig(base_resolution=32)), ws, DistContext(), store)
    assert bad.status == "diverged" and bad.diverged_step == 4 and "nan" in bad.error
    good = execute_run(tiny_cfg(epochs=1), ws, DistContext(), store)
    assert good.status == "finished"
    assert store.done_ids() == {bad.run_id, good.run_id}


def test_record_has_metrics_provenance_and_matches_wandb(tmp_path):
    from zoo.tracking.offline import find_offline_runs, read_offline_run

    store = ResultsStore(tmp_path / "store")
    record = execute_run(tiny_cfg(recipe=load_recipe("advanced"), epochs=1), workspace(tmp_path), DistContext(), store)
    assert record.status == "finished", record.traceback
    for key in ("top1", "top5", "best_top1", "val_loss", "ece", "updates", "train_img_per_s", "peak_memory_mb",
                "wall_time_s", "config_hash", "git_commit", "versions", "params", "config"):
        assert getattr(record, key) is not None, key
    assert 0.0 <= record.top1 <= record.top5 <= 1.0 and math.isfinite(record.val_loss)
    assert record.config["recipe"]["mixup"] == 0.8
    runs = find_offline_runs(tmp_path / "out")
    assert len(runs) == 1
    logged = read_offline_run(runs[0])
    assert logged.config["model"] == "mobilevit_xxs_aft" and logged.config["recipe"]["name"] == "advanced"
    assert logged.summary["top1"] == pytest.approx(record.top1)
    assert any("train/loss" in row for row in logged.history)
    assert any("epoch/val_top1" in row for row in logged.history)


def test_a_rerun_of_the_same_run_continues_its_wandb_run(tmp_path):
    store = ResultsStore(tmp_path / "store")
    cfg = tiny_cfg(epochs=1)
    first = execute_run(cfg, workspace(tmp_path), DistContext(), store)
    again = execute_run(cfg, workspace(tmp_path), DistContext(), store)  # e.g. after an interruption
    assert first.wandb_run_id == again.wandb_run_id == first.run_id
