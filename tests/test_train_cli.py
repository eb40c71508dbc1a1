"""`python -m zoo.train --key=value`: every field settable, typed as the field, W&B-agent spellings accepted."""
import subprocess
import sys

import pytest

from zoo.train import resolve, split_argv
from zoo.config.typed import ConfigError


def run_cfg(*args: str):
    return resolve(split_argv(list(args)))


def test_values_are_parsed_by_field_type_including_agent_spellings():
    cfg, matrix = run_cfg("--model=deit_tiny", "--recipe=advanced", "--sampler=multiscale", "--lr=0.002",
                          "--amp=False", "--epochs", "3", "--recipe.mixup=0.5", "--sampler.mode=v0.1",
                          "--model_kwargs.img_size=64", "--seed=7", "--betas=(0.9, 0.99)")
    assert (cfg.model, cfg.recipe.name, cfg.sampler.name, cfg.sampler.mode) == ("deit_tiny", "advanced", "multiscale", "v0.1")
    assert cfg.lr == 0.002 and cfg.amp is False and cfg.epochs == 3 and cfg.seed == 7 and cfg.betas == (0.9, 0.99)
    assert cfg.recipe.mixup == 0.5 and cfg.recipe.cutmix == 1.0  # override on top of the recipe file
    assert cfg.model_kwargs == {"img_size": 64}
    assert matrix.models == ("deit_tiny",)


def test_aliases_and_outer_keys():
    cfg, matrix = run_cfg("--model=mobilevit_xs", "--weight_decay=0.02", "--patch_size=[4, 4, 4]",
                          "--wandb.mode=disabled", "--store_dir=/tmp/x", "--execution.device=cpu")
    assert cfg.recipe.weight_decay == 0.02 and cfg.model_kwargs["patch_size"] == [4, 4, 4]
    assert matrix.wandb.mode == "disabled" and matrix.store_dir == "/tmp/x" and matrix.execution.device == "cpu"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--lrr=0.1"], "--lrr: unknown key"),
        (["--lr=fast"], "lr: expected a number"),
        (["--amp=maybe"], "amp: expected"),
        (["--recipe=fancy"], "allowed: advanced, basic"),
        (["--sampler=random"], "'fixed', 'multiscale'"),
        (["--recipe.mixupp=1"], "mixupp: unknown key"),
        (["lr=0.1"], "expected --key=value"),
    ],
)
def test_bad_keys_and_values_are_clear_errors(args, needle):
    with pytest.raises(ConfigError, match=None) as err:
        run_cfg(*args)
    assert needle in str(err.value)


@pytest.mark.parametrize("arg, needle", [("--epochs=-2", "epochs: must be > 0"), ("--batch_size=0", "batch_size"),
                                         ("--accum_steps=0", "accum_steps: must be > 0"),
                                         ("--optimizer=adamz", "a timm optimizer name"),
                                         ("--sampler.resolutions=[]", "non-empty"),
                                         ("--warmup_epochs=500", "shorter than epochs")])
def test_out_of_range_command_line_values_are_clear_errors(arg, needle):
    """In-process: the rules are resolve()'s; the one subprocess below shows how `python -m zoo.train` reports
    any of them (exit 2, one message, nothing written)."""
    with pytest.raises(ConfigError) as err:
        run_cfg(arg)
    assert str(err.value).startswith("command line: ") and needle in str(err.value)


@pytest.mark.slow
def test_cli_exits_2_on_a_bad_value_and_writes_nothing(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "zoo.train", "--epochs=-2", f"--store_dir={tmp_path}/board",
                           f"--output_dir={tmp_path}/out"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "epochs: must be > 0, got -2" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_run_is_planned_once_for_the_processes_it_starts_in():
    """`zoo.train` plans its one run as the matrix plans a cell: the same resolved config, hence the same id, and
    a planned run refuses to train on another number of processes than its id covers."""
    from zoo.config import Execution, PlannedRun, RunConfig, SamplerConfig, load_recipe
    from zoo.runner.plan import plan_for
    from zoo.training.distributed import DistContext

    cfg = RunConfig(model="mobilevit_xxs", recipe=load_recipe("basic"), sampler=SamplerConfig())
    run = plan_for(cfg, DistContext())
    assert run == PlannedRun.plan(cfg, Execution("cpu", 1, False)) and run.run_id == run.config.run_id()
    assert (run.config.world_size, run.config.amp, run.config.channels_last) == (1, False, False)
    assert run.run_id != PlannedRun.plan(cfg, Execution("cuda", 1, True)).run_id  # AMP in bf16 is another run
    with pytest.raises(ValueError, match="resolved config"):
        PlannedRun(cfg)  # an unresolved config has no identity yet
    with pytest.raises(ConfigError, match="planned for 1 processes, started on 2"):
        run.check_world(2)
