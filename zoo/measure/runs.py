"""After training: measure what the matrix trained, where each figure means something.

- At each model's **deployment resolution** (the paper's: 256 for MobileViT, 224 for the others; `measure.
  deploy_resolutions` overrides) with a 1000-class head, on `measure.backends` — the phone runtimes among them —
  latency, params and GMACs: properties of the architecture, independent of the resolution the matrix trained at.
  int8 backends calibrate on training images of the matrix's data set, resized to that resolution. These records
  are flagged `deployed`: the board takes each architecture's deployment resolution from them.
- At the matrix's **evaluation resolution** with the trained head, on `measure.eval_backends`: the cost of the model
  the accuracy column refers to.
- **int8 accuracy**: one trained run per model (basic/fixed, first seed, when present) is quantised by each int8
  runtime and evaluated on validation images beside its fp32 top-1 (`int8_accuracy.jsonl`).
- **Where the time goes**: latency by operator class from ONNX Runtime's profiler beside GMACs by class
  (`breakdown.jsonl`).
- Params and GMACs at the paper's resolution (pseudo-backend "flops") for the reproduction table.
Knob variants (`model_kwargs`) are measured as themselves, under their `model_label`. Stored records are reused
unless `measure.force` is set.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from zoo.config import MatrixConfig
from zoo.data import build_datasets, eval_transform
from zoo.measure.breakdown import breakdown_or_failure
from zoo.measure.flops import count_macs
from zoo.measure.int8_accuracy import int8_accuracy
from zoo.measure.latency import TimingConfig
from zoo.measure.machine import machine_info, software_versions
from zoo.measure.store import (MEASUREMENTS_FILE, PAPER_FLOPS_BACKEND, BreakdownStore, Int8Record, Int8Store,
                               Measurement, MeasurementKey, MeasurementStore)
from zoo.measure.suite import architecture_fingerprint, expected_steps, measure_models
from zoo.models import create, model_label
from zoo.models.registry import deploy_resolution
from zoo.results import ResultsStore, RunRecord
from zoo.training.components import build_model as build_trained_model
from zoo.training.loaders import transform_spec


BREAKDOWN_RUNS = 10  # profiled inferences per model


@dataclass
class Trained:
    """A trained architecture (model + knobs) and the runs that trained it."""

    name: str
    kwargs: dict[str, Any]
    runs: list[RunRecord] = field(default_factory=list)

    @property
    def representative(self) -> RunRecord:
        """The run whose weights stand for the model in int8 accuracy: basic/fixed, first seed, when present."""
        return min(self.runs, key=lambda r: (r.recipe != "basic", r.sampler != "fixed", r.seed, r.run_id))


def trained_models(runs: list[RunRecord]) -> dict[str, Trained]:
    trained: dict[str, Trained] = {}
    for run in sorted(runs, key=lambda r: r.run_id):
        if run.task != "classification":  # a detector/segmenter: the architecture board's --dense rows time those
            continue
        kwargs = dict(run.require_config().model_kwargs)
        trained.setdefault(model_label(run.model, kwargs), Trained(run.model, kwargs)).runs.append(run)
    return trained


def measure_matrix(matrix: MatrixConfig, store_dir: Path, output_dir: Path) -> None:
    """Measure the finished runs of `store_dir`'s results store; exports go under `output_dir`/artifacts."""
    trained = trained_models(list(ResultsStore(store_dir).finished()))
    if not trained:
        return
    m, progress = matrix.measure, matrix.execution.progress
    deployed(trained, matrix, store_dir, output_dir / "artifacts" / "deploy")
    evaluated(trained, matrix, store_dir, output_dir / "artifacts" / "eval")
    if m.int8_accuracy:
        for label, model in tqdm(sorted(trained.items()), desc="int8 accuracy", leave=False, disable=not progress):
            int8_of(label, model, matrix, store_dir, output_dir)
    if m.breakdown:
        breakdowns(trained, matrix, store_dir)
    paper_costs(sorted({t.name for t in trained.values()}), store_dir / MEASUREMENTS_FILE, m.force)


def _timed(labels: list[str], resolution: int, backends: list[str], matrix: MatrixConfig, store_dir: Path,
           artifacts: Path, num_classes: int, kwargs: dict[str, dict], calibration: torch.Tensor | None,
           deployed: bool) -> None:
    timing = TimingConfig(rounds=matrix.measure.rounds)
    steps = tqdm(desc=f"measure {len(labels)} models at {resolution}px", unit="step", leave=False,
                 total=expected_steps(labels, backends, timing), disable=not matrix.execution.progress)
    measure_models(labels, resolution, backends, store_dir / MEASUREMENTS_FILE, num_classes=num_classes,
                   force=matrix.measure.force, timing=timing, artifacts_dir=artifacts, calibration_images=calibration,
                   on_progress=lambda _msg: steps.update(), model_kwargs=kwargs, deployed=deployed)
    steps.close()


def deployed(trained: dict[str, Trained], matrix: MatrixConfig, store_dir: Path, artifacts: Path) -> None:
    by_res: dict[int, list[str]] = {}
    for label in sorted(trained):
        by_res.setdefault(deploy_resolution(label, matrix.measure.deploy_resolutions), []).append(label)
    kwargs = {label: model.kwargs for label, model in trained.items()}
    some_run = next(iter(trained.values())).representative
    for res, labels in sorted(by_res.items()):
        if matrix.measure.reuse_board and not matrix.measure.force:
            reuse_board_records(Path(matrix.measure.reuse_board) / MEASUREMENTS_FILE, store_dir / MEASUREMENTS_FILE,
                                labels, res, list(matrix.measure.backends))
        calibration = images_of(some_run, res, matrix.measure.calibration_images, split="train")[0]
        # deployed=True: the records carry the choice, and the board reads each architecture's deployment
        # resolution from them (it reads the stores only).
        _timed(labels, res, list(matrix.measure.backends), matrix, store_dir, artifacts / f"{res}px", 1000, kwargs,
               calibration, deployed=True)


def reuse_board_records(board_store: Path, store_path: Path, labels: list[str], resolution: int,
                        backends: list[str]) -> int:
    """Copy into `store_path` the architecture board's records of `labels` at `resolution` on `backends` from this
    machine (batch 1, 1000 classes, not failed) that the store lacks: latency is the architecture's, so the
    trained board shows the board's figures (its protocol is in each record) instead of timing them again."""
    if not board_store.is_file() or board_store.resolve() == store_path.resolve():
        return 0
    store = MeasurementStore(store_path)
    have = {k for k, r in store.latest().items() if r.status != "failed"}
    machine = machine_info().machine_id
    copied = 0
    for key, record in MeasurementStore(board_store).latest().items():
        if (key.model in labels and key.resolution == resolution and key.backend in backends and key.batch_size == 1
                and key.num_classes == 1000 and key.machine_id == machine and record.status != "failed"
                and key not in have):
            store.append(record)
            copied += 1
    return copied


def evaluated(trained: dict[str, Trained], matrix: MatrixConfig, store_dir: Path, artifacts: Path) -> None:
    groups: dict[tuple[int, int], list[str]] = {}
    for label, model in sorted(trained.items()):
        run = model.representative
        groups.setdefault((run.eval_resolution, run.num_classes), []).append(label)
    kwargs = {label: model.kwargs for label, model in trained.items()}
    for (res, classes), labels in sorted(groups.items()):
        _timed(labels, res, list(matrix.measure.eval_backends), matrix, store_dir, artifacts / f"{res}px", classes,
               kwargs, None, deployed=False)


def images_of(run: RunRecord, resolution: int, count: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` evenly spaced images (and labels) of the run's data set split, through its eval transform."""
    cfg = run.require_config()
    splits = build_datasets(cfg.data.kind, root=cfg.data.root, options=dict(cfg.data.options))
    dataset = splits.train if split == "train" else splits.val
    transform = eval_transform(transform_spec(cfg), resolution)
    step = max(1, len(dataset) // count)
    pairs = [dataset[i] for i in range(0, len(dataset), step)][:count]
    return torch.stack([transform(image) for image, _ in pairs]), torch.tensor([label for _, label in pairs])


def trained_weights(run: RunRecord, output_dir: Path) -> torch.nn.Module:
    """The run's evaluated weights (EMA when the recipe had one) from its last checkpoint."""
    cfg = run.require_config()
    model = build_trained_model(cfg, run.num_classes or 1000)
    state = torch.load(output_dir / "runs" / run.dir_name / "checkpoint.pt", map_location="cpu", weights_only=True)
    weights = state["ema"] if state.get("ema") else state["model"]
    model.load_state_dict({k.removeprefix("module."): v for k, v in weights.items()})
    return model.eval()


def int8_of(label: str, model: Trained, matrix: MatrixConfig, store_dir: Path, output_dir: Path) -> None:
    run, store = model.representative, Int8Store(store_dir)
    done = store.evaluated()
    if not matrix.measure.force and all((run.run_id, rt) in done for rt in matrix.measure.int8_runtimes):
        return
    try:
        weights = trained_weights(run, output_dir)
    except FileNotFoundError as error:  # the run's checkpoint was deleted: nothing to quantise
        store.append(Int8Record(model=label, run_id=run.run_id, status="skipped",
                                reason=f"no checkpoint: {error.filename}"))
        return
    res = run.eval_resolution or 224
    calibration = images_of(run, res, matrix.measure.calibration_images, split="train")[0]
    val_x, val_y = images_of(run, res, matrix.measure.int8_eval_images, split="val")
    for row in int8_accuracy(weights, calibration, val_x, val_y, runtimes=matrix.measure.int8_runtimes):
        store.append(Int8Record(model=label, run_id=run.run_id, recipe=run.recipe, sampler=run.sampler, seed=run.seed,
                                resolution=res, runtime=row.runtime, status=row.status, fp32_top1=row.fp32_top1,
                                int8_top1=row.int8_top1, images=row.images, calibration_images=row.calibration_images,
                                reason=row.reason, drop=row.drop, versions=software_versions()))


def breakdowns(trained: dict[str, Trained], matrix: MatrixConfig, store_dir: Path) -> None:
    store = BreakdownStore(store_dir)
    stored = store.measured()
    for label, model in tqdm(sorted(trained.items()), desc="op-class breakdown", leave=False,
                             disable=not matrix.execution.progress):
        res = deploy_resolution(label, matrix.measure.deploy_resolutions)
        if (label, res) in stored and not matrix.measure.force:
            continue
        with tempfile.TemporaryDirectory(prefix="zoo-breakdown-") as scratch:
            store.append(breakdown_or_failure(lambda: create(model.name, num_classes=1000, **model.kwargs), label, res,
                                              BREAKDOWN_RUNS, Path(scratch)))


def paper_costs(models: list[str], store_path: Path, force: bool = False) -> None:
    """Params and GMACs at each model's published resolution (1000 classes), once per model and code version."""
    store = MeasurementStore(store_path)
    stored = {} if force else store.latest()
    for model in models:
        resolution = deploy_resolution(model)  # no overrides: the paper's resolution, as the papers' figures
        key = MeasurementKey(model, resolution, PAPER_FLOPS_BACKEND, "any", 1, 1000)
        net = create(model, num_classes=1000)
        fingerprint = architecture_fingerprint(net)
        if (previous := stored.get(key)) is not None and previous.arch == fingerprint:
            continue
        store.append(Measurement(**key.as_dict(), arch=fingerprint, status="ok",
                                 params=sum(p.numel() for p in net.parameters() if p.requires_grad),
                                 gmacs=round(count_macs(net, resolution).gmacs, 6), versions=software_versions()))
