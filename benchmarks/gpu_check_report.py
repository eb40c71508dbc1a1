"""`make gpu-check`'s report: one markdown page (printed and written) from the JSON report, nothing recomputed."""
from __future__ import annotations

from gpu_check_data import PAPER_V100_SOURCE


def _num(value, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}{suffix}"


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def precision(report: dict) -> str:
    if not report["profile"]["amp"]:
        return "fp32"
    return "bf16 autocast" if report["env"].get("bf16") else "fp16 autocast with a GradScaler (no bf16 on this GPU)"


def header(report: dict) -> list[str]:
    env, p = report["env"], report["profile"]
    lines = ["# zoo gpu-check", ""]
    if report["mode"] == "cpu":
        lines += [f"**{report['cpu_reason']}**", ""]
        lines.append(f"Machine: {env['cpu']}, {env.get('cores', '?')} cores · torch {env['torch']} · "
                     f"timm {env['timm']} · Python {env['python']}")
    else:
        lines.append(f"GPU: {env['gpu']} (1 of {env['gpu_count']}; {env['gpu_memory_gib']} GiB; compute capability "
                     f"{env['capability']}; bf16 {'yes' if env['bf16'] else 'no'}) · driver {env['driver'] or '?'} · "
                     f"CUDA {env['cuda']} · cuDNN {env['cudnn']} · torch {env['torch']} · timm {env['timm']}")
    m = report["matrix"]
    lines += ["", f"Mini matrix through `python -m zoo.run` ({m['config']}): {len(p['models'])} models × "
              f"basic/advanced "
              f"× fixed/multi-scale at {p['base_resolution']} px (multi-scale {min(p['resolutions'])}–"
              f"{max(p['resolutions'])}), batch {p['batch_size']}, {precision(report)}, "
              f"channels_last, {p['epochs']} epochs × {p['matrix_train_images']} generated JPEGs "
              f"({p['classes']} classes), {p['workers']} loader worker(s): {m['finished']}/{m['expected']} runs "
              f"finished, loss fell in {m['loss_fell']}/{m['finished']}, board {m['board']}, "
              f"exit code {m['exit_code']}, {m['wall_s']:.0f} s (training {m['train_s']:.0f} s, measurement and "
              f"board {m['wall_s'] - m['train_s']:.0f} s)."]
    return lines


def model_table(report: dict) -> list[str]:
    gpu = report["mode"] == "gpu"
    memory = "peak GPU memory MB" if gpu else "peak RSS MB (process)"
    lines = ["", "## Throughput per model" + (" (one GPU)" if gpu else " (CPU)"), "",
             f"| model | train img/s (zoo.run, median of its cells) | harness img/s, real loader | data wait | "
             f"bare loop img/s (limit) | harness / limit | {memory} | eval img/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in report["models"].items():
        if row.get("error"):
            lines.append(f"| {name} | {_num(row.get('train_img_per_s'))} | failed: {row['error']} | | | | | |")
            continue
        lines.append(f"| {name} | {_num(row['train_img_per_s'])} | {_num(row['loader_img_per_s'])} | "
                     f"{_pct(row['data_wait_share'])}{' (loader-bound)' if row['loader_bound'] else ''} | "
                     f"{_num(row['bare_img_per_s'])} | {_num(row['harness_over_limit'], 2, '×')} | "
                     f"{_num(row['peak_memory_mb'])} | {_num(row['eval_img_per_s'])} |")
    lines += ["", f"Train img/s: the runs' records ({report['profile']['epochs']} short epochs: loader start-up and "
              "cuDNN's search included). "
              "Harness on the real loader: `forward_backward`/`optimizer_step` of zoo's loop over the basic/fixed "
              "run's DataLoader on every generated image, after the first batch; data wait: the share of that "
              "loop's time blocked on the next batch (loader-bound above 10 %). Bare loop: forward, loss, backward "
              "and the run's AdamW on one device-resident batch. Eval: eval mode, autocast, channels_last, "
              "device-resident batches of 2 × batch."]
    return lines


def compile_and_ddp(report: dict) -> list[str]:
    c, d = report["compile"], report["ddp"]
    lines = ["", "## torch.compile", ""]
    if c.get("skipped"):
        lines.append(f"Not run: {c['skipped']}.")
    elif c.get("error"):
        lines.append(f"{c['model']}: compiled training step failed: {c['error']}")
    else:
        lines.append(f"{c['model']}, bare loop: eager {_num(c['eager_img_per_s'])} img/s, compiled "
                     f"{_num(c['compiled_img_per_s'])} img/s ({_num(c['speedup'], 2, '×')}); the first compiled "
                     f"step took {_num(c['compile_s'], 1)} s.")
    lines += ["", "## DDP", ""]
    if d.get("skipped"):
        lines.append(d["skipped"])
    else:
        lines.append(f"`{d['command']}`: {d['status']} on {d['world_size']} processes (NCCL), exit code "
                     f"{d['exit_code']}, {_num(d['train_img_per_s'])} img/s in all vs {_num(d['single_img_per_s'])} "
                     f"on one GPU → scaling {_num(d['scaling'], 2, '×')} of linear.")
    return lines


def latency_table(report: dict) -> list[str]:
    lines = ["", "## Latency: the `cuda` and `cuda-bf16` backends, ms", ""]
    rows: dict[str, dict] = {}
    for row in report["latency"]:
        rows.setdefault(row["model"], {"resolution": row["resolution"], "paper": row["paper_v100_ms"]})[
            row["backend"]] = row
    if not rows:
        return lines + ["No latency records."]
    skipped = [r for r in report["latency"] if r["status"] == "skipped"]
    if skipped and len(skipped) == len(report["latency"]):
        return lines + [f"Every record skipped: {skipped[0]['reason']} ({len(skipped)} records; the path ran)."]
    lines += ["| model | px | cuda b1 | cuda b32 | cuda b32 per image | cuda-bf16 b1 | cuda-bf16 b32 | "
              "cuda-bf16 b32 per image | paper V100 b32 per image | V100 / this GPU (fp32, per image) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for model, row in rows.items():
        cells = []
        for backend in ("cuda", "cuda-bf16"):
            r = row.get(backend, {})
            cells += [_num(r.get("batch1_ms"), 2), _num(r.get("batch32_ms"), 2),
                      _num(r.get("batch32_per_image_ms"), 3)]
        ours = row.get("cuda", {}).get("batch32_per_image_ms")
        ratio = row["paper"] / ours if row["paper"] and ours else None
        lines.append(f"| {model} | {row['resolution']} | {' | '.join(cells)} | {_num(row['paper'], 2)} | "
                     f"{_num(ratio, 1, '×')} |")
    lines += ["", f"Paper: {PAPER_V100_SOURCE}. Each model at its deployment resolution (256 MobileViT, 224 the "
              "others), 1000 classes, the fused inference model."]
    return lines


def runs_table(report: dict) -> list[str]:
    lines = ["", "## Runs", "", "| run | status | train loss per epoch | train img/s | peak MB | top-1 |",
             "|---|---|---|---:|---:|---:|"]
    for r in report["matrix"]["runs"]:
        losses = " → ".join(f"{v:.3f}" for v in r["train_loss"]) or "–"
        top1 = 100 * r["top1"] if r["top1"] is not None else None
        lines.append(f"| {r['label']} | {r['status']}{': ' + r['error'] if r.get('error') else ''} | {losses} | "
                     f"{_num(r['train_img_per_s'])} | {_num(r['peak_memory_mb'])} | {_num(top1, 1, ' %')} |")
    return lines


def checks(report: dict) -> list[str]:
    lines = ["", "## Checks", ""]
    lines += [f"- {'ok  ' if ok else 'FAIL'} {name}" for name, ok in report["checks"].items()]
    lines += [f"- error in {name}: {error}" for name, error in report.get("errors", {}).items()]
    lines += ["", f"Wall time: {report['wall_s']:.0f} s (budget {report['profile']['budget_s']:.0f} s: "
              f"{'within' if report['within_budget'] else 'OVER'}); phases: "
              + ", ".join(f"{k} {v:.0f} s" for k, v in report["phases"].items()) + "."]
    if report["mode"] == "cpu":
        lines += ["", report["cpu_reason"]]
    return lines


def markdown(report: dict) -> str:
    parts = header(report) + model_table(report) + compile_and_ddp(report) + latency_table(report)
    return "\n".join(parts + runs_table(report) + checks(report)) + "\n"
