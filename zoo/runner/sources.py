"""The plan's side of `init:`: each pretrained cell's source resolved, checked and shown before anything trains.

- `{matrix: PATH}`: the classification cell of that matrix with the same model, recipe, sampler and seed, planned
  for the same processes as this plan (its run id is what the fine-tuning cell's id hashes), read from that
  matrix's store (its status) and output folder (its `checkpoint.pt`: the EMA weights where its recipe has EMA,
  the raw ones where the run's EMA was shorter than its horizon, as the board ranks it). A source not finished (or
  failed before) is trained first by `zoo.run` in the same invocation, through the same runner (workers, SLURM,
  claims: a cell another process is training is waited for, so no fine-tuning cell reads a half-written
  checkpoint), then the plan is made again; a fine-tuning cell whose source still is not finished (it failed or
  diverged) is recorded as not run, with the reason (`blocked`).
- `{file: PATH}`: the file's sha256 is its identity; it must read back as a checkpoint of the run's architecture.
- `timm`: timm's `architecture.tag` for the model; its weights must be in timm's cache or on a reachable hub.

Every problem is a `ConfigError` naming the init file or tag and the cell (exit 2, nothing written).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.config import ConfigError, Execution, MatrixConfig, PlannedRun, RunConfig, load_matrix, load_recipe, \
    run_config
from zoo.results import ResultsStore
from zoo.runner.workspace import workspace_for

if TYPE_CHECKING:
    from zoo.training.init_weights import LoadReport


def _weights():
    """zoo.training.init_weights, imported when a cell has a source: it pulls in the model zoo and torchmetrics,
    which a plan of scratch cells never needs. Imported at the top, they made every `zoo.run` parent (a --dry-run,
    a rerun with nothing to do, the parent of a worker pool) import them: 6.1 s of imports instead of 3.6 s on 2
    cores (-X importtime). tests/test_layout.py keeps them out."""
    from zoo.training import init_weights

    return init_weights


@dataclass(frozen=True)
class InitSource:
    """A pretrained cell's source as planned: what the plan table and the `init:` lines show."""

    shown: str  # the plan table's init column: "run 0a1b2c3d4e5f", "sha256:0a1b2c3d", "timm:mobilevit_xxs..."
    status: str  # the source run's status in its store ("todo" when it has no record); "ready" for a file / timm
    report: LoadReport | None = None  # what loads, where the weights can be read at plan time
    matrix: str | None = None  # the source matrix file
    source_label: str | None = None  # the source cell's label

    @property
    def pending(self) -> bool:
        """A source cell that `zoo.run` trains before the fine-tuning cells."""
        return self.matrix is not None and self.status not in ("finished", "diverged")

    @property
    def blocked(self) -> str | None:
        """Why the cell cannot start (its source failed or is not trained), or None."""
        if self.matrix is None or self.status == "finished":
            return None
        return f"not run: its init source {self.shown} ({self.source_label} of {self.matrix}) is {self.status}"


class SourceResolver:
    """Resolves the cells of one plan, reading each source matrix, store and file once."""

    def __init__(self, execution: Execution) -> None:
        self.execution = execution
        self.matrices: dict[str, tuple[MatrixConfig, dict]] = {}
        self.hashes: dict[str, str] = {}
        self.reports: dict[tuple, LoadReport | None] = {}

    def resolve(self, cfg: RunConfig) -> tuple[RunConfig, InitSource]:
        """The cell's config with its init's source filled in, and what the plan shows of it."""
        weights = _weights()
        try:
            kind = cfg.init.kind
            if kind == "matrix":
                return self._matrix(cfg)
            if kind == "file":
                return self._file(cfg)
            return self._timm(cfg)
        except weights.InitError as err:
            raise ConfigError(f"init ({cfg.init.describe()}), cell {cfg.label}: {err}") from None

    def _matrix(self, cfg: RunConfig) -> tuple[RunConfig, InitSource]:
        path = str(cfg.init.path)
        source, latest = self._source_matrix(path)
        wanted = (("model", cfg.model, source.models), ("recipe", cfg.recipe.name, source.recipes),
                  ("sampler", cfg.sampler.name, source.samplers), ("seed", cfg.seed, source.seeds))
        for what, value, values in wanted:
            if value not in values:
                raise ConfigError(f"init.matrix: {path} has no classification cell {cfg.model}/{cfg.recipe.name}/"
                                  f"{cfg.sampler.name}/s{cfg.seed} (cell {cfg.label}): its {what}s are "
                                  f"{', '.join(map(str, values))}")
        if dict(source.model_kwargs.get(cfg.model, {})) != cfg.model_kwargs:
            raise ConfigError(f"init.matrix: {path}: {cfg.model} is built with model_kwargs "
                              f"{dict(source.model_kwargs.get(cfg.model, {}))} there, {cfg.model_kwargs} here "
                              f"(cell {cfg.label}): another architecture")
        recipe = load_recipe(cfg.recipe.name, source.recipe_overrides)
        cell = PlannedRun.plan(run_config(source, cfg.model, recipe, cfg.sampler.name, cfg.seed, "classification"),
                               self.execution)
        record = latest.get(cell.run_id)
        status = record.status if record is not None else "todo"
        checkpoint = workspace_for(source, Path.cwd()).run_dir(cell) / "checkpoint.pt"
        state = "raw" if not recipe.ema or (record is not None and record.ema_short) else "ema"
        cfg = replace(cfg, init=replace(cfg.init, source=cell.run_id, weights=str(checkpoint), weights_state=state))
        report = None
        if status == "finished":
            if not checkpoint.is_file():
                raise ConfigError(f"init.matrix: {path}: source run {cell.run_id} ({cell.label}) is finished but "
                                  f"its checkpoint {checkpoint} is missing (cell {cfg.label})")
            report = self._report(cfg, (cell.run_id,))
        return cfg, InitSource(f"run {cell.run_id}", status, report, path, cell.label)

    def _source_matrix(self, path: str) -> tuple[MatrixConfig, dict]:
        if path not in self.matrices:
            source = load_matrix(path)  # its own errors name it
            if "classification" not in source.tasks:
                raise ConfigError(f"init.matrix: {path}: has no classification task (its task: {source.task})")
            if source.init.pretrained:
                raise ConfigError(f"init.matrix: {path}: its cells are fine-tuned themselves (init: "
                                  f"{source.init.describe()}); name a matrix trained from scratch")
            store = ResultsStore(workspace_for(source, Path.cwd()).store_dir)
            self.matrices[path] = (source, store.latest())
        return self.matrices[path]

    def _file(self, cfg: RunConfig) -> tuple[RunConfig, InitSource]:
        path = Path(str(cfg.init.path)).expanduser()
        if not path.is_file():
            raise ConfigError(f"init.file: {path}: file not found (cell {cfg.label}; expected a zoo checkpoint.pt or "
                              f"a state dict: .safetensors, .pth)")
        key = str(path.resolve())
        if key not in self.hashes:
            self.hashes[key] = _weights().sha256_of(path)
        cfg = replace(cfg, init=replace(cfg.init, source=f"sha256:{self.hashes[key]}", weights=key))
        report = self._report(cfg, (key,))
        return cfg, InitSource(f"sha256:{self.hashes[key][:12]}", "ready", report)

    def _timm(self, cfg: RunConfig) -> tuple[RunConfig, InitSource]:
        tag = _weights().timm_tag(cfg)
        where = _weights().check_timm_available(tag)
        cfg = replace(cfg, init=replace(cfg.init, source=f"timm:{tag}"))
        # On the hub only: downloaded when the cell starts, reported then (a plan does not download).
        report = self._report(cfg, (tag,)) if where != "hub" else None
        return cfg, InitSource(f"timm:{tag}", "ready" if where != "hub" else "on the hub", report)

    def _report(self, cfg: RunConfig, source: tuple) -> LoadReport | None:
        key = (*source, cfg.task, cfg.model, repr(sorted(cfg.model_kwargs.items())), cfg.sampler.base_resolution)
        if key not in self.reports:
            self.reports[key] = _weights().check_source(cfg)
        return self.reports[key]


def init_lines(specs) -> list[str]:
    """One line per distinct (model, task, source kind) of the plan's pretrained cells: what loads and what not."""
    seen: dict[tuple, str] = {}
    for spec in specs:
        source: InitSource | None = spec.source
        if source is None:
            continue
        cfg = spec.config
        key = (cfg.model, cfg.task, cfg.init.kind, source.report.line() if source.report else source.status)
        if key in seen:
            continue
        what = source.report.line() if source.report else (
            "reported when the cell starts (its source is not trained yet)" if source.matrix else
            "reported when the cell starts (downloaded then)")
        seen[key] = f"init: {cfg.task} {cfg.model} <- {cfg.init.describe().split(' (')[0]}: {what}"
    return list(seen.values())


def pending_sources(specs) -> dict[str, list[str]]:
    """Source matrices with cells to train first, and the `--only` filters that select exactly those cells."""
    cells: dict[str, dict[str, set[str]]] = {}
    for spec in specs:
        source: InitSource | None = spec.source
        if source is None or not source.pending or spec.done:
            continue
        cfg = spec.config
        wanted = cells.setdefault(str(source.matrix), {"model": set(), "recipe": set(), "sampler": set(),
                                                         "seed": set()})
        for key, value in (("model", cfg.model), ("recipe", cfg.recipe.name), ("sampler", cfg.sampler.name),
                           ("seed", str(cfg.seed))):
            wanted[key].add(value)
    return {path: [f"{key}={','.join(sorted(values))}" for key, values in wanted.items()] + ["task=classification"]
            for path, wanted in cells.items()}
