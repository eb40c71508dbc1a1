"""The GPU code paths, run on CPU where torch allows it: bf16 autocast, fp16 autocast with its GradScaler (skipped
steps, checkpointed scale, resume), channels_last, and the bf16/fp16 choice — so CI covers their logic."""
import pytest
import torch
import torch.nn as nn

from zoo.config import DataConfig, RunConfig, SamplerConfig, load_recipe
from zoo.training.parts import build_parts
from zoo.training.distributed import DistContext
from zoo.runner.plan import plan_for
from zoo.training.engine import RunOutcome, forward_backward, optimizer_step, train_run

DIGITS = DataConfig(kind="digits", options={"source_size": 32}, max_train_samples=96, max_val_samples=48,
                    eval_crop_pct=1.0)
TINY_DEIT = {"depth": 1, "embed_dim": 32, "num_heads": 2}
UPDATES_PER_EPOCH = 6  # 96 images in batches of 16


def cfg_of(**overrides) -> RunConfig:
    base = dict(model="deit_tiny", model_kwargs=TINY_DEIT, recipe=load_recipe("basic"),
                sampler=SamplerConfig(name="fixed", base_resolution=32), data=DIGITS,
                epochs=1, batch_size=16, lr=0.002, lr_scaling="none", warmup_epochs=0)
    return RunConfig(**{**base, **overrides})


def one_step_output_dtypes(cfg: RunConfig) -> tuple[set[torch.dtype], torch.Tensor, RunOutcome]:
    """The dtypes every Linear produced inside one training step of `cfg`, the step's loss, and its outcome."""
    parts = build_parts(cfg, DistContext(), compile_model=False)
    parts.train_model.train()
    dtypes = set()
    for module in parts.model.modules():
        if isinstance(module, nn.Linear):
            module.register_forward_hook(lambda mod, args, out: dtypes.add(out.dtype))
    torch.manual_seed(0)
    images, targets = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    loss = forward_backward(parts, DistContext(), images, targets, weight=1.0, boundary=True)
    outcome = RunOutcome()
    optimizer_step(cfg, parts, outcome)
    return dtypes, loss, outcome


def test_amp_on_cpu_resolves_to_bf16_and_fp16_is_kept_when_asked():
    assert cfg_of(amp=True).resolved("cpu", 1, False).amp_dtype == "bfloat16"  # CPUs autocast in bf16
    assert cfg_of(amp=True, amp_dtype="float16").resolved("cpu", 1, False).amp_dtype == "float16"
    plain = cfg_of().resolved("cpu", 1, False)
    assert (plain.amp, plain.channels_last) == (False, False)  # CPU defaults: neither
    bf16 = build_parts(cfg_of(amp=True).resolved("cpu", 1, False), DistContext(), compile_model=False)
    fp16 = build_parts(cfg_of(amp=True, amp_dtype="float16").resolved("cpu", 1, False), DistContext(), False)
    # Only float16 needs loss scaling (its exponent range is narrow); bf16 has float32's.
    assert (bf16.scaler.is_enabled(), fp16.scaler.is_enabled()) == (False, True)


def test_bf16_autocast_runs_the_step_in_bf16_on_cpu():
    dtypes, loss, outcome = one_step_output_dtypes(cfg_of(amp=True).resolved("cpu", 1, False))
    assert dtypes == {torch.bfloat16}  # every matmul of the step ran in bf16
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and outcome.updates == 1  # the loss is autocast up
    fp32_dtypes, _, _ = one_step_output_dtypes(cfg_of().resolved("cpu", 1, False))
    assert fp32_dtypes == {torch.float32}
    fp16_dtypes, _, _ = one_step_output_dtypes(cfg_of(amp=True, amp_dtype="float16").resolved("cpu", 1, False))
    assert fp16_dtypes == {torch.float16}


def test_a_bf16_epoch_on_cpu_trains_like_fp32(tmp_path):
    fp32 = train_run(plan_for(cfg_of(), DistContext()), DistContext(), tmp_path / "fp32", progress=False)
    bf16 = train_run(plan_for(cfg_of(amp=True), DistContext()), DistContext(), tmp_path / "bf16", progress=False)
    assert bf16.updates == fp32.updates == UPDATES_PER_EPOCH
    # bf16 keeps 8 bits of mantissa: the same run within 1 % (the weights and the optimiser stay float32)
    assert bf16.history[0].train_loss == pytest.approx(fp32.history[0].train_loss, rel=1e-2)
    assert bf16.history[0].val_loss == pytest.approx(fp32.history[0].val_loss, rel=1e-2)


def test_fp16_grad_scaler_on_cpu_is_checkpointed_and_resumed(tmp_path):
    cfg = cfg_of(amp=True, amp_dtype="float16", epochs=2)
    straight = train_run(plan_for(cfg, DistContext()), DistContext(), tmp_path / "a", progress=False)
    train_run(plan_for(cfg, DistContext()), DistContext(), tmp_path / "b", progress=False, stop_after_epochs=1)
    halfway = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["scaler"]
    # torch's initial scale, and one growth-tracker tick per update without inf/NaN gradients
    assert (halfway["scale"], halfway["_growth_tracker"]) == (2.0**16, UPDATES_PER_EPOCH)
    resumed = train_run(plan_for(cfg, DistContext()), DistContext(), tmp_path / "b", progress=False)
    final = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["scaler"]
    # The resumed scaler continued from the checkpoint's (a fresh one would count 6 ticks, not 12).
    assert final == torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["scaler"]
    assert final["_growth_tracker"] == 2 * UPDATES_PER_EPOCH
    assert resumed.history[-1].val_loss == pytest.approx(straight.history[-1].val_loss, abs=1e-6)


def test_fp16_grad_scaler_on_cpu_skips_an_inf_step_and_halves_its_scale():
    cfg = cfg_of(amp=True, amp_dtype="float16").resolved("cpu", 1, False)
    parts = build_parts(cfg, DistContext(), compile_model=False)
    parts.train_model.train()
    torch.manual_seed(0)
    forward_backward(parts, DistContext(), torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,)), 1.0, True)
    before = [p.detach().clone() for p in parts.model.parameters()]
    next(p for p in parts.model.parameters() if p.grad is not None).grad.view(-1)[0] = float("inf")  # an overflow
    outcome = RunOutcome()
    optimizer_step(cfg, parts, outcome)
    assert all(torch.equal(a, b) for a, b in zip(before, parts.model.parameters()))  # the step was skipped
    assert parts.scaler.get_scale() == 2.0**15 and outcome.updates == 1  # the schedule still counts the update


@pytest.mark.slow
def test_channels_last_on_cpu_changes_the_layout_not_the_numbers(tmp_path):
    cfg = cfg_of(model="mobilevit_xxs", model_kwargs={}, channels_last=True).resolved("cpu", 1, False)
    parts = build_parts(cfg, DistContext(), compile_model=False)
    conv = next(m for m in parts.model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    parts.model.register_forward_pre_hook(
        lambda mod, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    parts.train_model.train()
    forward_backward(parts, DistContext(), torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,)), 1.0, True)
    assert seen == [True]  # the step feeds the model channels-last images
    on = train_run(plan_for(cfg_of(model="mobilevit_xxs", model_kwargs={}, channels_last=True), DistContext()),
                   DistContext(), tmp_path / "on", progress=False)
    off = train_run(plan_for(cfg_of(model="mobilevit_xxs", model_kwargs={}, channels_last=False), DistContext()),
                    DistContext(), tmp_path / "off", progress=False)
    for key in ("train_loss", "val_loss", "val_top1"):  # float32 kernels in another order: 1e-5 relative
        assert getattr(on.history[0], key) == pytest.approx(getattr(off.history[0], key), rel=1e-5), key
