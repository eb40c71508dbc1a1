"""Run one matrix cell end to end: W&B run, training, and one record in the results store whatever happens.

NaN/inf, OOM and other run errors become a record (`diverged`/`failed`) and the caller goes on to the next run;
Ctrl-C/SIGTERM records `interrupted` and stops. Finished/diverged runs are skipped by a rerun; the others resume.
"""
from __future__ import annotations

import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from zoo.config import RunConfig
from zoo.runner.workspace import Workspace
from zoo.training.distributed import DistContext
from zoo.training.engine import Diverged, RunOutcome, best_of, peak_memory_mb, train_run
from zoo.tracking.wandb_sink import WandbSink
from zoo.results.provenance import git_commit, library_versions
from zoo.results import ResultsStore
from zoo.config.typed import to_dict


def _base_record(cfg: RunConfig, ctx: DistContext) -> dict[str, Any]:
    return {
        "run_id": cfg.run_id(),
        "label": cfg.label,
        "model": cfg.model,
        "recipe": cfg.recipe.name,
        "sampler": cfg.sampler.name,
        "seed": cfg.seed,
        "dataset": cfg.data.kind,
        "eval_resolution": cfg.sampler.eval_size,
        "epochs": cfg.epochs,
        "world_size": ctx.world_size,
        "global_batch": cfg.global_batch(ctx.world_size),
        "device": str(ctx.device),
        "device_name": torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu",
        "config": to_dict(cfg),
        "config_hash": cfg.run_id(),
        "git_commit": git_commit(),
        "versions": library_versions(),
    }


def _summarise(outcome: RunOutcome) -> dict[str, Any]:
    last = outcome.history[-1] if outcome.history else {}
    return {
        "top1": last.get("val_top1"),
        "top5": last.get("val_top5"),
        "val_loss": last.get("val_loss"),
        "ece": last.get("val_ece"),
        "top1_raw": last.get("val_top1_raw"),
        "best_top1": best_of(outcome.history, "val_top1"),
        "best_top5": best_of(outcome.history, "val_top5"),
        "epochs_done": len(outcome.history),
        "updates": outcome.updates,
        "train_time_s": outcome.train_time_s,
        "train_img_per_s": outcome.train_samples / outcome.train_time_s if outcome.train_time_s else None,
        "params": outcome.params,
        "num_classes": outcome.num_classes,
        "resumed_from_epoch": outcome.resumed_from_epoch,
        "skipped_images": outcome.skipped_images,
        "history": outcome.history,
    }


def execute_run(cfg: RunConfig, ws: Workspace, ctx: DistContext, store: ResultsStore) -> dict[str, Any]:
    """Train (or resume) one run and append its record (rank 0 only). Returns the record."""
    run_dir = ws.run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = _base_record(cfg, ctx)
    sink = WandbSink.open(
        project=ws.wandb.project,
        entity=ws.wandb.entity,
        group=ws.wandb.group or ws.group,
        name=cfg.label.replace("/", "-"),
        tags=[cfg.model, cfg.recipe.name, cfg.sampler.name, f"seed{cfg.seed}", *ws.wandb.tags],
        config=record["config"],
        mode=ws.wandb.mode if ctx.is_main else "disabled",
        dir=str(ws.output_dir),
    )
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    started = time.perf_counter()
    outcome = RunOutcome()
    interrupted: BaseException | None = None
    try:
        outcome = train_run(
            cfg,
            ctx,
            run_dir,
            compile_model=ws.execution.compile,
            log_every=ws.execution.log_every,
            progress=ws.execution.progress,
            log=sink.log,
        )
        record["status"] = "finished"
    except Diverged as err:
        record.update(status="diverged", diverged_step=err.step, diverged_epoch=err.epoch, error=str(err))
    except torch.OutOfMemoryError as err:
        record.update(status="failed", error=f"out of memory: {err}".splitlines()[0])
    except (KeyboardInterrupt, SystemExit) as err:
        record.update(status="interrupted", error=type(err).__name__)
        interrupted = err
    except Exception as err:  # a run error must not stop the matrix; the record keeps the traceback
        record.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()[-4000:])
    record.update(_summarise(outcome) if record["status"] == "finished" else {"epochs_done": len(outcome.history)})
    record.update(
        wall_time_s=time.perf_counter() - started,
        peak_memory_mb=peak_memory_mb(ctx.device),
        wandb_run_id=sink.run_id,
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    if ctx.is_main:
        store.append(record)
        sink.summary({k: v for k, v in record.items() if isinstance(v, (int, float, str)) and v is not None})
    sink.finish(exit_code=0 if record["status"] == "finished" else 1)
    if interrupted is not None:
        raise interrupted
    return record
