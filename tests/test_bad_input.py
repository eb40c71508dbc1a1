"""Bad input, as users feed it (issue 20): messy image folders, bad nested config keys, defaults that conflict.

Every case is generated here, offline. A config or data problem is one `error:` line naming the file, the full key
path, the value and what is allowed, exit 2, and nothing written; a default that cannot hold adapts and says so.
"""
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from zoo.config import RunConfig, load_matrix, to_dict
from zoo.config.cli import resolve
from zoo.config.typed import ConfigError, from_dict
from zoo.data import DataError, build_datasets
from zoo.data.check import check_matrix_data
from zoo.run import main as zoo_run

REPO = Path(__file__).resolve().parent.parent


def _save(path: Path, color=(200, 10, 0), fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 16), color).save(path, format=fmt)


def _tree(root: Path, train=("cat", "dog"), val=("cat", "dog"), per_class: int = 2) -> Path:
    for split, classes in (("train", train), ("val", val)):
        for c, name in enumerate(classes):
            for i in range(per_class):
                _save(root / split / name / f"{i}.png", (40 * c, 20 * i, 0))
    return root


def _matrix(tmp_path: Path, **extra) -> Path:
    """A runs.yaml in its own folder, writing under it (so the test can see that nothing was written)."""
    data = {"models": ["mobilenetv2_100"], "recipes": ["basic"], "samplers": ["fixed"],
            "output_dir": str(tmp_path / "out"), "store_dir": str(tmp_path / "store"), **extra}
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run(path: Path, capsys, *flags: str) -> tuple[int, list[str]]:
    code = zoo_run([str(path), *flags])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith("error:")]


def _nothing_written(tmp_path: Path) -> bool:
    return not (tmp_path / "out").exists() and not (tmp_path / "store").exists()


# --- image folders ------------------------------------------------------------------------------------------


def test_every_format_pillow_decodes_is_read(tmp_path):
    formats = {".gif": "GIF", ".tif": "TIFF", ".webp": "WEBP", ".bmp": "BMP", ".jpeg": "JPEG", ".PNG": "PNG"}
    for split in ("train", "val"):
        for c, name in enumerate(("a", "b")):
            for ext, fmt in formats.items():
                _save(tmp_path / split / name / f"x{ext}", (100 * c, 50, 0), fmt)
    splits = build_datasets("imagefolder", root=tmp_path)
    assert (len(splits.train), len(splits.val), splits.notes) == (12, 12, ())  # torchvision's list misses .gif
    assert sorted(Path(p).suffix for p, _ in splits.train.samples[:6]) == sorted(formats)
    assert {splits.train[i][0].mode for i in range(12)} == {"RGB"}


def test_files_not_read_are_counted_by_kind_and_said_once(tmp_path, caplog):
    root = _tree(tmp_path / "data")
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"\0")
    (root / "train" / "dog" / ".DS_Store").write_bytes(b"\0")
    (root / "train" / "dog" / "notes.txt").write_text("x")
    (root / "train" / "dog" / "._0.png").write_bytes(b"\0\5\26\7")  # macOS metadata with an image's name
    (root / "train" / ".ipynb_checkpoints").mkdir()  # a hidden folder is not a class
    (root / "val" / "dog" / "Thumbs.db").write_bytes(b"\0")
    with caplog.at_level(logging.WARNING, logger="zoo.data"):
        splits = build_datasets("imagefolder", root=root)
        build_datasets("imagefolder", root=root)  # each run builds its data again: said once per process
    assert splits.class_names == ("cat", "dog") and (len(splits.train), len(splits.val)) == (4, 4)
    train_note = (f"train: skipped 5 non-image files under {str(root / 'train')!r}: .DS_Store ×2, "
                  f"._* (macOS metadata) ×1, .txt ×1, hidden folder ×1")
    val_note = f"val: skipped 1 non-image files under {str(root / 'val')!r}: Thumbs.db ×1"
    assert splits.notes == (train_note, val_note)
    assert [r.getMessage() for r in caplog.records] == [train_note, val_note]


def _empty_class(root: Path) -> str:
    _tree(root)
    (root / "train" / "bird").mkdir()
    _save(root / "val" / "bird" / "a.png")
    return str(root / "train" / "bird")


def _text_only_class(root: Path) -> str:
    _tree(root)
    (root / "val" / "bird").mkdir(parents=True)
    (root / "val" / "bird" / "readme.txt").write_text("x")
    _save(root / "train" / "bird" / "a.png")
    return str(root / "val" / "bird")


def _no_images(root: Path) -> str:
    for split in ("train", "val"):
        (root / split / "cat").mkdir(parents=True)
        (root / split / "cat" / "a.txt").write_text("x")
    return str(root / "train")


def _classes_differ(root: Path) -> str:
    _tree(root, val=("cat", "wolf"))
    return "only in train: ['dog'], only in val: ['wolf']"


def _no_class_folders(root: Path) -> str:
    _tree(root)
    for path in (root / "val").glob("*/*"):
        path.rename(root / "val" / f"{path.parent.name}-{path.name}")
    for folder in (root / "val").glob("*/"):
        folder.rmdir()
    return f"no class folders in {str(root / 'val')!r}"


@pytest.mark.parametrize("make, expected", [
    (_empty_class, "hold no image"),
    (_text_only_class, "hold no image"),
    (_no_images, "none of its 1 class folders holds one"),
    (_classes_differ, "expected the same class folders in both"),
    (_no_class_folders, "expected val images as"),
])
def test_layout_problems_stop_the_plan_with_exit_2_naming_the_path(tmp_path, capsys, make, expected):
    named = make(tmp_path / "data")
    path = _matrix(tmp_path, data={"kind": "imagefolder", "root": str(tmp_path / "data")},
                   budget={"batch_size": 2})
    for flags in (("--dry-run",), ()):  # the dry run lists the folder; the real one builds it, before any run
        code, errors = _run(path, capsys, *flags)
        assert code == 2 and len(errors) == 1, errors
        assert str(path) in errors[0] and "data.root" in errors[0] and named in errors[0] and expected in errors[0]
    assert _nothing_written(tmp_path)


def test_skip_corrupt_counts_what_it_drops_and_keeps_a_class_readable(tmp_path):
    from zoo.config import DataConfig, SamplerConfig, load_recipe
    from zoo.training.distributed import DistContext
    from zoo.training.loaders import build_loaders

    root = _tree(tmp_path / "data")
    bad = root / "train" / "cat" / "broken.png"
    bad.write_bytes(b"not a png" * 8)
    data = DataConfig(kind="imagefolder", root=str(root), options={"skip_corrupt": True})
    cfg = RunConfig(model="mobilenetv2_100", recipe=load_recipe("basic"), sampler=SamplerConfig(base_resolution=16),
                    data=data, batch_size=2, epochs=2)
    loaders = build_loaders(cfg, DistContext())
    assert loaders.skipped_images == 1  # what the engine copies into the run's record (skipped_images)
    for path in (root / "train" / "dog").iterdir():
        path.write_bytes(b"junk")  # now every dog image in train is unreadable
    with pytest.raises(DataError, match=r"train class folder\(s\) '.*dog' hold no readable image"):
        build_datasets("imagefolder", root=root, options={"skip_corrupt": True})


def test_a_training_set_smaller_than_one_batch_is_a_plan_error(tmp_path, capsys):
    _tree(tmp_path / "data")
    path = _matrix(tmp_path, data={"kind": "imagefolder", "root": str(tmp_path / "data")})
    code, errors = _run(path, capsys, "--dry-run")
    assert code == 2 and _nothing_written(tmp_path)
    assert f"{path}: budget.batch_size: must fit the training data, got 128 (the default): 4 training images " \
           f"cannot fill one batch of 128" in errors[0]
    matrix = load_matrix(_matrix(tmp_path, data={"kind": "digits", "max_train_samples": 40},
                                 budget={"batch_size": 48}))
    with pytest.raises(DataError, match=r"got 48: 40 training images \(data.max_train_samples: 40\), 20 per process "
                                        r"over 2 cannot fill one batch of 48"):
        check_matrix_data(matrix, "m.yaml", world_size=2)


def test_hf_splits_with_different_or_missing_classes_are_refused(tmp_path):
    import datasets

    def split(names, labels):
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
        rows = {"image": [Image.new("RGB", (4, 4)) for _ in labels], "label": labels}
        return datasets.Dataset.from_dict(rows, features=features)

    datasets.DatasetDict({"train": split(["a", "b"], [0, 1]), "validation": split(["a", "c"], [0, 1])}) \
        .save_to_disk(str(tmp_path / "differ"))
    with pytest.raises(DataError, match=r"train and val splits name different classes \(\['a', 'b'\] vs \['a', 'c'"):
        build_datasets("hf", root=tmp_path / "differ")
    datasets.DatasetDict({"train": split(["a", "b", "c"], [0, 0]), "validation": split(["a", "b", "c"], [0])}) \
        .save_to_disk(str(tmp_path / "unseen"))
    with pytest.raises(DataError, match=r"2 class\(es\) have no training rows: \['b', 'c'\]"):
        build_datasets("hf", root=tmp_path / "unseen")


# --- nested config keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra, key, value, allowed", [
    ({"data": {"options": {"source_size": 4}}}, "data.options.source_size", "got 4", "must be >= 8"),
    ({"data": {"options": {"size": 32}}}, "data.options.size", "unknown key",
     "allowed: source_size, split_seed, val_fraction"),
    ({"data": {"options": {"val_fraction": "lots"}}}, "data.options.val_fraction", "'lots'", "expected a number"),
    ({"data": {"kind": "imagefolder", "root": "/nowhere", "options": {"skip_corrupt": "maybe"}}},
     "data.options.skip_corrupt", "'maybe'", "expected true/false"),
    ({"data": {"kind": "cifar10", "root": "/nowhere", "options": {"downlaod": True}}}, "data.options.downlaod",
     "unknown key", "allowed: download"),
    ({"data": {"kind": "hf", "root": "/nowhere", "options": {"image_column": 3}}}, "data.options.image_column",
     "got 3", "expected a string"),
    ({"model_kwargs": {"mobilenetv2_100": {"bogus_kw": 1}}}, "model_kwargs.mobilenetv2_100.bogus_kw",
     "{'bogus_kw': 1}", "expected the knobs its factory takes"),
    ({"recipe_overrides": {"mixup": -1}}, "recipe_overrides.mixup", "got -1", "must be >= 0"),
    ({"recipe_overrides": {"mixupp": 1}}, "recipe_overrides.mixupp", "unknown key", "allowed: auto_augment"),
    ({"measure": {"backends": ["tflite"]}}, "measure.backends", "['tflite']", "backend names (cpu-eager-1t"),
    ({"measure": {"deploy_resolutions": {"mobilenetv2_100": "big"}}}, "measure.deploy_resolutions.mobilenetv2_100",
     "'big'", "expected a number"),
    ({"measure": {"deploy_resolutions": {"mobilevit_xxx": 256}}}, "measure.deploy_resolutions.mobilevit_xxx",
     "got 'mobilevit_xxx'", "keyed by a model name (allowed: aft_conv_tiny"),
    ({"measure": {"deploy_resolutions": {"mobilenetv2_100": 0}}}, "measure.deploy_resolutions.mobilenetv2_100",
     "got 0", "a size in pixels > 0"),
    ({"execution": {"device": "gpu"}}, "execution.device", "'gpu'", "one of auto, cpu, mps, cuda, cuda:N"),
    ({"execution": {"log_every": 0}}, "execution.log_every", "got 0", "must be > 0"),
    ({"execution": {"workers": 0}}, "execution.workers", "got 0", "must be > 0"),
    ({"budget": {"betas": [0.9]}}, "budget.betas", "[0.9]", "expected 2 items (tuple[float, float])"),
    ({"samplers": ["multiscale"], "resolution": {"base_resolution": 32}}, "resolution.resolutions",
     "[160, 192, 256, 288, 320], the default", "e.g. [20, 24, 32, 36, 40]"),
])
def test_nested_errors_name_file_full_key_value_and_allowed(tmp_path, capsys, extra, key, value, allowed):
    path = _matrix(tmp_path, **extra)
    code, errors = _run(path, capsys, "--dry-run")
    assert code == 2 and len(errors) == 1, errors
    assert errors[0].startswith(f"error: {path}: {key}: ") and value in errors[0] and allowed in errors[0], errors[0]
    assert _nothing_written(tmp_path)


def test_typed_errors_carry_the_value_and_the_type():
    from zoo.config import SamplerConfig

    with pytest.raises(ConfigError, match=r"x.yaml: model: required key is missing \(expected str\)"):
        from_dict(RunConfig, {}, "x.yaml")
    with pytest.raises(ConfigError, match=r"x.yaml: resolutions\[1\]: expected a number \(int\), got 'b'"):
        from_dict(SamplerConfig, {"resolutions": [1, "b"]}, "x.yaml")


# --- defaults that cannot hold ------------------------------------------------------------------------------


def test_a_default_that_cannot_hold_adapts_and_the_plan_says_so(tmp_path, capsys):
    path = _matrix(tmp_path, budget={"epochs": 1, "lr": 0.0001, "batch_size": 48})
    matrix = load_matrix(path)
    assert (matrix.budget.warmup_epochs, matrix.budget.min_lr) == (0.5, 1e-05)
    assert [(n.key, n.default, n.value) for n in matrix.adapted_defaults] == [
        ("budget.warmup_epochs", 1.0, 0.5), ("budget.min_lr", 0.0002, 1e-05)]
    assert "adapted_defaults" not in to_dict(matrix)  # derived: never written back as a key
    assert zoo_run([str(path), "--dry-run"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes[0] == (f"note: {path}: budget.warmup_epochs: not set, and its default 1.0 is not shorter than "
                        f"epochs (1): half the run warms up, so 0.5 is used (set budget.warmup_epochs to choose)")
    assert notes[1].startswith(f"note: {path}: budget.min_lr: not set, and its default 0.0002 is above lr (0.0001)")
    assert _nothing_written(tmp_path)


def test_the_record_says_which_defaults_adapted(tmp_path):
    from zoo.results import ResultsStore
    from zoo.runner.execute import new_record
    from zoo.runner.plan import build_plan
    from zoo.training.distributed import DistContext

    matrix = load_matrix(_matrix(tmp_path, budget={"epochs": 1, "batch_size": 48}))
    [spec, *_] = build_plan(matrix, ResultsStore(tmp_path / "store"))
    record = new_record(spec.run, DistContext())
    assert record.config.warmup_epochs == 0.5
    assert record.adapted_defaults == [str(matrix.adapted_defaults[0])]
    assert "budget.warmup_epochs: not set, and its default 1.0" in record.adapted_defaults[0]
    assert type(record).from_json(record.to_json()).adapted_defaults == record.adapted_defaults


def test_defaults_that_hold_stay_and_values_set_that_conflict_stay_errors(tmp_path, capsys):
    two = load_matrix(_matrix(tmp_path, budget={"epochs": 2}))
    assert (two.budget.warmup_epochs, two.budget.min_lr, two.adapted_defaults) == (1.0, 0.0002, ())
    path = _matrix(tmp_path, budget={"epochs": 1, "warmup_epochs": 1})
    code, errors = _run(path, capsys, "--dry-run")
    assert code == 2 and errors == [
        f"error: {path}: budget.warmup_epochs: must be shorter than epochs (1) (as set; left out, it is 1 epoch, "
        f"or epochs / 2 in a run of 1 epoch or less), got 1.0"]
    path = _matrix(tmp_path, budget={"lr": 0.0001, "min_lr": 0.001})
    code, errors = _run(path, capsys, "--dry-run")
    assert code == 2 and "budget.min_lr: must be <= lr (0.0001) (as set;" in errors[0] and "got 0.001" in errors[0]


def test_the_train_command_line_adapts_the_same_defaults(tmp_path):
    path = _matrix(tmp_path, budget={"batch_size": 48})
    cfg, _ = resolve({"config": str(path), "epochs": "1"})
    assert (cfg.epochs, cfg.warmup_epochs, cfg.min_lr) == (1, 0.5, 0.0002)
    cfg, _ = resolve({"config": str(path), "epochs": "1", "warmup_epochs": "0.25"})
    assert cfg.warmup_epochs == 0.25
    with pytest.raises(ConfigError, match=r"command line: warmup_epochs: must be shorter than epochs \(1\) \(as set"):
        resolve({"config": str(path), "epochs": "1", "warmup_epochs": "1"})
    with pytest.raises(ConfigError, match=r"command line: recipe.mixup: must be >= 0, got -1.0 \(recipe 'basic'"):
        resolve({"config": str(path), "recipe.mixup": "-1"})


@pytest.mark.slow
def test_the_cli_exits_2_with_one_line_for_a_bad_option(tmp_path):
    path = _matrix(tmp_path, data={"kind": "digits", "options": {"source_size": "big"}})
    proc = subprocess.run([sys.executable, "-m", "zoo.run", str(path)], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"error: {path}: data.options.source_size: expected a number (int), got 'big' "
                                   f"[data.kind: digits]")
    assert _nothing_written(tmp_path)
