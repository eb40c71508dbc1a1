"""An EMA shorter than its horizon (1/(1 - decay) updates) is said at plan time, recorded on the run, marked on the
board beside the raw weights' top-1, ranked by that, and left out of every comparison and conclusion."""
import json
from pathlib import Path

import pytest
import yaml

from zoo.results import RunRecord
from zoo.training.distributed import DistContext

from test_leaderboard import make_store, row_of, run_cfg
from test_matrix_e2e import zoo_run_here

REPO = Path(__file__).resolve().parents[1]
DIGITS_TRAIN = 1437  # 1797 digits, 20 % (360) held out for validation


def matrix_file(tmp_path: Path, **budget) -> Path:
    data = {
        "name": "short-ema", "data": {"kind": "digits", "eval_crop_pct": 1.0},
        "models": ["mobilevit_xxs", "mobilenetv2_100"], "recipes": ["basic", "advanced"], "samplers": ["fixed"],
        "seeds": [0], "resolution": {"base_resolution": 32},
        "budget": {"epochs": 2, "batch_size": 48, "lr_scaling": "none", "warmup_epochs": 0, **budget},
        "output_dir": str(tmp_path / "out"), "store_dir": str(tmp_path / "board"),
        "wandb": {"mode": "disabled"}, "execution": {"progress": False, "threads": 1},
    }
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def warnings_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("warning: recipe")]


def test_dry_run_warns_once_per_recipe_with_the_horizon_the_updates_and_the_key(tmp_path, capsys):
    from zoo.run import main

    updates = 2 * (DIGITS_TRAIN // 48)  # fixed sampler, whole batches only: 29 per epoch
    assert main([str(matrix_file(tmp_path)), "--dry-run"]) == 0
    basic, advanced = sorted(warnings_of(capsys.readouterr().out))[::-1]  # one per recipe, not per cell
    assert basic.startswith("warning: recipe basic: its EMA (decay 0.9995, ema_time_scale 1) averages over about "
                            f"2,000 updates, but 2 of its 2 runs take {updates} updates")
    assert advanced.startswith("warning: recipe advanced: its EMA (decay 0.99996, ema_time_scale 1) averages over "
                               f"about 25,000 updates, but 2 of its 2 runs take {updates} updates")
    # the key that fixes it, with a value: the horizon at 10 % of the run
    assert basic.endswith(f"Set budget.ema_time_scale: {0.1 * updates * 0.0005:.2g} to average over 10% of the "
                          "shortest run.")


def test_only_the_recipes_whose_ema_is_longer_than_the_runs_are_warned_about(tmp_path, capsys):
    from zoo.run import main

    # scale 0.01: basic averages over 20 updates (< 58: fine), advanced over 250 (> 58: short)
    assert main([str(matrix_file(tmp_path, ema_time_scale=0.01)), "--dry-run"]) == 0
    [line] = warnings_of(capsys.readouterr().out)
    assert "recipe advanced" in line and "about 250 updates" in line and "take 58 updates" in line
    assert main([str(matrix_file(tmp_path, ema_time_scale=0.0001)), "--dry-run"]) == 0
    assert warnings_of(capsys.readouterr().out) == []


def test_the_default_matrix_is_not_short():
    """runs.yaml scales both time constants to 1.3 and 16 updates against its runs' 210-232: nothing to mark."""
    from zoo.config import load_matrix
    from zoo.results import ResultsStore
    from zoo.runner.plan import build_plan, ema_horizon_updates, short_emas

    plan = build_plan(load_matrix(REPO / "runs.yaml"), ResultsStore(REPO / "no-such-store"))
    assert short_emas(plan) == []
    horizons = {spec.config.recipe.name: ema_horizon_updates(spec.config) for spec in plan}
    assert horizons == pytest.approx({"basic": 1.28, "advanced": 16.0})


@pytest.mark.parametrize("decay, scale", [(0.9995, 1.0), (0.99996, 0.00064), (0.9, 0.5), (0.9995, 1e-5)])
def test_the_horizon_is_the_time_constant_of_the_decay_training_uses(decay, scale):
    from zoo.runner.plan import ema_horizon_updates
    from zoo.training.components import ema_decay

    cfg = run_cfg("mobilevit_xxs", "basic", recipe_changes={"ema_decay": decay}, ema_time_scale=scale)
    assert ema_horizon_updates(cfg) == pytest.approx(1 / (1 - ema_decay(cfg)))


def test_the_record_says_the_horizon_and_whether_the_run_was_shorter():
    from dataclasses import replace

    from zoo.runner.execute import new_record, record_outcome
    from zoo.runner.plan import plan_for
    from zoo.training.engine import RunOutcome

    def recorded(updates: int, **changes) -> RunRecord:
        cfg = run_cfg("mobilevit_xxs", "basic", **changes)
        record = new_record(plan_for(cfg, DistContext()), DistContext())
        record_outcome(record, RunOutcome(updates=updates))
        return RunRecord.from_json(json.loads(json.dumps(record.to_json())))  # as the store gives it back

    short = recorded(1999)
    assert (short.ema_horizon_updates, short.ema_short) == (2000, True)
    assert recorded(2000).ema_short is False
    assert recorded(30, ema_time_scale=0.01).ema_short is False  # 20 updates: averaged
    no_ema = recorded(30, recipe_changes={"ema": False})
    assert (no_ema.ema_horizon_updates, no_ema.ema_short) == (None, False)
    old = RunRecord.from_json({"run_id": "old", "status": "finished", "top1": 0.5})  # written before the fields
    assert (old.ema_horizon_updates, old.ema_short) == (None, None) and "ema_short" not in old.extra
    assert replace(short, top1=0.1, top1_raw=0.9).one_line() == (
        "[interrupted] mobilevit_xxs/basic/fixed/s0 top1 0.1000 (EMA shorter than its 2,000-update horizon: "
        "raw 0.9000) (0s)")


@pytest.mark.slow
def test_a_normal_run_prints_the_warning_and_records_a_short_ema(tmp_path):
    path = matrix_file(tmp_path)
    data = yaml.safe_load(path.read_text())
    data.update(models=["mobilevit_xxs"], recipes=["basic"],
                data={**data["data"], "options": {"source_size": 16}, "max_train_samples": 96, "max_val_samples": 32})
    data["budget"].update(epochs=1, batch_size=16)
    path.write_text(yaml.safe_dump(data))
    proc = zoo_run_here(str(path), "--no-measure", "--no-leaderboard", cwd=tmp_path)  # what the command prints
    assert proc.returncode == 0, proc.stderr[-3000:]
    [line] = warnings_of(proc.stdout)
    assert "about 2,000 updates" in line and "take 6 updates" in line  # 96 images, batches of 16
    from zoo.results import ResultsStore

    [record] = ResultsStore(tmp_path / "board").records()
    assert (record.updates, record.ema_short, record.ema_horizon_updates) == (6, True, pytest.approx(2000))
    assert record.top1_raw is not None  # what the board shows beside it


# -------------------------------------------------------------------------------------------------- the board
SHORT_CELL = [(0, 0.11, 0.95), (1, 0.12, 0.96)]  # (seed, EMA top-1, raw top-1) of mobilevit_xxs/advanced/fixed


def store_with_short_cell(path: Path) -> Path:
    from zoo.config import to_dict

    make_store(path)
    with open(path / "results.jsonl", "a") as f:
        for seed, top1, raw in SHORT_CELL:
            f.write(json.dumps({
                "run_id": f"mvit-adv-{seed}", "status": "finished", "model": "mobilevit_xxs", "recipe": "advanced",
                "sampler": "fixed", "seed": seed, "dataset": "digits", "epochs": 4, "global_batch": 64,
                "num_classes": 10, "git_commit": "abc1234",
                "config": to_dict(run_cfg("mobilevit_xxs", "advanced", "fixed", seed, epochs=4, lr=0.002)),
                "top1": top1, "top1_raw": raw, "top5": 0.5, "updates": 100, "train_time_s": 30.0,
                "ema_horizon_updates": 25000.0, "ema_short": True,
            }) + "\n")
    return path


def _section(text: str, heading: str) -> str:
    return text.split(heading, 1)[1].split("\n#", 1)[0]


def test_board_marks_a_short_ema_shows_the_raw_top1_ranks_by_it_and_concludes_nothing_on_it(tmp_path):
    from zoo.report.leaderboard import write_leaderboard

    plain = write_leaderboard(make_store(tmp_path / "plain")).read_text()
    text = write_leaderboard(store_with_short_cell(tmp_path / "short")).read_text()
    board = "### advanced recipe, fixed sampler"
    row = row_of(text, board, "mobilevit_xxs")
    # ranked by raw, above deit's 72.0; left out of the comparisons, so its order against deit is not established
    assert row[0] == "1" and row[4] == "11.5 ± 0.7 (n=2) †, raw 95.5 ± 0.7 ≈"
    assert row_of(text, board, "deit_tiny")[0] == "2"
    assert ("- `†` = the EMA is shorter than its horizon (the run took fewer updates than 1/(1 − decay)): its top-1 "
            "is mostly the initial weights, so the raw weights' top-1 is shown beside it") in text
    recipes = row_of(text, "## 2.", "mobilevit_xxs", also="fixed")
    assert recipes[2:] == ["96.0 ± 0.7 (n=2)", "11.5 ± 0.7 (n=2) †, raw 95.5 ± 0.7", "–",
                           "not compared: EMA shorter than its horizon (†)"]
    supported, unsupported = _section(text, "## Conclusions").split("**Not supported by the data**")
    # said as short, not as "still learning" (the EMA's curve cannot tell a plateau)
    learning = next(line for line in unsupported.splitlines() if line.startswith("- advanced recipe, fixed sampler: "
                                                                                  "not compared, not trained"))
    assert "mobilevit_xxs" not in learning and "deit_tiny" in learning
    assert ("- advanced recipe, fixed sampler: not compared, EMA shorter than its horizon (†): mobilevit_xxs "
            "(EMA 11.5 %, raw 95.5 %; 100 of ~25,000 updates)") in unsupported
    assert ("- advanced vs basic recipe: not compared, a side's EMA shorter than its horizon (†): "
            "mobilevit_xxs (fixed)") in unsupported
    # cells that are not short read exactly as before
    for heading in ("### basic recipe, fixed sampler", "### basic recipe, multiscale sampler"):
        assert _section(text, heading) == _section(plain, heading)
    assert "†" not in plain


def test_a_short_ema_is_left_out_of_the_conclusions_it_would_otherwise_support():
    from zoo.report.conclusions import conclusions
    from zoo.training.epoch import EpochMetrics

    def cell(model: str, top1: list[float], short: bool, raw: float) -> list[RunRecord]:
        records = []
        for seed, value in enumerate(top1):
            record = RunRecord(f"{model}-{seed}", "finished", model=model, recipe="basic", sampler="fixed", seed=seed,
                               num_classes=10, updates=40, ema_short=short, ema_horizon_updates=2000.0)
            record.set_history([EpochMetrics(epoch=e, train_loss=1.0, epoch_time_s=1.0, updates=10 * e,
                                             val_top1=value, val_top5=1.0, val_loss=1.0, val_ece=0.0,
                                             val_top1_raw=raw if e == 4 else None) for e in range(1, 5)])
            records.append(record)
        return records

    def findings(short: bool):
        groups = {("a", "basic", "fixed"): cell("a", [0.90, 0.91], False, 0.9),
                  ("b", "basic", "fixed"): cell("b", [0.50, 0.52], short, 0.97)}
        return conclusions(groups, None)

    assert findings(short=False).supported == [
        "basic recipe, fixed sampler: a (90.5 %) is more accurate than b (51.0 %): +39.5 pts [+31.4, +47.6], "
        "Holm p=0.002"]
    out = findings(short=True)
    assert out.supported == []
    assert out.unsupported == ["basic recipe, fixed sampler: not compared, EMA shorter than its horizon (†): "
                               "b (EMA 51.0 %, raw 97.0 %; 40 of ~2,000 updates)"]


def test_training_images_are_counted_without_opening_them(tmp_path):
    from zoo.config import DataConfig
    from zoo.runner.plan import train_images

    for name in ("a", "b"):
        (tmp_path / "train" / name).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "train" / name / f"{i}.png").write_bytes(b"")  # listed, never decoded
    (tmp_path / "train" / "a" / ".DS_Store").write_bytes(b"junk")
    folder = DataConfig(kind="imagefolder", root=str(tmp_path))
    assert (train_images(folder, enough=100), train_images(folder, enough=4)) == (6, 4)  # stops counting at 4
    assert train_images(DataConfig(kind="imagefolder", root=str(tmp_path / "absent")), enough=100) is None
    assert train_images(DataConfig(kind="cifar10", max_train_samples=1000), enough=10**6) == 1000
