"""Run by tests/test_fairness_ddp.py on gloo ranks (tests/_ranks.py; by hand: torchrun): the advanced recipe with
BatchNorm, augmentation, Mixup/CutMix, drop-path, EMA and repeated augmentation on, recording per rank what each
step saw.

argv: OUT_DIR SPEC_JSON... (one run per spec, in order, in one process group). SPEC keys: tag, epochs, stop_after (or null), run_dir (may contain {rank}), repeated_aug,
max_val_samples, sampler.
"""
import json
import sys
from pathlib import Path

import torch
from timm.data import Mixup

from zoo.config import DataConfig, RunConfig, SamplerConfig, load_recipe
from zoo.training.distributed import init_distributed
from zoo.runner.plan import plan_for
from zoo.training.engine import train_run


def recording_mixup(lams: list[float]) -> None:
    original = Mixup._params_per_batch

    def params(self):
        lam, use_cutmix = original(self)
        lams.append(float(lam))
        return lam, use_cutmix

    Mixup._params_per_batch = params


def recording_forward(model_cls, checksums: list[float], resolutions: list[int]) -> None:
    original = model_cls.forward

    def forward(self, x):
        if self.training:
            checksums.append(float(x.double().sum()))
            resolutions.append(int(x.shape[-1]))
        return original(self, x)

    model_cls.forward = forward


def main(out_dir: str, *spec_jsons: str) -> None:
    ctx = init_distributed("cpu")
    torch.set_num_threads(1)
    lams, checksums, resolutions = [], [], []
    recording_mixup(lams)
    from zoo.models.mobilevit import MobileViT

    recording_forward(MobileViT, checksums, resolutions)
    for spec_json in spec_jsons:
        for seen in (lams, checksums, resolutions):
            seen.clear()
        run(out_dir, json.loads(spec_json), ctx, lams, checksums, resolutions)


def run(out_dir: str, spec: dict, ctx, lams: list, checksums: list, resolutions: list) -> None:
    recipe = load_recipe("advanced", {"repeated_aug": spec["repeated_aug"], "ema_decay": 0.99})
    cfg = RunConfig(
        model="mobilevit_xxs", recipe=recipe,
        sampler=SamplerConfig(name=spec["sampler"], base_resolution=32, resolutions=(24, 32, 40)),
        data=DataConfig(kind="digits", options={"source_size": 32}, max_train_samples=96,
                        max_val_samples=spec["max_val_samples"], eval_crop_pct=1.0),
        epochs=spec["epochs"], batch_size=8, lr=0.002, lr_scaling="none", warmup_epochs=0, seed=5,
    )
    run_dir = Path(spec["run_dir"].format(rank=ctx.rank))
    outcome = train_run(plan_for(cfg, ctx), ctx, run_dir, progress=False, stop_after_epochs=spec["stop_after"])
    first_param = next(iter(torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"].values())) \
        if ctx.is_main else None
    path = Path(out_dir) / f"{spec['tag']}_rank{ctx.rank}.json"
    path.write_text(json.dumps({
        "lams": lams, "checksums": checksums, "resolutions": resolutions,
        "history": [row.to_json() for row in outcome.history], "updates": outcome.updates,
        "resumed_from_epoch": outcome.resumed_from_epoch,
        "first_param_sum": float(first_param.double().sum()) if first_param is not None else None,
    }))


if __name__ == "__main__":
    main(sys.argv[1], *sys.argv[2:])
