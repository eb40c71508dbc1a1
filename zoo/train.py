"""`python -m zoo.train --model=mobilevit_xs --recipe=basic --sampler=multiscale --lr=0.002 ...`: one run.

Every RunConfig field is settable as `--key=value`, nested ones with dotted keys (`--recipe.mixup=0.5`,
`--sampler.mode=v0.1`, `--model_kwargs.patch_size=[4,4,4]`). Values are parsed by the field's type and accept
Python `str()` spellings, which is what a W&B sweep agent passes (`--amp=False`). Defaults come from the matrix file
given by `--config` (default: ./runs.yaml when present), so a single run lands in the same results store and the
leaderboard sees it. Under a W&B sweep agent, `wandb.config` parameters are merged too.

`--init` starts the run from pretrained weights (default: the matrix file's `init:`, else scratch):
`--init=timm` (timm's weights for the model), `--init=file:PATH` (a zoo checkpoint or a timm-layout state dict),
`--init=matrix:runs.yaml` (that matrix's finished classification cell of the same model/recipe/sampler/seed; one
not trained yet is an error naming the command that trains it); fine-tuning knobs `--init.backbone_lr_scale=0.1`,
`--init.freeze_backbone_epochs=1`. What loaded is printed and recorded (`init_*` fields of the record).
"""
from __future__ import annotations

import sys
from pathlib import Path

from zoo.config.cli import ALIASES, resolve, split_argv
from zoo.config.typed import ConfigError


def main(argv: list[str] | None = None) -> int:
    from zoo.tracking.wandb_sink import sweep_params  # wandb only once called: `--help` and bad input stay fast

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        pairs = split_argv(argv)
        # Under a sweep agent, wandb.config holds the sweep's point; the command line still wins.
        pairs = {**{ALIASES.get(k, k): str(v) for k, v in sweep_params().items()}, **pairs}
        cfg, matrix = resolve(pairs)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # Heavy imports only once the command line is known to be good.
    from zoo.training.distributed import init_distributed
    from zoo.runner.execute import execute_run
    from zoo.results import ResultsStore
    from zoo.runner.plan import plan_for
    from zoo.runner.workspace import workspace_for

    ctx = init_distributed(matrix.execution.device)
    ws = workspace_for(matrix, Path.cwd())
    try:  # the config as it runs here, and its id (an init source resolved): claimed, trained and recorded as one
        run = plan_for(cfg, ctx)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    claim = _claim(run, ws, ctx)
    if claim is None:
        return 0
    try:
        with claim:
            record = execute_run(run, ws, ctx, ResultsStore(ws.store_dir))
    except KeyboardInterrupt:
        return 130
    if ctx.is_main:
        if record.init_report:
            print(f"init: {run.config.init.describe()}: {record.init_report['loaded']}/"
                  f"{record.init_report['total']} tensors loaded ({record.init_report['weights']})")
        print(f"{record.one_line()} run_id={record.run_id}")
    return 0 if record.status == "finished" else 1


def _claim(run, ws, ctx):
    """Claim the run in the results store (rank 0), as every matrix worker does: a run that is already finished,
    or that a live worker (a `zoo.run`, another agent) is training, is not trained again — say so, exit 0.
    Returns the claim (a no-op context on other ranks), or None to skip."""
    from contextlib import nullcontext

    from zoo.runner.claims import ClaimStore
    from zoo.training.distributed import broadcast_flag

    claim = None
    if ctx.is_main:
        claims = ClaimStore(ws.store_dir)
        claim = claims.try_claim(run.run_id, run.label)
        if claim is None:
            print(f"[skipped] {run.label} run_id={run.run_id}: {claims.explain(run.run_id)}", flush=True)
    if broadcast_flag(ctx, ctx.is_main and claim is None):
        return None
    return claim if claim is not None else nullcontext()


if __name__ == "__main__":
    sys.exit(main())
