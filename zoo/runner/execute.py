"""Run one matrix cell end to end: W&B run, training, and one record in the results store whatever happens.

NaN/inf, OOM, a checkpoint that cannot be written (a full disk: the previous checkpoint stays intact) and other run
errors become a record (`diverged`/`failed`, with the reason) and the caller goes on to the next run; Ctrl-C/SIGTERM
records `interrupted` and stops. Finished/diverged runs are skipped by a rerun; the others resume.
"""
from __future__ import annotations

import time
import traceback
from datetime import datetime, timezone

import torch

from zoo.config import PlannedRun, to_dict
from zoo.results import ResultsStore, RunRecord
from zoo.results.provenance import git_commit, library_versions
from zoo.runner.plan import ema_horizon_updates
from zoo.runner.workspace import Workspace
from zoo.tracking.wandb_sink import WandbSink
from zoo.training.checkpoint import CheckpointWriteError
from zoo.training.distributed import DistContext, peak_memory_mb
from zoo.training.engine import RunOutcome, train_run
from zoo.training.guards import Diverged


def new_record(run: PlannedRun, ctx: DistContext) -> RunRecord:
    """Who the run is: identity, config and provenance (the outcome is filled in when it ends)."""
    cfg = run.config
    return RunRecord(
        run_id=run.run_id, status="interrupted", label=cfg.label, model=cfg.model, recipe=cfg.recipe.name,
        sampler=cfg.sampler.name, seed=cfg.seed, dataset=cfg.data.kind, eval_resolution=cfg.sampler.eval_size,
        epochs=cfg.epochs, world_size=ctx.world_size, global_batch=cfg.global_batch,
        device=str(ctx.device),
        device_name=torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu",
        config=cfg, config_hash=run.run_id, git_commit=git_commit(), versions=library_versions(),
        ema_horizon_updates=ema_horizon_updates(cfg), adapted_defaults=list(run.adapted_defaults),
    )


def record_outcome(record: RunRecord, outcome: RunOutcome) -> None:
    record.set_history(outcome.history)
    record.updates, record.train_time_s = outcome.updates, outcome.train_time_s
    record.train_img_per_s = outcome.train_samples / outcome.train_time_s if outcome.train_time_s else None
    record.params, record.num_classes = outcome.params, outcome.num_classes
    record.resumed_from_epoch, record.skipped_images = outcome.resumed_from_epoch, outcome.skipped_images
    record.init_report = outcome.init.to_json() if outcome.init is not None else {}
    # An EMA that averaged over fewer updates than its time constant is mostly the initial weights: the board
    # shows the raw weights' top-1 beside it and never ranks or concludes on it.
    record.ema_short = record.ema_horizon_updates is not None and outcome.updates < record.ema_horizon_updates


def _open_sink(run: PlannedRun, ws: Workspace, ctx: DistContext) -> WandbSink:
    cfg = run.config
    return WandbSink.open(
        project=ws.wandb.project, entity=ws.wandb.entity, group=ws.wandb.group or ws.group,
        name=cfg.label.replace("/", "-"),
        tags=[cfg.model, cfg.recipe.name, cfg.sampler.name, f"seed{cfg.seed}", *ws.wandb.tags],
        config=to_dict(cfg),  # W&B takes plain data
        mode=ws.wandb.mode if ctx.is_main else "disabled", dir=str(ws.output_dir),
        resume_id=run.run_id,  # a resumed run continues its W&B run instead of opening a second one
    )


def execute_run(run: PlannedRun, ws: Workspace, ctx: DistContext, store: ResultsStore) -> RunRecord:
    """Train (or resume) one planned run and append its record (rank 0 only). Returns the record."""
    run.check_world(ctx.world_size)  # a user error (exit 2), before anything is opened or recorded
    run_dir = ws.run_dir(run)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = new_record(run, ctx)
    sink = _open_sink(run, ws, ctx)
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    started = time.perf_counter()
    outcome = RunOutcome()
    interrupted: BaseException | None = None
    try:
        outcome = train_run(run, ctx, run_dir, compile_model=ws.execution.compile, log_every=ws.execution.log_every,
                            progress=ws.execution.progress, log=sink.log)
        record.status = "finished"
        record_outcome(record, outcome)
    except Diverged as err:
        record.status, record.error = "diverged", str(err)
        record.diverged_step, record.diverged_epoch = err.step, err.epoch
    except CheckpointWriteError as err:  # e.g. ENOSPC: the message names the file; the previous one is intact
        record.status, record.error = "failed", str(err)
    except torch.OutOfMemoryError as err:
        record.status, record.error = "failed", f"out of memory: {err}".splitlines()[0]
    except (KeyboardInterrupt, SystemExit) as err:
        record.status, record.error = "interrupted", type(err).__name__
        interrupted = err
    except Exception as err:  # a run error must not stop the matrix; the record keeps the traceback
        record.status, record.error = "failed", f"{type(err).__name__}: {err}"
        record.traceback = traceback.format_exc()[-4000:]
    if record.status != "finished":
        record.epochs_done = len(outcome.history)
    record.wall_time_s = time.perf_counter() - started
    record.peak_memory_mb = peak_memory_mb(ctx.device)
    record.wandb_run_id = sink.run_id
    record.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if ctx.is_main:
        store.append(record)
        sink.summary({k: v for k, v in record.to_json().items() if isinstance(v, (int, float, str))})
    sink.finish(exit_code=0 if record.status == "finished" else 1)
    if interrupted is not None:
        raise interrupted
    return record
