"""One run end to end on the bundled digits: resume equals uninterrupted, divergence is recorded, records are full."""
import math
import subprocess
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn

from zoo.config import DataConfig, ExecConfig, RunConfig, SamplerConfig, WandbConfig, load_recipe
from zoo.training.distributed import DistContext
from zoo.training.engine import train_run
from zoo.training.guards import Diverged
from zoo.runner.execute import Workspace, execute_run
from zoo.runner.plan import plan_for
from zoo.models.registry import _REGISTRY, create, register
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


def subprocess_git_commit() -> str | None:
    """The checkout's short commit as git itself prints it (None outside a git checkout, as the record has it)."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                         text=True)
    return out.stdout.strip() or None


def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "out", tmp_path / "store", WandbConfig(mode="offline"),
                     ExecConfig(progress=False, log_every=2), "test")


@pytest.mark.slow
def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    cfg = tiny_cfg()
    straight = train_run(plan_for(cfg, DistContext()), DistContext(), tmp_path / "a", progress=False)
    first = train_run(plan_for(cfg, DistContext()), DistContext(), tmp_path / "b", progress=False,
                      stop_after_epochs=1)  # "killed" after epoch 1
    assert len(first.history) == 1 and (tmp_path / "b" / "checkpoint.pt").is_file()
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["optimizer"]["state"]  # moments to resume
    resumed = train_run(plan_for(cfg, DistContext()), DistContext(), tmp_path / "b", progress=False)
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
    again = train_run(plan_for(cfg, DistContext()), DistContext(), tmp_path / "a", progress=False)
    assert again.resumed_from_epoch == cfg.epochs and again.updates == straight.updates
    assert again.history[-1].val_top1 == straight.history[-1].val_top1


class _Exploding(nn.Module):
    """Fine for a few steps, then NaN: exercises the divergence path exactly as a real blow-up would."""

    def __init__(self, num_classes: int, nan_at: int):
        super().__init__()
        self.head = nn.Linear(3, num_classes)
        self.nan_at = nan_at
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        if self.training:
            self.calls += 1
        logits = self.head(x.mean((2, 3)))
        return logits * float("nan") if self.calls >= self.nan_at else logits


@pytest.fixture
def exploding_model():
    register("test_exploding", family="test")(
        lambda num_classes=10, drop_path_rate=0.0, nan_at=4, **_: _Exploding(num_classes, nan_at))
    yield "test_exploding"
    _REGISTRY.pop("test_exploding", None)


@pytest.mark.slow
def test_divergence_is_recorded_with_its_step_and_the_next_run_goes_on(tmp_path, exploding_model):
    store = ResultsStore(tmp_path / "store")
    ws = workspace(tmp_path)
    bad = execute_run(plan_for(tiny_cfg(model=exploding_model, sampler=SamplerConfig(base_resolution=32)),
                               DistContext()), ws, DistContext(), store)
    assert (bad.status, bad.diverged_step, bad.diverged_epoch, bad.epochs_done) == ("diverged", 4, 1, 0)
    assert bad.error == "loss became nan at optimiser step 4 (epoch 1)"
    good = execute_run(plan_for(tiny_cfg(epochs=1), DistContext()), ws, DistContext(), store)
    assert (good.status, good.epochs_done) == ("finished", 1)
    assert store.done_ids() == {bad.run_id, good.run_id}


def test_divergence_under_accumulation_names_the_update_not_the_micro_batch(tmp_path, exploding_model):
    # 6 micro-batches, 2 per update: the 5th forward belongs to update 3 (the window counts micro-batch losses).
    cfg = tiny_cfg(model=exploding_model, model_kwargs={"nan_at": 5}, sampler=SamplerConfig(base_resolution=32),
                   accum_steps=2)
    with pytest.raises(Diverged) as caught:
        train_run(plan_for(cfg, DistContext()), DistContext(), tmp_path, progress=False, log_every=2)
    assert (caught.value.step, caught.value.epoch, math.isnan(caught.value.loss)) == (3, 1, True)


@pytest.mark.slow  # 4-7 s: out of make test-fast's edit-test loop
def test_record_has_metrics_provenance_and_matches_wandb(tmp_path):
    from zoo.tracking.offline import find_offline_runs, read_offline_run

    store = ResultsStore(tmp_path / "store")
    head_before = subprocess_git_commit()  # another commit during the run moves HEAD: either is the run's
    record = execute_run(plan_for(tiny_cfg(recipe=load_recipe("advanced"), epochs=1), DistContext()),
                         workspace(tmp_path), DistContext(), store)
    assert record.status == "finished", record.traceback
    # One epoch of 96 images (multi-scale batches of 10/16/28 images: 6 updates), validated on 64 images.
    [row] = record.history
    assert (record.epochs_done, record.updates, row.updates, row.val_images) == (1, 6, 6, 64)
    assert (record.top1, record.top5, record.val_loss, record.ece) == (row.val_top1, row.val_top5, row.val_loss,
                                                                       row.val_ece)
    assert (record.best_top1, record.best_top5, record.top1_raw) == (row.val_top1, row.val_top5, row.val_top1_raw)
    assert record.top1 < record.top5 and math.isfinite(record.val_loss)  # a 10-class top-5 is wider than top-1
    assert record.train_img_per_s == pytest.approx(96 / record.train_time_s)
    assert record.wall_time_s > record.train_time_s == row.epoch_time_s  # wall time adds set-up and evaluation
    assert record.peak_memory_mb > 100  # the process's peak RSS (torch alone takes more): not a unit mix-up
    assert record.config_hash == record.run_id == record.wandb_run_id
    assert record.params == sum(p.numel() for p in create("mobilevit_xxs_aft", num_classes=10).parameters())
    assert (record.versions["torch"], record.versions["timm"]) == (torch.__version__.split("+")[0], timm.__version__)
    assert record.git_commit in {head_before, subprocess_git_commit()}
    assert record.config.recipe.mixup == 0.8 and record.config.world_size == 1  # the typed, resolved config
    runs = find_offline_runs(tmp_path / "out")
    assert len(runs) == 1
    logged = read_offline_run(runs[0])
    assert logged.config["model"] == "mobilevit_xxs_aft" and logged.config["recipe"]["name"] == "advanced"
    assert logged.summary["top1"] == pytest.approx(record.top1)
    losses = [row["train/loss"] for row in logged.history if "train/loss" in row]
    assert losses and all(loss > 0.5 for loss in losses)  # a mixed-target cross-entropy; never a 0.0 placeholder
    assert any("epoch/val_top1" in row for row in logged.history)


@pytest.mark.slow
def test_a_rerun_of_the_same_run_continues_its_wandb_run(tmp_path):
    store = ResultsStore(tmp_path / "store")
    cfg = tiny_cfg(epochs=1)
    first = execute_run(plan_for(cfg, DistContext()), workspace(tmp_path), DistContext(), store)
    again = execute_run(plan_for(cfg, DistContext()), workspace(tmp_path), DistContext(),
                        store)  # e.g. after an interruption
    assert first.wandb_run_id == again.wandb_run_id == first.run_id
