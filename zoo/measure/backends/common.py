"""What the backends that time an export share: one export preparation, one parity check, int8 calibration.

Every backend starts from `export_source(model, input_shape, threads)`: the caller's model in eval mode gives the
reference logits on a fixed random input (run first, so per-size caches a model keeps hold real tensors before
any exporter traces it with fake ones), and `zoo.models.export.prepare_for_export` gives the copy that is
exported and timed (the family's fused, baked inference graph).

Every export is checked before it is timed, against the caller's model:
- fp32: the runtime's logits on the fixed input against the eager model's; the max abs error goes in the record
  and must be within `FP32_RTOL` of the logits' scale (max |ref|, at least 1), else `ParityError`.
- int8: top-1 agreement with the fp32 eager model on a check batch that is *not* the calibration batch
  (different seed), recorded; quantisation is expected to move logits, so agreement is reported, not enforced.

Calibration: int8 backends are given images (a [N, 3, H, W] tensor, e.g. training images) by the caller; they are
resized to the export size if needed. With none, a seeded synthetic batch is used and the record says so, since
random images calibrate activation ranges poorly and the int8 figures then bound the speed, not the accuracy.

`ExportedBackend` is the base of those backends: a subclass writes `write_export` (export into a folder) and
`open_export` (load it, say how to run it); `load` adds the preparation, the export cache and the check, `prepare`
the peak memory and the timing (`zoo.measure.latency.CallRunner`). int8 accuracy (`zoo.measure.int8_accuracy`)
evaluates through the int8 backends' `load`.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.measure.backends.export_cache import ExportCache, export_key
from zoo.measure.backends.spec import BackendSpec
from zoo.measure.latency import CallRunner, TimedBackend, TimingConfig
from zoo.measure.machine import usable_cpus
from zoo.measure.memory import ARENA_KIND, RSS_KIND, PeakRss
from zoo.models.export import prepare_for_export

__all__ = [
    "FP32_RTOL",
    "Calibration",
    "ExportSource",
    "Exported",
    "ExportedBackend",
    "CHECK_BATCH",
    "ParityError",
    "Written",
    "check_batch",
    "check_fp32",
    "eager_logits",
    "export_source",
    "make_calibration",
    "top1_agreement",
]

FP32_RTOL = 1e-4
CHECK_BATCH = 8
SYNTHETIC_CALIBRATION = 8

Run = Callable[[np.ndarray], np.ndarray]


class ParityError(RuntimeError):
    """The exported model's output differs from PyTorch's beyond tolerance."""


def eager_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model's eval-mode logits, one image at a time (as the batch-1 exports run); its mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return torch.cat([model(x).float() for x in images.split(1)])
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class ExportSource:
    """What every export starts from (see the module docstring)."""

    model: nn.Module  # the caller's model: the parity reference
    exportable: nn.Module  # prepare_for_export(model, resolution): what is exported and timed
    example: torch.Tensor  # the fixed input the export is checked and timed on
    reference: np.ndarray  # the caller's model's logits on `example`
    threads: int


def export_source(model: nn.Module, input_shape: Sequence[int], threads: int | None) -> ExportSource:
    example = torch.randn(tuple(input_shape))
    reference = eager_logits(model, example).numpy()  # before the copy: caches filled with real tensors
    exportable = prepare_for_export(model, int(input_shape[-1]))
    return ExportSource(model, exportable, example, reference, threads or usable_cpus())


def check_fp32(run: Run, source: ExportSource) -> dict:
    """Run the export on the source's input, compare with eager PyTorch; raise ParityError beyond tolerance."""
    reference = source.reference
    output = np.asarray(run(source.example.numpy()), dtype=np.float32).reshape(reference.shape)
    error = float(np.abs(output - reference).max())
    tolerance = FP32_RTOL * max(1.0, float(np.abs(reference).max()))
    if not error <= tolerance:  # also catches NaN
        raise ParityError(f"output differs from PyTorch: max abs err {error:.3g} > {tolerance:.3g}")
    return {"parity_max_abs_err": error, "parity_tolerance": tolerance}


@dataclass(frozen=True)
class Calibration:
    """Calibration images at the export size and where they came from ('given' or 'synthetic')."""

    images: torch.Tensor
    source: str

    def batches(self, size: int = 1) -> list[torch.Tensor]:
        return list(self.images.split(size))


def _to_size(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    images = images.float()
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


def make_calibration(images: torch.Tensor | None, input_shape: Sequence[int]) -> Calibration:
    """The calibration set for an export of `input_shape`: the caller's images, else synthetic ones."""
    size = (int(input_shape[-2]), int(input_shape[-1]))
    if images is not None and len(images):
        return Calibration(_to_size(images, size), f"given ({len(images)} images)")
    generator = torch.Generator().manual_seed(1234)
    synthetic = torch.randn((SYNTHETIC_CALIBRATION, int(input_shape[1]), *size), generator=generator)
    return Calibration(synthetic, f"synthetic ({SYNTHETIC_CALIBRATION} random images)")


def check_batch(input_shape: Sequence[int], count: int = CHECK_BATCH) -> torch.Tensor:
    """Images for the int8 agreement check: a seed different from the calibration batch's."""
    generator = torch.Generator().manual_seed(4321)
    return torch.randn((count, *input_shape[1:]), generator=generator)


def class_labels(model: nn.Module, outputs: torch.Tensor) -> torch.Tensor:
    """The top class per prediction: per image for a classifier ([N, classes] logits), per anchor or pixel for a
    dense graph, which says how (`class_labels`, `zoo.models.dense.deployable`)."""
    labels = getattr(model, "class_labels", None)
    return labels(outputs) if callable(labels) else outputs.argmax(dim=1)


def predictions(run: Run, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The export's top classes for each image, run one at a time (the exports take batch 1)."""
    return torch.cat([class_labels(model, torch.from_numpy(np.asarray(run(x.float().numpy()))))
                      for x in images.split(1)])


def top1_agreement(run: Run, model: nn.Module, images: torch.Tensor) -> float:
    """Fraction of the top-1 predictions (per image; per anchor or pixel for a dense graph) from the export
    that equal the fp32 eager model's."""
    reference = class_labels(model, eager_logits(model, images))
    return float((predictions(run, model, images) == reference).float().mean())


@dataclass
class Exported:
    """An export loaded in its runtime: `run` maps one image ([1, 3, H, W] float32) to its logits; `call` is the
    timed call (the fixed input already bound, so no conversion is timed); `details` go in the record."""

    run: Run
    call: Callable[[], object]
    details: dict
    before_round: Callable[[], None] | None = None


@dataclass(frozen=True)
class Written:
    """An export on disk: its folder, the exporter's details, whether it came from the cache, seconds spent."""

    folder: Path
    details: dict
    cached: bool
    seconds: float


class ExportedBackend(TimedBackend):
    """A backend that times an export of the prepared model on a fixed input, batch 1.

    Built from its declaration (`spec`: name, threads, dtype, export kind). A subclass writes `write_export`
    (export into a folder, return the details to keep, with the file's name under "file") and `open_export` (load
    that file): its exports are then cached under `export_cache_dir` when one is set
    (`zoo.measure.backends.export_cache`). A subclass that only writes `export` (both in one) is never cached.
    """

    fp32_parity: bool = True  # False only for a runtime that computes in lower precision by design (Core ML)
    runtime_packages: tuple[str, ...] = ()  # whose versions enter the export cache key

    def __init__(self, spec: BackendSpec, calibration_images: torch.Tensor | None = None) -> None:
        self.spec = spec
        self.name, self.threads, self.batch_sizes = spec.name, spec.threads, spec.batch_sizes
        self.int8 = spec.int8
        self.calibration_images = calibration_images if spec.int8 else None
        self.export_cache_dir: Path | None = None  # None: export into the workdir every time

    @property
    def export_kind(self) -> str:
        """What the exported file depends on besides the model (declared: 1t and all-thread backends share it)."""
        return self.spec.export_kind or self.name

    @property
    def caches_exports(self) -> bool:
        """Whether this backend's exports go through the export cache (it writes `write_export`)."""
        return type(self).write_export is not ExportedBackend.write_export

    def export(self, source: ExportSource, workdir: Path, calibration: Calibration | None) -> Exported:
        """Export `source.exportable` under `workdir` (int8 when `calibration` is given) and load it."""
        details = self.write_export(source, workdir, calibration)
        return self.open_export(source, workdir, details)

    def write_export(self, source: ExportSource, folder: Path, calibration: Calibration | None) -> dict:
        raise NotImplementedError

    def open_export(self, source: ExportSource, folder: Path, details: dict) -> Exported:
        raise NotImplementedError

    def calibration(self, input_shape: Sequence[int]) -> Calibration | None:
        """The calibration set of an int8 export of `input_shape` (None for fp32)."""
        return make_calibration(self.calibration_images, input_shape) if self.int8 else None

    def _cache_key(self, model: nn.Module, input_shape: Sequence[int], calibration: Calibration | None) -> str:
        return export_key(self.export_kind, model, input_shape, self.runtime_packages,
                          calibration.images if calibration is not None else None)

    def has_cached_export(self, model: nn.Module, input_shape: tuple[int, ...]) -> bool:
        """Whether the export cache already holds `model`'s export for this backend (no export, no load)."""
        if self.export_cache_dir is None or not self.caches_exports:
            return False
        key = self._cache_key(model, input_shape, self.calibration(input_shape))
        return ExportCache(self.export_cache_dir).lookup(self.export_kind, key) is not None

    def written(self, source: ExportSource, workdir: Path, calibration: Calibration | None = None) -> Written:
        """The export of `source` on disk: from the cache when it holds this key, else exported now (and
        committed to the cache when one is set, else into `workdir`)."""
        started = time.perf_counter()
        if self.export_cache_dir is None:
            workdir.mkdir(parents=True, exist_ok=True)
            return Written(workdir, self.write_export(source, workdir, calibration), False,
                           time.perf_counter() - started)
        cache = ExportCache(self.export_cache_dir)
        key = self._cache_key(source.model, source.example.shape, calibration)
        folder = cache.folder(self.export_kind, key)
        details = cache.lookup(self.export_kind, key)
        if details is not None:
            return Written(folder, details, True, time.perf_counter() - started)
        folder.mkdir(parents=True, exist_ok=True)
        details = self.write_export(source, folder, calibration)
        cache.commit(self.export_kind, key, details)
        return Written(folder, details, False, time.perf_counter() - started)

    def _opened(self, model: nn.Module, source: ExportSource, calibration: Calibration | None,
                written: Written | None, workdir: Path, check_int8: bool) -> Exported:
        """Load the export (or, for a backend without a cache, export and load) and check it."""
        started = time.perf_counter()
        if written is None:
            exported = self.export(source, workdir, calibration)
            exported.details["seconds"] = {"export_and_load": round(time.perf_counter() - started, 3)}
        else:
            exported = self.open_export(source, written.folder, dict(written.details))
            artifact = written.folder / str(written.details["file"])
            exported.details.update(artifact=str(artifact), file_bytes=artifact.stat().st_size,
                                    export_cached=written.cached)
        if calibration is None:
            if self.fp32_parity:
                exported.details.update(check_fp32(exported.run, source))
        else:
            exported.details["calibration"] = calibration.source
            if check_int8:
                exported.details["int8_top1_agreement"] = top1_agreement(exported.run, model,
                                                                         check_batch(source.example.shape))
        if written is not None:
            exported.details["seconds"] = {"export": round(written.seconds, 3),
                                           "load_and_check": round(time.perf_counter() - started, 3)}
        return exported

    def start(self, model: nn.Module, input_shape: Sequence[int], workdir: Path
              ) -> tuple[ExportSource, Calibration | None, Written | None]:
        """Prepare `model` and write its export (cached backends: into the cache, or found there); nothing is
        loaded or timed. The architecture board's export pool calls this alone, to fill the cache."""
        source = export_source(model, input_shape, self.threads)
        calibration = self.calibration(input_shape)
        written = self.written(source, workdir, calibration) if self.caches_exports else None
        return source, calibration, written

    def load(self, model: nn.Module, input_shape: tuple[int, ...], workdir: Path,
             check_int8: bool = True) -> Exported:
        """Prepare, export (or reuse the cached export), load and check `model`: fp32 parity always
        (ParityError), int8 agreement unless `check_int8` is False (int8 accuracy measures it on real images)."""
        source, calibration, written = self.start(model, input_shape, workdir)
        return self._opened(model, source, calibration, written, workdir, check_int8)

    def prepare(self, model: nn.Module, input_shape: tuple[int, ...], workdir: Path,
                config: TimingConfig) -> CallRunner:
        """`load`, then warm up; the memory of loading, checking and warming up is measured (not the export's:
        it happens before, see `zoo.measure.memory`)."""
        source, calibration, written = self.start(model, input_shape, workdir)
        with PeakRss() as rss:
            exported = self._opened(model, source, calibration, written, workdir, check_int8=True)
            runner = CallRunner(exported.call, exported.details, config, before_round=exported.before_round)
        details = runner.details
        details["peak_rss_increase_mb"] = rss.increase_mb
        arena = details.get("planned_arena_bytes")
        if arena is not None:  # the runtime's own memory plan: what it reports it needs
            details.update(peak_memory_mb=round(arena / 2**20, 3), memory_kind=ARENA_KIND)
        elif rss.increase_mb is not None:
            details.update(peak_memory_mb=rss.increase_mb, memory_kind=RSS_KIND)
        return runner
