"""The bridge from trained runs to measurements: deployment resolution with a 1000-class head, the evaluation
resolution with the trained head, int8 accuracy of the trained weights, the op-class breakdown, and the board."""
import pytest

from zoo.config import DataConfig, ExecConfig, MatrixConfig, MeasureConfig, RunConfig, SamplerConfig, WandbConfig
from zoo.config import load_recipe
from zoo.measure.runs import measure_matrix, trained_models
from zoo.measure.store import BreakdownStore, Int8Store, MeasurementStore
from zoo.results import ResultsStore
from zoo.runner.execute import execute_run
from zoo.runner.plan import plan_for
from zoo.runner.workspace import Workspace
from zoo.training.distributed import DistContext

pytestmark = pytest.mark.slow


def row_of(text: str, section: str, model: str) -> list[str]:
    for line in text.split(section, 1)[1].splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == model:
            return cells
    raise AssertionError(f"{model} not in {section}")


def test_trained_runs_are_measured_where_each_figure_means_something(tmp_path):
    data = DataConfig(kind="digits", options={"source_size": 16}, max_train_samples=64, max_val_samples=40,
                      eval_crop_pct=1.0)
    cfg = RunConfig(model="mobilevit_xxs_aft", model_kwargs={"patch_size": [2, 2, 2]}, recipe=load_recipe("basic"),
                    sampler=SamplerConfig(name="fixed", base_resolution=32), data=data, epochs=1, batch_size=16,
                    lr_scaling="none", warmup_epochs=0)
    ws = Workspace(tmp_path / "out", tmp_path / "board", WandbConfig(mode="disabled"), ExecConfig(progress=False), "t")
    record = execute_run(plan_for(cfg, DistContext()), ws, DistContext(), ResultsStore(ws.store_dir))
    assert record.status == "finished"
    (label,) = trained_models([record])
    assert label == "mobilevit_xxs_aft[patch_size=[2, 2, 2]]"  # a knob variant is measured as itself

    measure = MeasureConfig(backends=("cpu-eager-1t",), eval_backends=("cpu-eager-1t",), rounds=1,
                            deploy_resolutions={"mobilevit_xxs_aft": 64},  # the paper's 256, shrunk to stay fast
                            calibration_images=8, int8_eval_images=40, int8_runtimes=("onnxruntime",))
    matrix = MatrixConfig(data=data, measure=measure, execution=ExecConfig(progress=False))
    measure_matrix(matrix, ws.store_dir, ws.output_dir)
    records = MeasurementStore(ws.store_dir / "measurements.jsonl").records()
    (deploy,) = [r for r in records if r.model == label and r.resolution == 64]
    assert (deploy.num_classes, deploy.status, deploy.deployed) == (1000, "ok", True)  # the choice, in the record
    (evaluated,) = [r for r in records if r.model == label and r.resolution == 32]
    assert (evaluated.num_classes, evaluated.deployed) == (10, False)
    (paper,) = [r for r in records if r.backend == "flops"]
    assert (paper.model, paper.resolution, paper.num_classes) == ("mobilevit_xxs_aft", 256, 1000)
    assert not (ws.store_dir / "deploy_resolutions.json").exists()  # no side file: the board reads the records
    (ort,) = Int8Store(ws.store_dir).latest()
    # fp32 is the trained (EMA) weights on the whole validation set: the run's own top-1
    assert ort.status == "ok" and ort.images == 40 and ort.fp32_top1 == pytest.approx(100 * record.top1, abs=1e-4)
    assert ort.int8_top1 * 40 / 100 == pytest.approx(round(ort.int8_top1 * 40 / 100))  # a share of 40 images
    assert ort.drop == pytest.approx(ort.fp32_top1 - ort.int8_top1)
    (breakdown,) = BreakdownStore(ws.store_dir).latest()
    assert breakdown.model == label and breakdown.resolution == 64 and breakdown.ms_by_class

    from zoo.report.leaderboard import write_leaderboard

    text = write_leaderboard(ws.store_dir).read_text()
    for heading in ("## 6. Latency on the runtimes", "## 8. int8", "## 9. Where the time goes", "## 10. Export"):
        assert heading in text
    assert f"| {label}" in text.split("## 8. int8", 1)[1]
    assert row_of(text, "## 6.", label)[1] == "64"  # the deployment resolution, read from the flagged records
