"""`make gpu-check`: does zoo's GPU path work on this machine, and how fast? One command, under 8 minutes on a GPU.

On a CUDA machine: generates an ImageNet-layout folder of JPEGs, trains a mini matrix through `python -m zoo.run`
(MobileViT-XXS, DeiT-Ti, CoAtNet-pico, MobileNetV2 x basic/advanced x fixed/multi-scale at 256 px, batch 128, bf16,
channels_last), then measures per model the harness on the real loader (img/s, share of time waiting for data), the
bare-loop limit on device-resident tensors, evaluation img/s, compiled vs eager for one model, DDP on every GPU
(`zoo.run --gpus-per-run N`, as users run it), and the `cuda`/`cuda-bf16` latency backends against the paper's
V100 column. Writes gpu-check.json and gpu-check.md under --out; exit code 0 when every check passed, else 1.
Without CUDA (or with --cpu) it runs the same path on CPU at a tiny size (CI's test of the command) and says so.

Run: python benchmarks/gpu_check.py [--out out/gpu-check] [--cpu] [--models m1 m2 ...]
"""
from __future__ import annotations

import time

STARTED = time.perf_counter()  # before torch's import: the wall time reported is the command's  # noqa: E402

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import torch

from zoo.config import REPO_ROOT
from zoo.results import ResultsStore

import gpu_check_measure as measure
from gpu_check_data import Profile, cpu_profile, gpu_profile, make_image_folder, profile_json, with_models, \
    write_matrices
from gpu_check_report import markdown

COMPILE_RESERVE_S = 100.0  # budget left that the compile check needs to start
LOADER_BOUND = 0.10  # a loop blocked on the next batch for more than this share of its time is loader-bound
NO_GPU = "no CUDA GPU found: ran the CPU path at tiny size"
FORCED_CPU = "--cpu given: ran the CPU path at tiny size"
# What a previous gpu-check left under --out that a new one must not reuse: the stores would make zoo.run skip
# every cell as already finished. The generated data (checked against its spec) is kept.
OWN_OUTPUTS = ("store", "store-out", "ddp-store", "ddp-store-out", "latency-artifacts", "gpu-check.yaml",
               "gpu-check-ddp.yaml", "zoo-run.log", "zoo-run-ddp.log", "gpu-check.json", "gpu-check.md")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/gpu-check", help="output folder (data, stores, JSON, markdown)")
    parser.add_argument("--cpu", action="store_true", help="run the tiny CPU path even where CUDA is available")
    parser.add_argument("--models", nargs="+", default=None, help="instead of the profile's models")
    return parser.parse_args(argv)


def clear_previous(out: Path) -> None:
    for name in OWN_OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def zoo_run(config: Path, log: Path, *extra: str) -> tuple[int, float, str]:
    """`python -m zoo.run CONFIG ...` as a user runs it, its output shown indented and kept in `log`.
    Returns (exit code, seconds, the command as shown)."""
    command = [sys.executable, "-m", "zoo.run", str(config), *extra]
    shown = " ".join(["python", "-m", "zoo.run", str(config), *extra])
    print(f"$ {shown}   (log: {log})", flush=True)
    started = time.perf_counter()
    with open(log, "w") as kept, subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                                  stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:  # a matrix of several minutes shows each cell as it settles
            kept.write(line)
            print(f"    {line}", end="", flush=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        print(f"zoo.run exited with {proc.returncode} (log: {log})", flush=True)
    return proc.returncode, seconds, shown


def run_rows(store_dir: Path) -> list[dict]:
    rows = []
    for record in sorted(ResultsStore(store_dir).latest().values(), key=lambda r: r.label):
        losses = [row.train_loss for row in record.history]
        rows.append({"label": record.label, "model": record.model, "recipe": record.recipe,
                     "sampler": record.sampler, "status": record.status, "error": record.error,
                     "world_size": record.world_size, "train_loss": losses,
                     "loss_fell": len(losses) >= 2 and losses[-1] < losses[0],
                     "train_img_per_s": record.train_img_per_s, "peak_memory_mb": record.peak_memory_mb,
                     "top1": record.top1, "wall_s": record.wall_time_s, "updates": record.updates})
    return rows


def train_matrix(profile: Profile, files: dict[str, Path], out: Path) -> dict:
    code, seconds, command = zoo_run(files["matrix"], out / "zoo-run.log")
    runs = run_rows(out / "store")
    board = out / "store" / "README.md"
    board_text = board.read_text() if board.is_file() else ""
    finished = [r for r in runs if r["status"] == "finished"]
    return {"config": str(files["matrix"]), "command": command, "exit_code": code, "wall_s": seconds,
            "train_s": sum(r["wall_s"] for r in runs), "expected": len(profile.models) * 4,
            "finished": len(finished), "loss_fell": sum(r["loss_fell"] for r in finished), "runs": runs,
            "board": str(board) if board_text else "not written",
            "board_rendered": bool(board_text) and all(m in board_text for m in profile.models)}


def measure_model(profile: Profile, model: str, runs: list[dict], store_dir: Path, ctx) -> dict:
    """The figures of one model: its runs' records, then the harness on the real loader, the bare-loop limit and
    evaluation, each on the basic/fixed run's own resolved config."""
    mine = [r for r in runs if r["model"] == model and r["status"] == "finished"]
    rates = [r["train_img_per_s"] for r in mine if r["train_img_per_s"]]
    peaks = [r["peak_memory_mb"] for r in mine if r["peak_memory_mb"]]
    row = {"cells": len(mine), "train_img_per_s": statistics.median(rates) if rates else None,
           "peak_memory_mb": max(peaks) if peaks else None}
    record = next((r for r in ResultsStore(store_dir).finished()
                   if r.model == model and r.recipe == "basic" and r.sampler == "fixed"), None)
    if record is None:
        return {**row, "error": "no finished basic/fixed run to measure"}
    cfg, classes = record.require_config(), record.num_classes or profile.classes
    try:
        bare = measure.bare_train(cfg, classes, ctx, profile.bare_steps)
        loop = measure.loader_loop(cfg, ctx, profile.loop_steps)
        evaluation = measure.eval_throughput(cfg, classes, ctx, profile.bare_steps)
    except Exception as error:  # one model's failure is a row of the report, not the end of the check
        return {**row, "error": f"{type(error).__name__}: {error}"[:300]}
    finally:
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
    return {**row, "bare_img_per_s": bare["img_per_s"], "bare_first_step_s": bare["first_step_s"],
            "loader_img_per_s": loop["img_per_s"], "data_wait_share": loop["wait_share"],
            "loader_bound": (loop["wait_share"] or 0) > LOADER_BOUND, "loader_first_batch_s": loop["first_batch_s"],
            "loader_steps": loop["steps"], "workers": loop["workers"], "eval_img_per_s": evaluation,
            "harness_over_limit": loop["img_per_s"] / bare["img_per_s"] if loop["img_per_s"] else None}


def compile_check(profile: Profile, models: dict[str, dict], store_dir: Path, ctx, left_s: float) -> dict:
    """Compiled vs eager bare loop for one model. Last, and only when the budget leaves COMPILE_RESERVE_S: the
    compilation alone takes about a minute, and everything else the check does matters more."""
    name = profile.compile_model
    if name is None or ctx.device.type != "cuda":
        return {"skipped": "on the CPU path (inductor's C++ build alone would take most of the 2 minutes)"}
    if left_s < COMPILE_RESERVE_S:
        return {"skipped": f"{left_s:.0f} s of the {profile.budget_s:.0f} s budget left, under the "
                           f"{COMPILE_RESERVE_S:.0f} s a compilation may take"}
    if name not in models or not models[name].get("bare_img_per_s"):
        return {"skipped": f"{name} was not measured eagerly"}
    record = next(r for r in ResultsStore(store_dir).finished()
                  if r.model == name and r.recipe == "basic" and r.sampler == "fixed")
    eager = models[name]["bare_img_per_s"]
    try:
        compiled = measure.bare_train(record.require_config(), record.num_classes, ctx, profile.bare_steps,
                                      compiled=True)
    except Exception as error:
        return {"model": name, "error": f"{type(error).__name__}: {error}"[:300]}
    return {"model": name, "eager_img_per_s": eager, "compiled_img_per_s": compiled["img_per_s"],
            "speedup": compiled["img_per_s"] / eager, "compile_s": compiled["first_step_s"]}


def ddp_check(files: dict[str, Path], out: Path, gpus: int, single: dict | None) -> dict:
    """One cell on every GPU through `zoo.run --gpus-per-run N` (torchrun, NCCL), each rank given as many images
    as the one-GPU cell, so the summed img/s divided by N times the one-GPU img/s is the scaling."""
    if gpus == 0:
        return {"skipped": "No CUDA GPU: DDP over NCCL not checked (the gloo CPU path has its own tests)."}
    if gpus == 1:
        return {"skipped": "Only 1 GPU here: DDP with one process per GPU needs 2 or more, so it was not checked; "
                           "run `make gpu-check` on a multi-GPU node for it."}
    code, seconds, command = zoo_run(files["ddp"], out / "zoo-run-ddp.log", "--gpus-per-run", str(gpus),
                                     "--no-measure", "--no-leaderboard")
    runs = run_rows(out / "ddp-store")
    run = runs[0] if runs else {"status": "no record", "world_size": None, "train_img_per_s": None}
    one = single["train_img_per_s"] if single else None
    total = run["train_img_per_s"]
    return {"command": command, "exit_code": code, "wall_s": seconds, "status": run["status"],
            "world_size": run["world_size"], "train_img_per_s": total, "single_img_per_s": one,
            "scaling": total / (gpus * one) if total and one else None,
            "ok": code == 0 and run["status"] == "finished" and run["world_size"] == gpus}


def latency(profile: Profile, out: Path, gpu: bool, trained: tuple[str, ...]) -> list[dict]:
    extra = tuple(m for m in profile.latency_extra if m not in trained) if gpu else ()
    measure.time_extra_latency(out / "store", extra, profile.latency_rounds)
    return measure.latency_rows(out / "store", [*trained, *extra])


def decide_checks(report: dict, gpu: bool) -> dict[str, bool]:
    m = report["matrix"]
    checks = {
        "zoo.run exit code 0": m["exit_code"] == 0,
        f"every run finished ({m['finished']}/{m['expected']})": m["finished"] == m["expected"],
        f"the training loss fell in every run ({m['loss_fell']}/{m['finished']})": m["loss_fell"] == m["finished"] > 0,
        "the leaderboard rendered with every model": m["board_rendered"],
        "every model measured (loader loop, bare loop, eval)": not any(r.get("error")
                                                                        for r in report["models"].values()),
    }
    if report.get("errors"):
        checks[f"no step raised ({', '.join(report['errors'])} did)"] = False
    statuses = {(r["model"], r["backend"]): r["status"] for r in report["latency"]}
    # A GPU without bf16 (V100, T4) records cuda-bf16 as skipped, and zoo trains it in fp16 with a GradScaler.
    backends = ("cuda", "cuda-bf16") if report["env"].get("bf16", True) or not gpu else ("cuda",)
    wanted = {(model, b) for model in report["profile"]["models"] for b in backends}
    if gpu:
        checks[f"{' and '.join(backends)} latency timed for every model"] = all(statuses.get(k) == "ok"
                                                                               for k in wanted)
        if "error" in report["compile"] or "compiled_img_per_s" in report["compile"]:
            checks["torch.compile training step ran"] = "compiled_img_per_s" in report["compile"]
        if "ok" in report["ddp"]:
            checks[f"DDP on {report['env']['gpu_count']} GPUs finished"] = report["ddp"]["ok"]
    else:
        checks["cuda latency backends recorded as skipped (no device)"] = all(statuses.get(k) == "skipped"
                                                                              for k in wanted)
    return checks


class Phases:
    """Each step of the check timed, and an exception in one recorded (the report is still written)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.errors: dict[str, str] = {}

    def run(self, name: str, step, fallback):
        mark = time.perf_counter()
        try:
            result = step()
        except Exception as error:  # a step's failure is a finding of the check, not the end of the report
            self.errors[name] = f"{type(error).__name__}: {error}"[:400]
            print(f"{name} failed: {self.errors[name]}", flush=True)
            result = fallback
        self.seconds[name] = time.perf_counter() - mark
        print(f"{name}: {self.seconds[name]:.0f} s", flush=True)
        return result


def run_check(profile: Profile, out: Path, gpu: bool, cpu_reason: str | None) -> dict:
    """Data, the matrix, per-model figures, DDP, latency, then (if the budget leaves time) compile on vs off."""
    phases = Phases()
    # The JPEGs first: their writer processes are forked, and this process has not yet opened a CUDA context.
    made = phases.run("data", lambda: make_image_folder(out / "data", profile), None)
    env = {**measure.environment(), "cores": os.cpu_count()}
    print(f"  {out / 'data'}: {'generated' if made else 'reused'}, {profile.train_images} train + "
          f"{profile.val_images} val JPEGs, {profile.classes} classes", flush=True)
    gpus = env["gpu_count"] if gpu else 0
    files = write_matrices(profile, out / "data", out, gpus=gpus)
    matrix = train_matrix(profile, files, out)
    phases.seconds["zoo.run"] = matrix["wall_s"]
    ctx, models = measure.context(), {}
    for model in profile.models:
        models[model] = phases.run(f"measure {model}", lambda m=model: measure_model(profile, m, matrix["runs"],
                                                                                    out / "store", ctx),
                                   {"error": "the measurement raised (see errors)"})
    single = next((r for r in matrix["runs"] if r["model"] == profile.models[0] and r["recipe"] == "basic"
                   and r["sampler"] == "fixed"), None)
    ddp = phases.run("ddp", lambda: ddp_check(files, out, gpus, single), {"skipped": "the DDP step failed"})
    rows = phases.run("latency", lambda: latency(profile, out, gpu, profile.models),
                      measure.latency_rows(out / "store", list(profile.models)))
    left = profile.budget_s - (time.perf_counter() - STARTED)
    compiled = phases.run("compile", lambda: compile_check(profile, models, out / "store", ctx, left),
                          {"model": profile.compile_model, "error": "the compile check raised (see errors)"})
    return {"mode": "gpu" if gpu else "cpu", "cpu_reason": cpu_reason, "env": env, "profile": profile_json(profile),
            "matrix": matrix, "models": models, "compile": compiled, "ddp": ddp, "latency": rows,
            "phases": phases.seconds, "errors": phases.errors}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    gpu = torch.cuda.is_available() and not args.cpu
    cpu_reason = None if gpu else (FORCED_CPU if args.cpu else NO_GPU)
    if cpu_reason:
        print(cpu_reason.replace("ran the", "running the"), flush=True)
    profile = with_models(gpu_profile() if gpu else cpu_profile(), args.models)
    if gpu:  # the DDP check gives each rank as many images as the one-GPU cell trains on
        profile = replace(profile, train_images=max(profile.train_images,
                                                    profile.matrix_train_images * torch.cuda.device_count()))
    if profile.threads and not gpu:
        torch.set_num_threads(profile.threads)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    clear_previous(out)
    report = run_check(profile, out, gpu, cpu_reason)
    report["wall_s"] = time.perf_counter() - STARTED
    report["within_budget"] = report["wall_s"] <= profile.budget_s
    report["checks"] = decide_checks(report, gpu)
    report["ok"] = all(report["checks"].values())
    (out / "gpu-check.json").write_text(json.dumps(report, indent=1, default=str))
    text = markdown(report)
    (out / "gpu-check.md").write_text(text)
    print(text)
    print(f"written: {out / 'gpu-check.json'}, {out / 'gpu-check.md'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
