"""A dense matrix's rank table takes its classification column from `classification_store:` in runs.yaml when its
own store has no classification runs (`zoo.run`'s finalize passes it on), and a missing folder there is exit 2."""
from pathlib import Path

import yaml

from zoo.config import load_matrix
from zoo.results import ResultsStore, RunRecord
from zoo.run import main as zoo_run
from zoo.runner.matrix import finalize
from zoo.runner.workspace import workspace_for


def dense_runs_file(tmp_path: Path, classification_store: str) -> Path:
    data = {"name": "tiny-dense", "task": "detection", "data": {"kind": "scattered-digits"},
            "models": ["mobilenetv2_100", "mobilevit_xxs"], "recipes": ["basic"], "samplers": ["fixed"],
            "resolution": {"base_resolution": 64, "resolutions": [64, 80]},
            "budget": {"epochs": 1, "batch_size": 8, "lr_scaling": "none", "warmup_epochs": 0},
            "store_dir": str(tmp_path / "board"), "output_dir": str(tmp_path / "out"),
            "classification_store": classification_store, "wandb": {"mode": "disabled"},
            "measure": {"enabled": False}}
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_finalize_reads_the_classification_column_from_the_named_store(tmp_path: Path) -> None:
    (tmp_path / "cls").mkdir()
    matrix = load_matrix(dense_runs_file(tmp_path, str(tmp_path / "cls")))
    dense, classification = ResultsStore(tmp_path / "board"), ResultsStore(tmp_path / "cls")
    for i, (model, map_, top1) in enumerate([("mobilenetv2_100", 0.31, 0.912), ("mobilevit_xxs", 0.42, 0.873)]):
        dense.append(RunRecord(f"d{i}", "finished", model=model, recipe="basic", sampler="fixed", seed=0,
                               task="detection", metric_name="map", metric=map_))
        classification.append(RunRecord(f"c{i}", "finished", model=model, recipe="basic", sampler="fixed", seed=0,
                                        top1=top1))
    finalize(matrix, workspace_for(matrix, tmp_path), measure=False, leaderboard=True)
    text = (tmp_path / "board" / "README.md").read_text()
    assert f"classification runs of `{tmp_path / 'cls'}`" in text
    assert "| mobilenetv2_100 | 1 (91.2)" in text and "| mobilevit_xxs   | 2 (87.3)" in text


def test_a_missing_classification_store_is_exit_2_naming_the_key(tmp_path: Path, capsys) -> None:
    path = dense_runs_file(tmp_path, str(tmp_path / "nowhere"))
    assert zoo_run([str(path)]) == 2
    error = capsys.readouterr().err
    assert "classification_store" in error and "nowhere" in error
    assert not (tmp_path / "board").exists() and not (tmp_path / "out").exists()
