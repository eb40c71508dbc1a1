"""Fair under DDP (gloo ranks on CPU, started as torchrun describes them: tests/_ranks.py): per-rank randomness with
a shared resolution schedule, every validation image counted once, and a resume decided by rank 0 alone — with
BatchNorm, augmentation, Mixup/CutMix, drop-path and EMA on (the advanced recipe on MobileViT-XXS)."""
import json
from pathlib import Path

import pytest
import torch

from _ranks import run_ranks

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def ranks_all(tmp_path: Path, nproc: int, *specs: dict) -> dict[str, list[dict]]:
    """One group of ranks for every spec (run in order in one process group); per tag, each rank's record."""
    specs = tuple({"epochs": 1, "stop_after": None, "repeated_aug": 1, "max_val_samples": 64, "sampler": "multiscale",
                   "run_dir": str(tmp_path / spec["tag"]), **spec} for spec in specs)
    run_ranks("_ddp_fairness_worker:main", nproc, str(tmp_path), *(json.dumps(spec) for spec in specs),
              error_dir=tmp_path / f"errors-{specs[0]['tag']}", timeout=400)
    return {spec["tag"]: [json.loads((tmp_path / f"{spec['tag']}_rank{r}.json").read_text()) for r in range(nproc)]
            for spec in specs}


def one_group(tmp_path: Path, nproc: int, **spec) -> list[dict]:
    return ranks_all(tmp_path, nproc, spec)[spec["tag"]]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> tuple[Path, dict[str, list[dict]]]:
    """The 2-rank runs that need no fresh process, in one group of ranks: the randomness run, the uninterrupted
    2-epoch run, and the first epoch of the split one."""
    tmp = tmp_path_factory.mktemp("fairness_ddp")
    return tmp, ranks_all(tmp, 2, {"tag": "rand", "repeated_aug": 2},
                             {"tag": "straight", "epochs": 2, "sampler": "fixed"},
                             {"tag": "first", "epochs": 2, "stop_after": 1, "run_dir": str(tmp / "split-{rank}"),
                              "sampler": "fixed"})


def test_ranks_share_resolutions_but_not_randomness_and_repeated_copies_differ(two_ranks):
    a, b = two_ranks[1]["rand"]
    assert a["resolutions"] == b["resolutions"] and len(set(a["resolutions"])) > 1
    assert len(a["lams"]) == len(a["checksums"]) == a["updates"]  # every training batch was mixed
    assert sum(x != y for x, y in zip(a["lams"], b["lams"])) >= len(a["lams"]) - 1  # own mixing stream per rank
    # With repeats = 2 = world size, both ranks hold copies of the same images at every step: the copies must be
    # augmented independently (identical seeds made them identical tensors).
    assert all(x != pytest.approx(y, rel=1e-9) for x, y in zip(a["checksums"], b["checksums"]))


def test_three_ranks_count_each_of_an_odd_number_of_val_images_once(tmp_path):
    ranks = one_group(tmp_path, 3, tag="val", max_val_samples=100)
    rows = [r["history"][-1] for r in ranks]
    assert [row["val_images"] for row in rows] == [100, 100, 100]
    assert rows[0]["val_top1"] == rows[1]["val_top1"] == rows[2]["val_top1"]
    # The same EMA weights evaluated by one process over the whole set give the same figures.
    from zoo.config import DataConfig, RunConfig, SamplerConfig, load_recipe
    from zoo.training.distributed import DistContext
    from zoo.training.evaluate import evaluate
    from zoo.training.components import build_model
    from zoo.training.loaders import build_loaders

    cfg = RunConfig(model="mobilevit_xxs", recipe=load_recipe("advanced"),
                    sampler=SamplerConfig(name="multiscale", base_resolution=32, resolutions=(24, 32, 40)),
                    data=DataConfig(kind="digits", options={"source_size": 32}, max_train_samples=96,
                                    max_val_samples=100, eval_crop_pct=1.0),
                    epochs=1, batch_size=8).resolved("cpu", 1, False)
    loaders = build_loaders(cfg, DistContext())
    model = build_model(cfg, loaders.num_classes)
    state = torch.load(tmp_path / "val" / "checkpoint.pt", weights_only=True)["ema"]
    model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    single = evaluate(model, loaders, DistContext(), cfg)
    assert single["images"] == 100
    assert rows[0]["val_top1"] == pytest.approx(single["top1"], abs=1e-6)
    assert rows[0]["val_loss"] == pytest.approx(single["loss"], rel=1e-5)


def test_resume_is_decided_by_rank_0_and_reproduces_an_uninterrupted_run(two_ranks):
    tmp_path, runs = two_ranks
    straight = runs["straight"]
    # Rank 1 writes to (and would read from) an empty folder of its own, as on a second node without shared disk;
    # its first epoch ran in the module's group of ranks, the resume is a fresh one (new processes).
    split_dirs = str(tmp_path / "split-{rank}")
    assert (tmp_path / "split-0" / "checkpoint.pt").is_file() and not (tmp_path / "split-1").exists()
    resumed = one_group(tmp_path, 2, tag="resumed", epochs=2, run_dir=split_dirs, sampler="fixed")
    assert [r["resumed_from_epoch"] for r in resumed] == [1, 1]
    for key in ("train_loss", "val_top1", "val_loss", "ema_decay"):
        assert resumed[0]["history"][-1][key] == pytest.approx(straight[0]["history"][-1][key], abs=1e-6), key
    assert resumed[0]["first_param_sum"] == pytest.approx(straight[0]["first_param_sum"], abs=1e-6)
