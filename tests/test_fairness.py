"""Two cells differ in exactly one thing: every batch mixed, no tiny last batch, the recipe's EMA, accumulation that
counts every image, a run id that covers how a run executes, GPU defaults (single-process checks; DDP ones are in
test_fairness_ddp.py, the amp/GradScaler/channels_last paths on CPU in test_cpu_amp.py)."""
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from timm.data import Mixup

import zoo.training.components as components
from zoo.config import ConfigError, DataConfig, RunConfig, SamplerConfig, load_recipe
from zoo.data.multiscale import PAPER_RESOLUTIONS, TRAIN_BATCH_MULTIPLE, MultiScaleBatchSampler, resolution_batch_pairs
from zoo.training.components import build_ema, build_model, configure_cuda
from zoo.training.parts import build_parts
from zoo.training.distributed import DistContext
from zoo.runner.plan import plan_for
from zoo.training.engine import accumulation_weights, forward_backward, train_run

DIGITS = DataConfig(kind="digits", options={"source_size": 32}, max_train_samples=96, max_val_samples=48,
                    eval_crop_pct=1.0)
TINY_DEIT = {"depth": 1, "embed_dim": 32, "num_heads": 2}  # LayerNorm only: batches are independent


def cfg_of(**overrides) -> RunConfig:
    base = dict(model="deit_tiny", model_kwargs=TINY_DEIT, recipe=load_recipe("basic"),
                sampler=SamplerConfig(name="fixed", base_resolution=32, resolutions=(24, 32, 40)), data=DIGITS,
                epochs=1, batch_size=16, lr=0.002, lr_scaling="none", warmup_epochs=0)
    return RunConfig(**{**base, **overrides})


def test_the_papers_imagenet_batches_are_even_so_every_one_can_be_mixed():
    pairs = resolution_batch_pairs(PAPER_RESOLUTIONS, 256, 128, "scaled", multiple=TRAIN_BATCH_MULTIPLE)
    assert pairs == [(160, 326), (192, 226), (256, 128), (288, 100), (320, 80)]  # the paper: 327/227/128/101/81
    sampler = MultiScaleBatchSampler(50_000, base_batch_size=128, drop_last=True, multiple=TRAIN_BATCH_MULTIPLE)
    assert {batch for _, batch in sampler.batch_plan(0)} <= {batch for _, batch in pairs}


def test_advanced_multiscale_mixes_every_training_batch(monkeypatch, tmp_path):
    sizes = []
    original = Mixup.__call__
    monkeypatch.setattr(Mixup, "__call__", lambda self, x, t: (sizes.append(len(x)), original(self, x, t))[1])
    # base batch 18 at 32 px scales to 32 / 18 / 11 at 24 / 32 / 40 px: the 40 px batches used to go unmixed.
    cfg = cfg_of(recipe=load_recipe("advanced"), batch_size=18,
                 sampler=SamplerConfig(name="multiscale", base_resolution=32, resolutions=(24, 32, 40)))
    run = train_run(plan_for(cfg, DistContext()), DistContext(), tmp_path, progress=False)
    # Every batch of the epoch went through Mixup/CutMix, the 40 px ones (11 rounded down to an even 10) included.
    assert sizes == [10, 18, 32, 18, 10] and run.updates == 5


def test_a_last_batch_of_one_image_never_reaches_batchnorm(tmp_path):
    # 65 images in batches of 16 left a last batch of 1, which BatchNorm rejects in training.
    cfg = cfg_of(model="mobilenetv2_100", model_kwargs={}, data=replace(DIGITS, max_train_samples=65))
    outcome = train_run(plan_for(cfg, DistContext()), DistContext(), tmp_path, progress=False)
    assert outcome.updates == 4 and outcome.train_samples == 64


def test_the_ema_decay_in_force_is_the_recipes(tmp_path):
    outcome = train_run(plan_for(cfg_of(epochs=2), DistContext()), DistContext(), tmp_path, progress=False)
    assert [row.ema_decay for row in outcome.history] == [0.9995, 0.9995]
    scaled = cfg_of(ema_time_scale=0.1).resolved("cpu", 1, False)
    assert components.ema_decay(scaled) == pytest.approx(1 - 0.005)
    # A warm-up, when a recipe asks for one, is bounded: the decay is reached after exactly its epochs.
    warm = cfg_of(recipe=load_recipe("basic", {"ema_warmup_epochs": 1.0}))
    ema = build_ema(warm, torch.nn.Linear(2, 2), updates_per_epoch=40)
    assert ema.get_decay(10) < ema.get_decay(20) < 0.9995
    assert ema.get_decay(40) == pytest.approx(0.9995) and ema.get_decay(4000) == 0.9995


def test_accumulation_weights_each_image_alike_and_keeps_a_short_last_group():
    plan = [(24, 6), (40, 2), (32, 4), (24, 6), (40, 2)]
    assert accumulation_weights(plan, 2) == [(0.75, False), (0.25, True), (0.4, False), (0.6, True), (1.0, True)]


def test_an_accumulated_update_is_the_mean_over_its_images_across_resolutions():
    cfg = cfg_of(accum_steps=2).resolved("cpu", 1, False)
    parts = build_parts(cfg, DistContext(), compile_model=False)
    parts.train_model.train()
    torch.manual_seed(0)
    batches = [(torch.randn(6, 3, 24, 24), torch.randint(0, 10, (6,))), (torch.randn(2, 3, 40, 40), torch.randint(0, 10, (2,)))]
    for (images, targets), (weight, boundary) in zip(batches, accumulation_weights([(24, 6), (40, 2)], 2)):
        forward_backward(parts, DistContext(), images, targets, weight, boundary)
    accumulated = [p.grad.clone() for p in parts.model.parameters() if p.grad is not None]
    parts.optimizer.zero_grad()
    per_image = [F.cross_entropy(parts.model(x), t, reduction="none", label_smoothing=0.1) for x, t in batches]
    torch.cat(per_image).mean().backward()  # one big batch of all 8 images
    expected = [p.grad for p in parts.model.parameters() if p.grad is not None]
    for a, b in zip(accumulated, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_accumulation_takes_every_micro_batch_and_the_schedule_ends_on_the_last_update(tmp_path):
    cfg = cfg_of(accum_steps=3, batch_size=8, epochs=2, min_lr=1e-4,
                 sampler=SamplerConfig(name="multiscale", base_resolution=32, resolutions=(24, 32, 40)))
    outcome = train_run(plan_for(cfg, DistContext()), DistContext(), tmp_path, progress=False)
    resolved = cfg.resolved("cpu", 1, False)
    parts = build_parts(resolved, DistContext(), compile_model=False)
    plans = [parts.loaders.sampler.batch_plan(epoch) for epoch in range(2)]
    assert outcome.updates == sum(-(-len(plan) // 3) for plan in plans)  # ceil: a short last group still counts
    assert outcome.train_samples == sum(batch for plan in plans for _, batch in plan)
    assert parts.scheduler.t_initial == outcome.updates
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4, rel=0.05)  # cosine ran to its end


@pytest.mark.slow
def test_a_workers_run_resumes_exactly(tmp_path):
    cfg = cfg_of(recipe=load_recipe("advanced"), epochs=2, data=replace(DIGITS, workers=1))
    straight = train_run(plan_for(cfg, DistContext()), DistContext(), tmp_path / "a", progress=False)
    train_run(plan_for(cfg, DistContext()), DistContext(), tmp_path / "b", progress=False, stop_after_epochs=1)
    resumed = train_run(plan_for(cfg, DistContext()), DistContext(), tmp_path / "b", progress=False)
    assert resumed.resumed_from_epoch == 1
    assert resumed.history[-1].train_loss == pytest.approx(straight.history[-1].train_loss, abs=1e-6)
    assert resumed.history[-1].val_loss == pytest.approx(straight.history[-1].val_loss, abs=1e-6)


def test_run_id_covers_processes_precision_and_layout():
    cfg = cfg_of()
    cpu1, cpu8 = cfg.resolved("cpu", 1, False), cfg.resolved("cpu", 8, False)
    assert cpu1.run_id() != cpu8.run_id() and cpu8.global_batch == 16 * 8
    gpu, old_gpu = cfg.resolved("cuda", 1, True), cfg.resolved("cuda", 1, False)
    assert (gpu.amp, gpu.amp_dtype, gpu.channels_last) == (True, "bfloat16", True)
    assert old_gpu.amp_dtype == "float16" and len({cpu1.run_id(), gpu.run_id(), old_gpu.run_id()}) == 3
    assert cpu8.resolved("cpu", 8, False) == cpu8  # resolving is idempotent
    with pytest.raises(ConfigError, match="planned for 8 processes"):
        cpu8.resolved("cpu", 1, False)


def test_gpu_defaults_and_grid_models_built_at_the_base_resolution():
    configure_cuda()
    assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32
    deit = build_model(cfg_of(sampler=SamplerConfig(name="fixed", base_resolution=48)), 10)
    assert tuple(deit.patch_embed.img_size) == (48, 48) and deit.pos_embed.shape[1] == 1 + 3 * 3
    pit = build_model(cfg_of(model="pit_ti", model_kwargs={}, sampler=SamplerConfig(base_resolution=48)), 10)
    assert tuple(pit.pos_embed.shape[-2:]) == pit.token_grid((48, 48))
