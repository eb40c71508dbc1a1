"""The dense board sets fine-tuned runs beside scratch ones: a Δ per backbone and task from the dense family, the
rank table from the fine-tuned runs (the papers' protocol), naming where their backbones came from."""
from pathlib import Path

from zoo.report.leaderboard import write_leaderboard
from zoo.results import ResultsStore, RunRecord

SCORES = {  # (init, model): segmentation mIoU per seed; fine-tuning lifts a by ~20 pts and b by nothing
    ("scratch", "a"): (0.30, 0.31), ("scratch", "b"): (0.40, 0.41),
    ("matrix", "a"): (0.50, 0.51), ("matrix", "b"): (0.40, 0.42),
}


def test_fine_tuned_runs_sit_beside_scratch_with_their_effect_and_rank_the_backbones(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    for (init, model), values in SCORES.items():
        for seed, value in enumerate(values):
            record = RunRecord(f"{init}-{model}-{seed}", "finished", model=model, recipe="basic", sampler="fixed",
                               seed=seed, task="segmentation", metric_name="miou", metric=value)
            if init != "scratch":
                record.init_kind, record.init_from, record.init_source = init, "runs.yaml", f"src-{model}-{seed}"
            store.append(record)
    text = write_leaderboard(tmp_path, title="transfer").read_text()
    transfer = text.split("### Fine-tuned against scratch")[1].split("###")[0]
    a_row = next(line for line in transfer.splitlines() if "| a " in line)
    assert "**established**: +20.0 pts" in a_row and "| 1.00" in a_row  # every fine-tuned seed beats every scratch
    b_row = next(line for line in transfer.splitlines() if "| b " in line)
    assert "not established" in b_row
    assert "segmentation, basic recipe, fixed sampler, matrix runs.yaml: a: fine-tuned − scratch +20.0 pts" in text
    ranks = text.split("### Does the order carry over?")[1]
    assert "started from matrix runs.yaml (the papers' protocol: fine-tuned)" in ranks
    assert "| a  " in ranks and "1 (50.5)" in ranks  # a leads once fine-tuned, though it trails from scratch
    assert "### segmentation: basic recipe, fixed sampler, backbone from scratch" in text
