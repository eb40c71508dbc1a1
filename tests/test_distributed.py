"""DDP on CPU (2 gloo ranks, started as torchrun describes them: tests/_ranks.py) matches one process over the same
global batch, and a NaN on one rank is recorded with that rank's step and loss."""
import json
from pathlib import Path

import pytest

from _ranks import run_ranks


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """One process at batch 16 (fixed), then 2 ranks at batch 8 for both samplers: OUT/SAMPLER/ws{1,2}_rank{r}.json."""
    out = tmp_path_factory.mktemp("ddp")
    run_ranks("_ddp_worker:main", 1, str(out), 16, "fixed", error_dir=out / "errors-1")
    run_ranks("_ddp_worker:main", 2, str(out), 8, "fixed", "multiscale", error_dir=out / "errors-2")
    return out


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_gloo_ranks_match_one_process_over_the_same_global_batch(runs):
    single = json.loads((runs / "fixed" / "ws1_rank0.json").read_text())
    ranks = [json.loads((runs / "fixed" / f"ws2_rank{r}.json").read_text()) for r in (0, 1)]

    # Same number of updates; each step's global batch is the union of the ranks' disjoint shares.
    assert single["updates"] == ranks[0]["updates"] == ranks[1]["updates"] == 8
    for step, batch in enumerate(single["batches"]):
        a, b = set(ranks[0]["batches"][step]), set(ranks[1]["batches"][step])
        assert not a & b and a | b == set(batch)
    # Loss trajectory: the mean of the ranks' running losses equals the single process's. The tolerance covers
    # float32 summation order only (gradient all-reduce vs one big batch): 1e-4 relative after 8 AdamW steps.
    ddp_losses = [(x + y) / 2 for x, y in zip(ranks[0]["losses"], ranks[1]["losses"])]
    assert len(ddp_losses) == len(single["losses"]) == 8
    for s, d in zip(single["losses"], ddp_losses):
        assert d == pytest.approx(s, rel=1e-4)
    assert ranks[0]["top1"] == ranks[1]["top1"] == pytest.approx(single["top1"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_ranks_draw_identical_resolutions_and_disjoint_samples(runs):
    ranks = [json.loads((runs / "multiscale" / f"ws2_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["resolutions"] == ranks[1]["resolutions"] and len(set(ranks[0]["resolutions"])) == 2
    seen = [i for r in ranks for batch in r["batches"] for i in batch]
    assert len(seen) == len(set(seen)) == 128


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_nan_on_rank_1_alone_is_recorded_with_rank_1s_step_and_loss(tmp_path):
    # Rank 0 writes the record, and its own losses are finite until the NaN gradients reach it (one step later):
    # the record must carry rank 1's step and its non-finite loss, not rank 0's view of the window.
    from zoo.results import ResultsStore

    run_ranks("_ddp_divergence_worker:main", 2, str(tmp_path), 3, error_dir=tmp_path / "errors")
    [record] = ResultsStore(tmp_path / "store").records()
    assert (record.status, record.diverged_step, record.diverged_epoch, record.epochs_done) == ("diverged", 3, 1, 0)
    assert record.error == "loss became nan at optimiser step 3 (epoch 1, rank 1)"
    assert record.world_size == 2
