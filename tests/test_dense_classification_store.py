"""A dense matrix's rank table takes its classification column from `classification_store:` in runs.yaml when its
own store has no classification runs (`zoo.run`'s finalize passes it on), and a missing folder there is exit 2."""
import re
from pathlib import Path

import yaml

from zoo.config import load_matrix
from zoo.report.dense_tables import matched_classification, rank_table
from zoo.results import ResultsStore, RunRecord
from zoo.run import main as zoo_run
from zoo.runner.matrix import finalize
from zoo.runner.workspace import workspace_for
from zoo.training.epoch import EpochMetrics


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
    # no epoch history: too short to tell a plateau, so marked
    assert "| mobilenetv2_100 | 1 (91.2*)" in text and "| mobilevit_xxs   | 2 (87.3*)" in text


def squeeze(table: str) -> str:
    return re.sub(r" +", " ", table)


def curve(*top1: float) -> list[EpochMetrics]:
    return [EpochMetrics(epoch=i, train_loss=1.0, epoch_time_s=1.0, updates=10 * (i + 1), val_top1=v)
            for i, v in enumerate(top1)]


def test_the_classification_column_is_the_dense_runs_cells_and_marks_unfinished_runs() -> None:
    """Only basic/fixed classification runs count (the dense runs' cell), not advanced or multiscale ones that would
    reverse the order, nor a backbone the dense runs lack; a run still climbing is marked `*`."""
    dense = [RunRecord(f"d{i}", "finished", model=m, recipe="basic", sampler="fixed", seed=0, task="detection",
                       metric_name="map", metric=v) for i, (m, v) in enumerate([("a", 0.3), ("b", 0.2), ("c", 0.1)])]
    plateaued, climbing = curve(0.5, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9), curve(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    classification = [
        RunRecord("c0", "finished", model="a", recipe="basic", sampler="fixed", seed=0, top1=0.9, history=plateaued),
        RunRecord("c1", "finished", model="b", recipe="basic", sampler="fixed", seed=0, top1=0.8, history=climbing),
        RunRecord("c2", "finished", model="a", recipe="advanced", sampler="fixed", seed=0, top1=0.1),
        RunRecord("c3", "finished", model="b", recipe="basic", sampler="multiscale", seed=0, top1=0.99),
        RunRecord("c5", "finished", model="c", recipe="basic", sampler="fixed", seed=0, top1=0.7, history=plateaued),
        RunRecord("c4", "finished", model="z", recipe="basic", sampler="fixed", seed=0, top1=0.95),
    ]
    assert [r.run_id for r in matched_classification(dense, classification)] == ["c0", "c1", "c5"]
    ranks, taus = rank_table(dense, classification)
    text = ranks.markdown()
    assert "| a | 1 (90.0) | 1 (30.0) |" in squeeze(text)
    assert "| b | 2 (80.0*) | 2 (20.0) |" in squeeze(text)
    assert "| z " not in text
    assert "| classification vs detection | 1.00 | 3 |" in squeeze(taus.markdown())


def test_a_missing_classification_store_is_exit_2_naming_the_key(tmp_path: Path, capsys) -> None:
    path = dense_runs_file(tmp_path, str(tmp_path / "nowhere"))
    assert zoo_run([str(path)]) == 2
    error = capsys.readouterr().err
    assert "classification_store" in error and "nowhere" in error
    assert not (tmp_path / "board").exists() and not (tmp_path / "out").exists()


def test_a_dense_only_store_renders_its_findings_not_empty_classification_boards(tmp_path: Path) -> None:
    """Two seeds a backbone: detection's gap (0.40 vs 0.10, tight seeds) is established after the dense family's
    correction and said; segmentation's (overlapping seeds) is not, and the board says the order is not established."""
    from zoo.report.leaderboard import write_leaderboard

    store = ResultsStore(tmp_path)
    scores = {("detection", "a"): (0.40, 0.41), ("detection", "b"): (0.10, 0.11),
              ("segmentation", "a"): (0.30, 0.50), ("segmentation", "b"): (0.45, 0.31)}
    for (task, model), values in scores.items():
        for seed, value in enumerate(values):
            store.append(RunRecord(f"{task}-{model}-{seed}", "finished", model=model, recipe="basic",
                                   sampler="fixed", seed=seed, task=task, metric_name="m", metric=value))
    text = write_leaderboard(tmp_path, title="dense").read_text()
    assert "## 1. Main boards" not in text and "train at least two seeds" not in text
    assert "**Runs**: 8 finished, seeds [0, 1]" in text
    findings = text.split("## Conclusions the data supports")[1].split("## Detection and segmentation")[0]
    assert ("detection, basic recipe, fixed sampler, scratch: a above b: +30.0 pts [+24.7, +35.3], Holm p<0.001"
            in findings)
    assert ("segmentation, basic recipe, fixed sampler, scratch: no gap between the 2 backbones is established"
            in findings)
    assert "2 tested (2 backbones); Holm's correction" in findings  # the dense family: one pair per task
    assert "### Does the order carry over?" in text
