"""Leaderboard generation from a fixture store: tables present, numbers in the right cells, byte-identical output,
the previous version's board from the same stores, and which measurement records the board shows."""
import json
import shutil
from pathlib import Path

import pytest

from zoo.measure.store import Measurement, MeasurementStore
from zoo.report.leaderboard import write_leaderboard
from zoo.report.inference import Family
from zoo.report.stats import SeedStat, pareto_front, rank_agreement, ranks

# Stores as the previous zoo version wrote them (two machines, a retried failure, a forced re-measure, batch 32,
# evaluation-resolution records, int8 and breakdown rows, the deploy_resolutions.json side file), with the README
# that version generated from them.
BOARD_V0 = Path(__file__).parent / "data" / "board_v0"

MODELS = {  # model: (params, gmacs, latency ms on cpu-eager-1t, latency on onnxruntime-cpu)
    "deit_tiny": (5.5e6, 0.090, 4.0, 2.0),
    "pit_ti": (4.6e6, 0.050, 3.9, 2.5),
    "mobilenetv2_100": (2.2e6, 0.020, 6.0, 1.0),
    "mobilevit_xxs": (0.95e6, 0.030, 9.0, 3.0),
}
TOP1 = {  # (model, recipe, sampler): top-1 per seed
    ("deit_tiny", "basic", "fixed"): [0.80, 0.82],
    ("pit_ti", "basic", "fixed"): [0.90, 0.91],
    ("mobilenetv2_100", "basic", "fixed"): [0.95, 0.97],
    ("mobilevit_xxs", "basic", "fixed"): [0.955, 0.965],
    ("deit_tiny", "advanced", "fixed"): [0.70, 0.74],
    ("deit_tiny", "basic", "multiscale"): [0.85],
}


def run_cfg(model: str, recipe: str = "basic", sampler: str = "fixed", seed: int = 0, recipe_changes=None, **changes):
    """A full run config, as results.jsonl holds one (the board reads it typed)."""
    from dataclasses import replace

    from zoo.config import RunConfig, SamplerConfig, load_recipe

    return RunConfig(model=model, recipe=replace(load_recipe(recipe), **(recipe_changes or {})),
                     sampler=SamplerConfig(name=sampler), seed=seed, **changes)


def make_store(path: Path) -> Path:
    from zoo.config import to_dict

    path.mkdir(parents=True, exist_ok=True)
    with open(path / "results.jsonl", "w") as f:
        for (model, recipe, sampler), values in TOP1.items():
            for seed, top1 in enumerate(values):
                f.write(json.dumps({
                    "run_id": f"{model}-{recipe}-{sampler}-{seed}", "status": "finished", "model": model,
                    "recipe": recipe, "sampler": sampler, "seed": seed, "dataset": "digits", "eval_resolution": 48,
                    "epochs": 4, "global_batch": 64, "num_classes": 10, "git_commit": "abc1234",
                    "config": to_dict(run_cfg(model, recipe, sampler, seed, epochs=4, lr=0.002)),
                    "top1": top1, "top5": 1.0, "updates": 100 if sampler == "fixed" else 60,
                    "train_time_s": 30.0, "train_img_per_s": 250.0,
                }) + "\n")
        f.write(json.dumps({"run_id": "x", "status": "failed", "model": "pit_ti", "recipe": "basic",
                            "sampler": "fixed", "seed": 9}) + "\n")
    with open(path / "measurements.jsonl", "w") as f:
        for model, (params, gmacs, lat1, lat2) in MODELS.items():
            for backend, lat in (("cpu-eager-1t", lat1), ("onnxruntime-cpu", lat2)):
                f.write(json.dumps({"model": model, "resolution": 256 if "mobilevit" in model else 224,
                                    "backend": backend, "machine_id": "0123456789ab", "batch_size": 1,
                                    "num_classes": 1000, "status": "ok", "params": params, "gmacs": gmacs,
                                    "median_ms": lat, "iqr_ms": 0.1, "runs": 30,
                                    "machine": {"cpu_model": "Test CPU", "cpus": 2}}) + "\n")
            f.write(json.dumps({"model": model, "resolution": 224, "backend": "flops", "machine_id": "any", "batch_size": 1,
                                "num_classes": 1000, "status": "ok", "params": params * 1.2, "gmacs": gmacs * 20}) + "\n")
    return path


def row_of(text: str, section: str, model: str, also: str | None = None) -> list[str]:
    body = text.split(section, 1)[1]
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if model in cells and (also is None or also in cells):
            return cells
    raise AssertionError(f"{model} not in {section}")


def test_leaderboard_tables_and_cells(tmp_path):
    store = make_store(tmp_path / "board")
    text = write_leaderboard(store, title="fixture").read_text()
    for heading in ["Main boards", "basic recipe, fixed sampler", "Basic vs advanced", "multi-scale sampler",
                    "FLOPs vs measured latency", "Reproduction"]:
        assert heading in text
    # Main board: mobilenetv2 (96.0) first, mobilevit (96.0) overlaps -> marked; deit last with its std.
    row = row_of(text, "### basic recipe, fixed sampler", "mobilenetv2_100")
    assert row[0] == "1" and row[4].startswith("96.0 ± 1.4 (n=2)") and row[6] == "6.00" and row[7] == "1.00"
    assert "≈" in row[4]  # 96.0 ± 1.4 overlaps mobilevit's 96.0 ± 0.7
    assert row_of(text, "### basic recipe, fixed sampler", "deit_tiny")[0] == "4"
    assert "(n=1) ¹" in row_of(text, "### basic recipe, multiscale sampler", "deit_tiny")[4]
    # Recipe table: deit advanced 72.0 vs basic 81.0 -> -9.0
    assert row_of(text, "## 2.", "deit_tiny", also="fixed")[4] == "-9.0"
    # Sampler table: deit fixed 81.0 vs multiscale 85.0 with 100 vs 60 updates
    cells = row_of(text, "## 3.", "deit_tiny", also="basic")
    assert cells[4] == "+4.0" and cells[5] == "not compared: too few epochs recorded to judge its plateau; a single seed" and cells[6] == "100" and cells[7] == "60"
    # FLOPs vs latency: on cpu-eager-1t GMACs order is mnv2<mvit<pit<deit, latency order pit<deit<mnv2<mvit
    corr = row_of(text, "## 4.", "cpu-eager-1t")
    expected = rank_agreement([0.09, 0.05, 0.02, 0.03], [4.0, 3.9, 6.0, 9.0])
    assert corr[2] == f"{expected.spearman:+.2f}" and corr[3] == f"{expected.kendall:+.2f}"
    # Reproduction: deit_tiny measured 6.6 M / 1.8 GMACs at 224 against the paper's 5.7 M / 1.26
    repro = row_of(text, "## 5.", "deit_tiny")
    assert repro[1:8] == ["224", "6.600", "5.700", "+15.8", "1.800", "1.26", "+42.9"]
    assert "- **Latency machine**: Test CPU (2 cores)." in text
    assert (tmp_path / "board" / "top1_vs_latency.png").stat().st_size > 1000
    assert (tmp_path / "board" / "gmacs_vs_latency.png").stat().st_size > 1000
    assert "![top1_vs_latency.png](top1_vs_latency.png)" in text and "![gmacs_vs_latency.png](gmacs_vs_latency.png)" in text


def test_leaderboard_is_byte_identical_on_regeneration(tmp_path):
    store = make_store(tmp_path / "board")
    first = write_leaderboard(store).read_bytes()
    plot = (store / "top1_vs_latency.png").read_bytes()
    second = write_leaderboard(store).read_bytes()
    assert first == second and plot == (store / "top1_vs_latency.png").read_bytes()


def test_leaderboard_is_logged_to_wandb_as_tables_and_images(tmp_path):
    from zoo.config import WandbConfig
    from zoo.tracking.offline import find_offline_runs, read_offline_run

    store = make_store(tmp_path / "board")
    write_leaderboard(store, title="fixture", wandb=WandbConfig(mode="offline"), wandb_dir=tmp_path / "wb")
    (run_dir,) = find_offline_runs(tmp_path / "wb")
    run = read_offline_run(run_dir)
    assert run.job_type == "leaderboard" and run.name == "fixture-leaderboard"
    columns, rows = run.table("recipes")
    assert columns[:4] == ["model", "sampler", "basic top-1 %", "advanced top-1 %"]
    assert ["deit_tiny", "fixed", "81.0 ± 1.4 (n=2)", "72.0 ± 2.8 (n=2)", "-9.0",
            "not compared: too few epochs recorded to judge its plateau"] in rows
    board_columns, _ = run.table("board/basic-fixed")
    assert "cpu-eager-1t (ms)" in board_columns
    assert "plots/top1_vs_latency" in run.summary


def test_leaderboard_cli_missing_store(tmp_path, capsys):
    import zoo.leaderboard
    from zoo.report.leaderboard import main

    assert zoo.leaderboard.main is main  # `python -m zoo.leaderboard` runs this main
    assert main([str(tmp_path / "none")]) == 2
    assert f"error: {tmp_path / 'none'}/results.jsonl not found" in capsys.readouterr().err


def test_rank_correlation_maths():
    assert rank_agreement([1, 2, 3, 4], [10, 20, 30, 40]).spearman == pytest.approx(1.0)
    assert rank_agreement([1, 2, 3, 4], [4, 3, 2, 1]).kendall == pytest.approx(-1.0)
    # one discordant pair of 6: tau = (5 - 1) / 6; rho = 1 - 6*2/(4*15) = 0.8
    agreement = rank_agreement([1, 2, 3, 4], [1, 2, 4, 3])
    assert agreement.kendall == pytest.approx(4 / 6) and agreement.spearman == pytest.approx(0.8)
    assert rank_agreement([1, 2], [2, 1]) is None
    assert ranks([3.0, 1.0, 3.0]) == [2.5, 1.0, 2.5]


def test_seed_stats_and_pareto():
    a, b = SeedStat.of([0.8, 0.82]), SeedStat.of([0.9, 0.91])
    assert SeedStat.of([0.5]).std is None
    # (latency, accuracy): the 2nd point is dominated by the 1st (slower and worse)
    assert pareto_front([(1.0, 0.9), (2.0, 0.8), (3.0, 0.95)]) == [0, 2]


def test_sweep_points_are_rows_of_their_own_not_extra_seeds(tmp_path):
    from zoo.results import ResultsStore, RunRecord

    store = ResultsStore(tmp_path)
    for lr, top1s in ((0.002, [0.90, 0.92]), (0.004, [0.50, 0.52]), (0.008, [0.30])):
        for seed, top1 in enumerate(top1s):
            config = run_cfg("mobilevit_xs", seed=seed, lr=lr, recipe_changes={"weight_decay": 0.01})
            store.append(RunRecord(f"r{lr}-{seed}", "finished", model="mobilevit_xs", recipe="basic",
                                   sampler="fixed", seed=seed, dataset="digits", eval_resolution=32, epochs=1,
                                   global_batch=32, config=config, top1=top1))
    text = write_leaderboard(tmp_path).read_text()
    section = "### basic recipe, fixed sampler"
    assert row_of(text, section, "mobilevit_xs")[4].startswith("91.0 ± 1.4 (n=2)")
    assert row_of(text, section, "mobilevit_xs [lr=0.004]")[4].startswith("51.0 ± 1.4 (n=2)")
    assert row_of(text, section, "mobilevit_xs [lr=0.008]")[4].startswith("30.0 (n=1)")


def test_plateau_significance_and_conclusions_from_a_store_with_curves(tmp_path):
    """A fixture store with learning curves: the board counts runs at their plateau, tests differences with Welch's
    t-test over seeds, and writes only the conclusions the numbers support."""
    from zoo.results import ResultsStore, RunRecord
    from zoo.training.epoch import EpochMetrics

    def record(model, recipe, seed, curve):
        history = [EpochMetrics(epoch=i + 1, train_loss=1.0, epoch_time_s=1.0, updates=10 * (i + 1), val_top1=v,
                                val_top5=1.0, val_loss=1.0, val_ece=0.1) for i, v in enumerate(curve)]
        rec = RunRecord(f"{model}-{recipe}-{seed}", "finished", model=model, recipe=recipe, sampler="fixed",
                        seed=seed, dataset="digits", eval_resolution=32, epochs=len(curve), global_batch=32,
                        num_classes=10,
                        config=run_cfg(model, recipe, seed=seed, lr=0.002, ema_time_scale=0.01,
                                       recipe_changes={"hflip": 0.0}))
        rec.set_history(history)
        return rec

    store = ResultsStore(tmp_path)
    flat = [0.5, 0.8, 0.90, 0.91, 0.92, 0.92, 0.92, 0.93]  # gains 1 point over its last quarter (2 epochs)
    rising = [0.1, 0.2, 0.30, 0.40, 0.50, 0.60, 0.70, 0.80]  # gains 20: not at its plateau
    stuck = [0.10, 0.11, 0.10, 0.12, 0.11, 0.10, 0.11, 0.12]  # flat, but never left chance (10 classes)
    for seed, shift in enumerate((0.0, 0.01, -0.01)):
        store.append(record("mobilevit_xxs", "basic", seed, [v + shift for v in flat]))
        store.append(record("deit_tiny", "basic", seed, [v + shift for v in rising]))
        store.append(record("pit_ti", "basic", seed, [v + shift - 0.13 for v in flat]))
        store.append(record("mobilenetv2_100", "basic", seed, [v + shift for v in stuck]))
        store.append(record("mobilevit_xxs", "advanced", seed, [v + shift / 2 + 0.001 for v in flat]))
    text = write_leaderboard(tmp_path, title="curves").read_text()
    assert "9 of 15 runs are at their plateau" in text
    assert "recipe fields changed for this data set: hflip=0.0" in text  # stated, once, for every recipe alike
    assert "EMA time constants scaled by 0.01" in text
    assert row_of(text, "## Trained to a plateau?", "deit_tiny")[6:8] == ["+20.0", "**no**"]
    conclusions = text.split("## Conclusions the data supports", 1)[1].split("## 1.", 1)[0]
    supported, unsupported = conclusions.split("**Not supported by the data**")
    assert row_of(text, "## Trained to a plateau?", "mobilenetv2_100")[7] == "**no** (near chance)"
    assert ("mobilevit_xxs (93.0 %) is more accurate than pit_ti (80.0 %): +13.0 pts [+10.9, +15.1], Holm p<0.001"
            in supported)
    assert "2 tested (1 models, 1 recipe)" in conclusions and "comparisons, 2 tested" in conclusions  # the family: the one pair of settled models, one recipe
    # Cells still learning (or never learning) are not ranked, however large the gap: the budget made it.
    assert "deit_tiny" not in supported and "mobilenetv2_100 (" not in supported
    assert ("basic recipe, fixed sampler: not compared, not trained to a plateau: deit_tiny (80.0 %), "
            "mobilenetv2_100 (12.0 %)") in unsupported
    assert "advanced vs basic recipe: no effect established for mobilevit_xxs (fixed): +0.1 pts [" in unsupported
    assert "far from ImageNet" in conclusions and "runs/cifar.yaml" in conclusions
    assert text.index("## Conclusions") < text.index("## 1. Main boards")
    assert (tmp_path / "learning_curves.png").stat().st_size > 5000


def test_the_previous_versions_stores_give_the_previous_versions_board(tmp_path):
    store = tmp_path / "board_v0"
    shutil.copytree(BOARD_V0, store, ignore=shutil.ignore_patterns("README*"))
    assert write_leaderboard(store).read_text() == (BOARD_V0 / "README.expected.md").read_text()


def _measurement(model: str, res: int, backend: str, ms: float | None, machine: str = "0123456789ab",
                 cpu: str = "Test CPU", **fields) -> Measurement:
    return Measurement(model, res, backend, machine, params=1_000_000, gmacs=0.5, median_ms=ms, iqr_ms=0.1, runs=30,
                       machine={"cpu_model": cpu, "cpus": 2}, **fields)


@pytest.mark.slow
def test_the_deployment_resolution_comes_from_the_flagged_records(tmp_path):
    store = make_store(tmp_path / "board")
    measurements = MeasurementStore(store / "measurements.jsonl")
    measurements.append(_measurement("mobilevit_xxs", 64, "cpu-eager-1t", 1.5))  # measured, but not deployed
    unflagged = write_leaderboard(store).read_text()
    assert row_of(unflagged, "## 6.", "mobilevit_xxs")[1:4] == ["256", "0.030", "9.0"]  # the paper's 256 px
    measurements.append(_measurement("mobilevit_xxs", 64, "cpu-eager-1t", 1.5, deployed=True))
    flagged = write_leaderboard(store).read_text()
    assert row_of(flagged, "## 6.", "mobilevit_xxs")[1:4] == ["64", "0.500", "1.5"]
    assert row_of(flagged, "### basic recipe, fixed sampler", "mobilevit_xxs")[6:8] == ["1.50", "–"]
    measurements.append(_measurement("mobilevit_xxs", 256, "cpu-eager-1t", 8.0, deployed=True))  # chosen again
    assert row_of(write_leaderboard(store).read_text(), "## 6.", "mobilevit_xxs")[1:4] == ["256", "0.500", "8.0"]


def test_each_latency_column_comes_from_the_machine_that_measured_it_last(tmp_path):
    store = make_store(tmp_path / "board")
    measurements = MeasurementStore(store / "measurements.jsonl")
    for model, ms in (("deit_tiny", 40.0), ("pit_ti", 39.0)):
        measurements.append(_measurement(model, 224, "cpu-eager-1t", ms, machine="fedcba987654", cpu="New CPU"))
    text = write_leaderboard(store).read_text()
    section = "### basic recipe, fixed sampler"
    # cpu-eager-1t (column 6): the new machine's figures, never mixed with the old machine's; onnxruntime-cpu
    # (column 7) was measured by the old machine only.
    assert row_of(text, section, "deit_tiny")[6:8] == ["40.00", "2.00"]
    assert row_of(text, section, "mobilenetv2_100")[6:8] == ["–", "1.00"]
    assert "- **Latency machine**: New CPU (2 cores); Test CPU (2 cores)." in text


def test_a_newer_failure_hides_an_older_figure_everywhere(tmp_path):
    store = make_store(tmp_path / "board")
    MeasurementStore(store / "measurements.jsonl").append(
        _measurement("deit_tiny", 224, "cpu-eager-1t", None, status="failed", reason="ParityError: differs"))
    text = write_leaderboard(store).read_text()
    assert row_of(text, "### basic recipe, fixed sampler", "deit_tiny")[6] == "–"
    assert row_of(text, "## 6.", "deit_tiny")[3] == "failed: ParityError: differs"
    conclusions = text.split("## 1.", 1)[0]
    fastest = next(line for line in conclusions.splitlines() if line.startswith("- on cpu-eager-1t"))
    assert "deit_tiny" not in fastest and "pit_ti 0.7×" in fastest  # the one "latest" of the tables, too


def test_a_family_without_a_board_to_pool_tests_each_pair_on_its_own_seeds():
    """No cell given for a prior: each pair is Student's t on its own seeds (n_a + n_b − 2 degrees of freedom)."""
    family = Family("pairs")
    family.add("models", "apart", "a", [0.80, 0.81, 0.79], "b", [0.93, 0.94, 0.92])
    family.add("models", "close", "a", [0.80, 0.82], "b", [0.81, 0.83])  # t = 0.71 on 2 degrees of freedom
    family.add("models", "one", "a", [0.5], "b", [0.6])  # one seed a side, nothing to borrow: untestable
    outcomes = family.outcomes()
    apart, close, one = (outcomes.of("models", k) for k in ("apart", "close", "one"))
    assert apart.p < 0.001 and apart.claimed and apart.interval == "t, 4.0 df"
    assert close.p == pytest.approx(0.553, abs=0.002) and not close.claimed
    assert one.p == 1.0 and not one.claimed
    assert close.p_holm == pytest.approx(min(1.0, 2 * close.p))  # Holm: the second smallest of three times 2


def _write_board_repeatedly(store: str, times: int) -> None:
    for _ in range(times):
        write_leaderboard(store)


@pytest.mark.slow
def test_two_leaderboard_writers_at_once_leave_a_whole_board(tmp_path):
    # Two `zoo.leaderboard` processes on one store, and a reader looking at README.md the whole time: the reader
    # only ever sees the complete board (every file is renamed into place whole), and no temporary file is left.
    import multiprocessing

    store = make_store(tmp_path / "store")
    expected = write_leaderboard(store).read_text()
    plots = {p.name: p.read_bytes() for p in store.glob("*.png")}
    ctx = multiprocessing.get_context("fork")  # the writers inherit this process's imports: no 10 s start each
    writers = [ctx.Process(target=_write_board_repeatedly, args=(str(store), 2)) for _ in range(2)]
    for writer in writers:
        writer.start()
    seen = set()
    while any(w.is_alive() for w in writers):
        seen.add((store / "README.md").read_text())
    for writer in writers:
        writer.join()
        assert writer.exitcode == 0
    assert seen <= {expected} and (store / "README.md").read_text() == expected
    assert {p.name: p.read_bytes() for p in store.glob("*.png")} == plots
    assert not [p.name for p in store.iterdir() if p.name.endswith(".tmp")]
