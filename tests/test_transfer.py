"""`init:` — fine-tuning from another matrix's cell, a file or timm's weights (issue 29), fully offline: the spellings,
run ids, what loads (recorded and in the plan), sources trained first, a failed source, the knobs, and every exit 2."""
import hashlib
import json
from pathlib import Path

import pytest
import timm
import torch
import yaml

from zoo.config import ConfigError, DataConfig, RunConfig, SamplerConfig, load_matrix, load_recipe, to_dict
from zoo.config.init import InitConfig
from zoo.config.typed import from_dict
from zoo.results import ResultsStore
from zoo.run import main as zoo_run
from zoo.runner.plan import plan_for
from zoo.training.distributed import DistContext
from zoo.training.engine import train_run
from zoo.training.parts import build_parts

DIGITS = DataConfig(kind="digits", options={"source_size": 16}, max_train_samples=96, max_val_samples=32,
                    eval_crop_pct=1.0)


def cls_cfg(**overrides) -> RunConfig:
    base = dict(model="mobilevit_xxs", recipe=load_recipe("basic", {"hflip": 0.0}),
                sampler=SamplerConfig(name="fixed", base_resolution=32), data=DIGITS, epochs=1, batch_size=16,
                lr_scaling="none", warmup_epochs=0.5, ema_time_scale=0.01)
    return RunConfig(**{**base, **overrides})


def write_matrices(tmp_path: Path, dense_init=None, cls_seeds=(0,), **dense_extra) -> tuple[Path, Path]:
    common = {"recipes": ["basic"], "recipe_overrides": {"hflip": 0.0}, "samplers": ["fixed"], "seeds": [0],
              "wandb": {"mode": "disabled"}, "execution": {"progress": False, "threads": 1},
              "measure": {"enabled": False}}
    cls = {**common, "name": "cls", "seeds": list(cls_seeds), "models": ["mobilenetv2_100"],
           "data": {"kind": "digits", "options": {"source_size": 16}, "max_train_samples": 96,
                    "max_val_samples": 32, "eval_crop_pct": 1.0},
           "resolution": {"base_resolution": 32, "resolutions": [32]},
           "budget": {"epochs": 1, "batch_size": 16, "lr_scaling": "none", "warmup_epochs": 0.5,
                      "ema_time_scale": 0.01},
           "output_dir": "out/cls", "store_dir": "board-cls"}
    dense = {**common, "name": "dense", "task": ["detection", "segmentation"], "models": ["mobilenetv2_100"],
             "init": dense_init if dense_init is not None else {"matrix": "cls.yaml"},
             "data": {"kind": "scattered-digits", "options": {"train_size": 16, "val_size": 8}},
             "resolution": {"base_resolution": 64, "resolutions": [64]},
             "budget": {"epochs": 1, "batch_size": 8, "lr_scaling": "none", "warmup_epochs": 0.5},
             "output_dir": "out/dense", "store_dir": "board-dense", **dense_extra}
    (tmp_path / "cls.yaml").write_text(yaml.safe_dump(cls))
    (tmp_path / "dense.yaml").write_text(yaml.safe_dump(dense))
    return tmp_path / "cls.yaml", tmp_path / "dense.yaml"


# ---------------------------------------------------------------------------------------------------- spellings
@pytest.mark.parametrize("value, expected", [
    ("scratch", InitConfig()), (None, InitConfig()), ("timm", InitConfig(kind="timm")),
    ({"matrix": "runs.yaml"}, InitConfig(kind="matrix", path="runs.yaml")),
    ("matrix:runs.yaml", InitConfig(kind="matrix", path="runs.yaml")),
    ("file:w.pt", InitConfig(kind="file", path="w.pt")),
    ({"timm": True, "backbone_lr_scale": 0.1, "freeze_backbone_epochs": 1},
     InitConfig(kind="timm", backbone_lr_scale=0.1, freeze_backbone_epochs=1)),
])
def test_init_spellings(value, expected):
    from zoo.config.typed import coerce

    assert coerce(value, InitConfig, "runs.yaml", "init") == expected


@pytest.mark.parametrize("value, message", [
    ("pretrained", "runs.yaml: init: expected one of scratch, timm, {matrix: PATH}, {file: PATH}"),
    ({"matrix": "a.yaml", "file": "b.pt"}, "runs.yaml: init: one of matrix, file or timm, got matrix, file"),
    ({"backbone_lr_scale": 0.1}, "runs.yaml: init.backbone_lr_scale: must be 1.0 with freeze_backbone_epochs 0 "
                                 "under init scratch"),
    ({"matrix": "a.yaml", "freeze_backbone_epochs": -1}, "runs.yaml: init.freeze_backbone_epochs: must be >= 0"),
])
def test_bad_init_spellings_name_the_key(value, message):
    from zoo.config.typed import coerce

    with pytest.raises(ConfigError) as err:
        coerce(value, InitConfig, "runs.yaml", "init")
    assert str(err.value).startswith(message)


def test_the_command_line_takes_init_and_its_knobs(tmp_path):
    from zoo.config.cli import resolve

    cls, _ = write_matrices(tmp_path)
    cfg, _ = resolve({"config": str(cls), "init": "file:w.pt", "init.backbone_lr_scale": "0.5"})
    assert cfg.init == InitConfig(kind="file", path="w.pt", backbone_lr_scale=0.5)
    cfg, _ = resolve({"config": str(cls)})
    assert cfg.init == InitConfig()  # the matrix file's init (scratch)


def test_scratch_run_ids_do_not_move_and_pretrained_ones_hash_the_source_not_the_path():
    cfg = cls_cfg()
    data = to_dict(cfg)
    del data["task"], data["init"]  # what the hash covered before either field existed
    old = hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    assert cfg.run_id() == old
    a = cls_cfg(init=InitConfig(kind="file", path="a.pt", source="sha256:00", weights="/x/a.pt"))
    moved = cls_cfg(init=InitConfig(kind="file", path="b/a.pt", source="sha256:00", weights="/y/a.pt"))
    other = cls_cfg(init=InitConfig(kind="file", path="a.pt", source="sha256:11", weights="/x/a.pt"))
    knob = cls_cfg(init=InitConfig(kind="file", path="a.pt", source="sha256:00", backbone_lr_scale=0.5))
    assert a.run_id() == moved.run_id() and len({old, a.run_id(), other.run_id(), knob.run_id()}) == 4
    stored = from_dict(RunConfig, to_dict(a), "results.jsonl", "config")  # a record's config reads back
    assert stored.init == a.init and stored.run_id() == a.run_id()


# ------------------------------------------------------------------------------------------------------ matrix
@pytest.mark.slow  # 4-7 s: out of make test-fast's edit-test loop
def test_fine_tuning_cells_train_their_source_first_and_record_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_matrices(tmp_path)
    assert zoo_run(["dense.yaml", "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert dry.count("todo (trained first)") == 2 and "reported when the cell starts" in dry
    assert not (tmp_path / "board-cls").exists()  # a dry run trains nothing
    assert zoo_run(["dense.yaml", "--no-measure", "--no-leaderboard"]) == 0
    out = capsys.readouterr().out
    assert "init: training the source cells of cls.yaml first" in out
    (source,) = ResultsStore(tmp_path / "board-cls").records()
    assert source.status == "finished" and source.task == "classification"
    assert f"run {source.run_id} finished" in out.split("training the source cells")[1]
    assert ("init: detection mobilenetv2_100 <- matrix cls.yaml: loaded 306/306 tensors (raw); unused from the "
            "source: 8 tensors (conv_head, bn2, classifier)") in out
    dense = ResultsStore(tmp_path / "board-dense").records()
    assert {r.task for r in dense} == {"detection", "segmentation"} and all(r.status == "finished" for r in dense)
    for record in dense:
        assert (record.init_kind, record.init_source, record.init_from) == ("matrix", source.run_id, "cls.yaml")
        assert record.fine_tuned and record.init_report["loaded"] == record.init_report["total"]
        assert "classifier.weight" in record.init_report["unexpected"]  # the source's head has no place
    # the scratch cells of the same matrix are other runs
    write_matrices(tmp_path, dense_init="scratch")
    assert zoo_run(["dense.yaml", "--dry-run"]) == 0
    scratch_ids = {line.split()[-2] for line in capsys.readouterr().out.splitlines() if "mobilenetv2_100" in line}
    assert scratch_ids and scratch_ids.isdisjoint({r.run_id for r in dense})


def test_a_cell_whose_source_failed_is_recorded_as_not_run(tmp_path, monkeypatch, capsys):
    from zoo.runner import execute

    monkeypatch.chdir(tmp_path)
    write_matrices(tmp_path, task="segmentation")

    def failing(run, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(execute, "train_run", failing)
    assert zoo_run(["dense.yaml", "--no-measure", "--no-leaderboard"]) == 1
    (record,) = ResultsStore(tmp_path / "board-dense").records()
    (source,) = ResultsStore(tmp_path / "board-cls").records()
    assert source.status == "failed" and record.status == "failed" and record.epochs_done == 0
    assert record.error == (f"not run: its init source run {source.run_id} (mobilenetv2_100/basic/fixed/s0 of "
                            f"cls.yaml) is failed")


# -------------------------------------------------------------------------------------------- files and timm
def timm_reference(tmp_path: Path, num_classes: int = 10) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(3)
    reference = timm.create_model("mobilevit_xxs", pretrained=False, num_classes=num_classes).eval()
    path = tmp_path / "model.safetensors"
    from safetensors.torch import save_file

    save_file(reference.state_dict(), str(path))
    return reference, path


def test_a_timm_layout_file_loads_bit_identically_into_zoos_mobilevit(tmp_path):
    reference, path = timm_reference(tmp_path)
    run = plan_for(cls_cfg(init=InitConfig(kind="file", path=str(path))), DistContext())
    assert run.config.init.source == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    parts = build_parts(run.config, DistContext(), compile_model=False)
    assert parts.init_report.loaded == parts.init_report.total and parts.init_report.weights == "state dict"
    ours, theirs = parts.model.state_dict(), reference.state_dict()
    assert torch.equal(ours["layers.4.1.fuse.conv.weight"], theirs["stages.4.1.conv_fusion.conv.weight"])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # the same function (kernels in another order: 1e-5)
        torch.testing.assert_close(parts.model.eval()(x), reference(x), rtol=1e-5, atol=1e-5)


def test_timm_weights_come_from_timms_cache_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    reference, path = timm_reference(tmp_path, num_classes=1000)
    snapshot = tmp_path / "hub" / "models--timm--mobilevit_xxs.cvnets_in1k" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    path.rename(snapshot / "model.safetensors")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    run = plan_for(cls_cfg(init=InitConfig(kind="timm")), DistContext())
    assert run.config.init.source == "timm:mobilevit_xxs.cvnets_in1k"
    parts = build_parts(run.config, DistContext(), compile_model=False)
    report = parts.init_report
    assert report.weights == "timm mobilevit_xxs.cvnets_in1k" and report.loaded == report.total - 2
    assert [m.split(":")[0] for m in report.mismatched] == ["classifier.weight", "classifier.bias"]  # 1000 vs 10
    ours = parts.model.state_dict()
    assert torch.equal(ours["layers.2.1.transformer.0.mixer.qkv.weight"],
                       reference.state_dict()["stages.2.1.transformer.0.attn.qkv.weight"])


@pytest.mark.slow  # 4 s: out of make test-fast's edit-test loop
def test_freezing_keeps_the_backbone_and_the_multiplier_scales_its_lr(tmp_path):
    _, path = timm_reference(tmp_path)
    init = InitConfig(kind="file", path=str(path), backbone_lr_scale=0.5, freeze_backbone_epochs=1)
    run = plan_for(cls_cfg(init=init, epochs=2, model_kwargs={}), DistContext())
    before = build_parts(run.config, DistContext(), compile_model=False).model.state_dict()
    train_run(run, DistContext(), tmp_path / "run", progress=False, stop_after_epochs=1)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    after = state["model"]
    backbone = [k for k in before if not k.startswith("classifier.")]
    assert all(torch.equal(before[k], after[k]) for k in backbone)  # weights and BatchNorm statistics alike
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    groups = state["optimizer"]["param_groups"]
    assert {g["zoo_part"]: g["lr_scale"] for g in groups} == {"backbone": 0.0, "new": 1.0}
    train_run(run, DistContext(), tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert {g["zoo_part"]: g["lr_scale"] for g in state["optimizer"]["param_groups"]} == {"backbone": 0.5, "new": 1.0}
    assert not all(torch.equal(before[k], state["model"][k]) for k in backbone)


# ---------------------------------------------------------------------------------------------------- exit 2
def bad_input(tmp_path: Path, init, models=("mobilevit_xxs",), **extra) -> Path:
    data = {"name": "bad", "init": init, "models": list(models), "recipes": ["basic"], "samplers": ["fixed"],
            "data": {"kind": "digits", "options": {"source_size": 16}, "max_train_samples": 96},
            "resolution": {"base_resolution": 32, "resolutions": [32]}, "budget": {"epochs": 1, "batch_size": 16},
            "output_dir": str(tmp_path / "out"), "store_dir": str(tmp_path / "board"),
            "wandb": {"mode": "disabled"}, "measure": {"enabled": False}, **extra}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def exit_2(path: Path, capsys) -> str:
    assert zoo_run([str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the plan's note: lines
    assert err.startswith("error: ")
    assert not (path.parent / "board").exists()
    return err


def test_init_files_that_cannot_serve_exit_2(tmp_path, capsys):
    assert "nope.pt: file not found (cell mobilevit_xxs/basic/fixed/s0" in exit_2(
        bad_input(tmp_path, {"file": str(tmp_path / "nope.pt")}), capsys)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    assert "junk.pt: not a checkpoint (" in exit_2(bad_input(tmp_path, {"file": str(tmp_path / "junk.pt")}), capsys)
    from safetensors.torch import save_file

    save_file(timm.create_model("mobilevit_xs", num_classes=10).state_dict(), str(tmp_path / "xs.safetensors"))
    err = exit_2(bad_input(tmp_path, {"file": str(tmp_path / "xs.safetensors")}), capsys)
    assert "belongs to another architecture than mobilevit_xxs: " in err
    assert "layers.0.0.expand.conv.weight is (64, 16, 1, 1) there, (32, 16, 1, 1) in the model" in err


def test_a_source_matrix_without_the_cell_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_matrices(tmp_path, seeds=[0, 1])
    err = exit_2(tmp_path / "dense.yaml", capsys)
    assert ("init.matrix: cls.yaml has no classification cell mobilenetv2_100/basic/fixed/s1 "
            "(cell detection:mobilenetv2_100/basic/fixed/s1): its seeds are 0") in err


@pytest.mark.parametrize("model, kwargs, message", [
    ("mobilevit_xxs_aft", {}, "mobilevit_xxs_aft: zoo's own architecture: timm publishes no weights for it"),
    ("mobilevit_s", {"patch_size": [4, 4, 4]}, "is a knob variant of mobilevit_s: timm's weights are for the "
                                               "default architecture"),
    ("coatnet_pico", {}, "coatnet_pico: timm has no published weights for its architecture coatnet_pico_rw_224"),
])
def test_timm_without_weights_for_the_architecture_exits_2(tmp_path, capsys, model, kwargs, message):
    extra = {"model_kwargs": {model: kwargs}} if kwargs else {}
    assert message in exit_2(bad_input(tmp_path, "timm", models=(model,), **extra), capsys)


def test_timm_without_cache_or_network_says_how_to_give_a_file(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    err = exit_2(bad_input(tmp_path, "timm"), capsys)
    assert ("timm weights mobilevit_xxs.cvnets_in1k: not in timm's cache" in err and "no network here: download "
            "model.safetensors of https://huggingface.co/timm/mobilevit_xxs.cvnets_in1k elsewhere and give it as "
            "init: {file: PATH}" in err)


def test_runs_dense_yaml_fine_tunes_from_the_default_matrix_and_its_scratch_twin_differs_only_there():
    runs = Path(__file__).resolve().parents[1] / "runs"
    tuned, scratch = load_matrix(runs / "dense.yaml"), load_matrix(runs / "dense-scratch.yaml")
    assert (tuned.init.kind, tuned.init.path, scratch.init.kind) == ("matrix", "runs.yaml", "scratch")
    assert tuned.store_dir == scratch.store_dir  # one board: scratch beside fine-tuned
    same = {k: v for k, v in to_dict(tuned).items() if k not in ("name", "init")}
    assert same == {k: v for k, v in to_dict(scratch).items() if k not in ("name", "init")}
