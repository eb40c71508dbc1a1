"""After training: measure every trained model where it was evaluated, plus its paper-resolution cost.

Latency is measured at each model's evaluation resolution with the trained head (what the leaderboard's accuracy
refers to); params and GMACs are also counted at the paper's resolution with a 1000-class head, under the
pseudo-backend "flops", for the reproduction table. Stored records are reused unless `measure.force` is set.
"""
from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from zoo.config import MatrixConfig
from zoo.measure.store import MEASUREMENTS_FILE, PAPER_FLOPS_BACKEND
from zoo.results import ResultsStore


def measure_matrix(matrix: MatrixConfig, store_dir: Path, output_dir: Path) -> None:
    """Measure the finished runs of `store_dir`'s results store; exports go under `output_dir`/artifacts."""
    from zoo.measure.latency import TimingConfig
    from zoo.measure.suite import expected_steps, measure_models

    runs = list(ResultsStore(store_dir).finished())
    trained = sorted({(r.model, r.eval_resolution, r.num_classes) for r in runs})
    store_path = store_dir / MEASUREMENTS_FILE
    for num_classes, resolution in sorted({(c, res) for _, res, c in trained}):
        models = [m for m, res, c in trained if (res, c) == (resolution, num_classes)]
        backends = list(matrix.measure.backends)
        steps = tqdm(desc=f"measure {len(models)} models at {resolution}px", unit="step", leave=False,
                     total=expected_steps(models, backends, TimingConfig()), disable=not matrix.execution.progress)
        measure_models(models, resolution, backends, store_path, num_classes=num_classes,
                       force=matrix.measure.force, artifacts_dir=output_dir / "artifacts",
                       on_progress=lambda _msg: steps.update())
        steps.close()
    paper_costs(sorted({m for m, _, _ in trained}), store_path, matrix.measure.force)


def paper_costs(models: list[str], store_path: Path, force: bool = False) -> None:
    """Params and GMACs at each model's published resolution (1000 classes), once per model and code version."""
    from zoo.measure.flops import count_macs
    from zoo.measure.machine import software_versions
    from zoo.measure.store import MeasurementKey, MeasurementStore
    from zoo.measure.suite import architecture_fingerprint, resolve_resolutions
    from zoo.models import create

    store = MeasurementStore(store_path)
    stored = {} if force else store.latest()
    for model, resolution in resolve_resolutions(models, None).items():
        key = MeasurementKey(model, resolution, PAPER_FLOPS_BACKEND, "any", 1, 1000)
        net = create(model, num_classes=1000)
        fingerprint = architecture_fingerprint(net)
        if stored.get(key, {}).get("arch") == fingerprint:
            continue
        store.append({**key.as_dict(), "arch": fingerprint, "status": "ok",
                      "params": sum(p.numel() for p in net.parameters() if p.requires_grad),
                      "gmacs": round(count_macs(net, resolution).gmacs, 6), "versions": software_versions()})
