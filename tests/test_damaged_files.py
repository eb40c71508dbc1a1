"""Damaged files zoo can rebuild are rebuilt with a warning naming them, never a failed run: checkpoints (truncated,
zero-length, random bytes, flipped tensor bytes, a crash mid-write or between the renames), W&B offline files and
store lines; a full disk while checkpointing fails the run with its reason and leaves the previous checkpoint."""
import errno
import json
import os
import random
import re
import time
import warnings
from pathlib import Path

import pytest
import torch

from zoo.config import ExecConfig, SamplerConfig, WandbConfig
from zoo.results import ResultsStore
from zoo.runner.execute import Workspace, execute_run
from zoo.runner.plan import plan_for
from zoo.training import checkpoint as ckpt
from zoo.training.distributed import DistContext
from zoo.training.engine import train_run

from test_engine import tiny_cfg

pytestmark = pytest.mark.xdist_group("test_damaged_files")  # its module fixture is built on one worker only

# 2 epochs of 6 updates (96 images, batches of 16)
CFG = tiny_cfg(model="mobilevit_xxs", sampler=SamplerConfig(name="fixed", base_resolution=32))


def _workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "out", tmp_path / "store", WandbConfig(mode="disabled"),
                     ExecConfig(progress=False, log_every=2), "test")


@pytest.fixture(scope="module")
def epoch_one(tmp_path_factory):
    """The checkpoint a 2-epoch run writes after epoch 1, and the same run's final top-1 uninterrupted."""
    root = tmp_path_factory.mktemp("runs")
    run = plan_for(CFG, DistContext())
    straight = train_run(run, DistContext(), root / "straight", progress=False)
    train_run(run, DistContext(), root / "half", progress=False, stop_after_epochs=1)
    return root / "half" / "checkpoint.pt", straight


def _flip_middle(data: bytes) -> bytes:
    """64 bytes inverted mid-file: inside the tensors, which torch.load reads without complaint."""
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) + data[middle + 64:]


DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],  # also what a crash mid-write of a non-atomic copy leaves
    "zero-length": lambda data: b"",
    "random bytes": lambda data: random.Random(0).randbytes(len(data)),
    "flipped tensor bytes": _flip_middle,
}


def _rerun(tmp_path: Path, epoch_one_ckpt: Path, files: dict[str, bytes]):
    """Put `files` (name -> bytes) in the run's folder and run it again through execute_run."""
    run, ws = plan_for(CFG, DistContext()), _workspace(tmp_path)
    run_dir = ws.run_dir(run)
    run_dir.mkdir(parents=True)
    for name, data in files.items():
        (run_dir / name).write_bytes(data)
    record = execute_run(run, ws, DistContext(), ResultsStore(ws.store_dir))
    return record, run_dir


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_only_checkpoint_starts_the_run_over(tmp_path, epoch_one, damage):
    good, straight = epoch_one
    damaged = DAMAGE[damage](good.read_bytes())
    with pytest.warns(RuntimeWarning, match=r"checkpoint .*checkpoint\.pt is damaged .*starting the run over") as seen:
        record, run_dir = _rerun(tmp_path, good, {"checkpoint.pt": damaged})
    assert any(f"checkpoint {run_dir / 'checkpoint.pt'} is damaged" in str(w.message) for w in seen)
    assert record.status == "finished", record.traceback
    assert record.resumed_from_epoch == 0 and record.updates == straight.updates == 12
    assert record.top1 == pytest.approx(straight.history[-1].val_top1, abs=1e-6)  # as if never interrupted
    assert (run_dir / "checkpoint.pt.damaged").read_bytes() == damaged  # kept aside, never rotated into .prev
    assert ckpt.read_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 2


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, epoch_one):
    good, straight = epoch_one
    fallback = r"is damaged .*resuming from the previous checkpoint .*checkpoint\.prev\.pt"
    with pytest.warns(RuntimeWarning, match=fallback):
        record, run_dir = _rerun(tmp_path, good, {"checkpoint.pt": good.read_bytes()[:1000],
                                                  "checkpoint.prev.pt": good.read_bytes()})
    assert record.status == "finished" and record.resumed_from_epoch == 1
    assert record.top1 == pytest.approx(straight.history[-1].val_top1, abs=1e-6)
    assert not (run_dir / "checkpoint.prev.pt").exists()  # a finished run keeps its final checkpoint only


@pytest.mark.slow
def test_both_checkpoints_damaged_start_over_with_a_warning_for_each(tmp_path, epoch_one):
    good, _ = epoch_one
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        record, run_dir = _rerun(tmp_path, good, {"checkpoint.pt": b"", "checkpoint.prev.pt": b"\x00" * 100})
    said = [str(w.message) for w in seen if "is damaged" in str(w.message)]
    assert len(said) == 2 and str(run_dir / "checkpoint.pt") in said[0] and "checkpoint.prev.pt" in said[1]
    assert said[1].endswith("starting the run over")
    assert record.status == "finished" and record.resumed_from_epoch == 0


@pytest.mark.slow
def test_a_crash_mid_write_or_between_the_renames_resumes_without_a_warning(tmp_path, epoch_one):
    good, _ = epoch_one
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is damaged: a half-written .tmp is not a checkpoint
        # killed while writing epoch 2: the .tmp is torn, the epoch-1 checkpoint whole
        record, run_dir = _rerun(tmp_path / "a", good, {"checkpoint.pt": good.read_bytes(),
                                                        "checkpoint.pt.tmp": good.read_bytes()[:500]})
        assert record.status == "finished" and record.resumed_from_epoch == 1
        # killed between "checkpoint.pt -> checkpoint.prev.pt" and ".tmp -> checkpoint.pt": only the previous exists
        record, _ = _rerun(tmp_path / "b", good, {"checkpoint.prev.pt": good.read_bytes()})
        assert record.status == "finished" and record.resumed_from_epoch == 1
    assert not (run_dir / "checkpoint.pt.tmp").exists()


@pytest.mark.slow
def test_a_full_disk_fails_the_run_with_its_reason_and_keeps_the_previous_checkpoint(tmp_path, epoch_one,
                                                                                     monkeypatch):
    good, _ = epoch_one
    real_save = torch.save

    def full_disk(state, f):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    record, run_dir = _rerun(tmp_path, good, {"checkpoint.pt": good.read_bytes()})
    path = run_dir / "checkpoint.pt"
    assert record.status == "failed" and record.error == f"no space left on device while writing {path}"
    stored = ResultsStore(tmp_path / "store").latest()[record.run_id]
    assert (stored.status, stored.error) == ("failed", record.error)
    assert path.read_bytes() == good.read_bytes()  # byte-identical
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint.pt"]  # the partial .tmp freed its space
    # space again: the failed cell is retried (not terminal) and resumes from the checkpoint the full disk left
    monkeypatch.setattr(torch, "save", real_save)
    again = execute_run(plan_for(CFG, DistContext()), _workspace(tmp_path), DistContext(),
                        ResultsStore(tmp_path / "store"))
    assert again.status == "finished" and again.resumed_from_epoch == 1


# ----------------------------------------------------------------------------------- the checkpoint module alone
def _state(epoch: int) -> dict:
    return {"epoch": epoch, "w": torch.full((64, 64), float(epoch))}


def test_save_keeps_the_previous_until_the_new_one_is_verified(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    ckpt.save_checkpoint(path, _state(1))
    ckpt.save_checkpoint(path, _state(2))
    assert ckpt.read_checkpoint(path)["epoch"] == 2
    assert ckpt.read_checkpoint(tmp_path / "checkpoint.prev.pt")["epoch"] == 1
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    # a write that "succeeds" but does not read back (a flaky disk) is refused: nothing is rotated
    monkeypatch.setattr(torch, "save", lambda state, f: f.write(b"PK\x03\x04 not really"))
    with pytest.raises(ckpt.CheckpointWriteError, match=r"checkpoint .*checkpoint\.pt did not read back"):
        ckpt.save_checkpoint(path, _state(3))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_full_disk_as_the_kernel_reports_it(tmp_path):
    """/dev/full answers every write with ENOSPC: the .tmp is made a link to it, the previous checkpoint stays."""
    path = tmp_path / "checkpoint.pt"
    ckpt.save_checkpoint(path, _state(1))
    before = path.read_bytes()
    (tmp_path / "checkpoint.pt.tmp").symlink_to("/dev/full")
    with pytest.raises(ckpt.CheckpointWriteError) as caught:
        ckpt.save_checkpoint(path, _state(2))
    assert str(caught.value) == f"no space left on device while writing {path}" and caught.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_other_write_errors_name_the_file(tmp_path, monkeypatch):
    def read_only(state, f):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(torch, "save", read_only)
    with pytest.raises(ckpt.CheckpointWriteError) as caught:
        ckpt.save_checkpoint(tmp_path / "checkpoint.pt", _state(1))
    assert str(caught.value) == f"read-only file system while writing {tmp_path / 'checkpoint.pt'}"
    assert caught.value.errno == errno.EROFS and list(tmp_path.iterdir()) == []


def test_the_last_checkpoint_drops_the_previous_one(tmp_path):
    path = tmp_path / "checkpoint.pt"
    ckpt.save_checkpoint(path, _state(1))
    ckpt.save_checkpoint(path, _state(2), keep_previous=False)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_a_checkpoint_the_run_cannot_resume_from_falls_back(tmp_path):
    path = tmp_path / "checkpoint.pt"
    ckpt.save_checkpoint(path, _state(1))
    ckpt.save_checkpoint(path, {"something": "else"})  # reads back, but is not this run's

    def validate(state):
        if "epoch" not in state:
            raise ValueError("missing epoch")

    with pytest.warns(RuntimeWarning, match=re.escape(f"checkpoint {path} is damaged (ValueError: missing epoch)")):
        loaded = ckpt.load_latest(path, validate)
    assert loaded.path == tmp_path / "checkpoint.prev.pt" and loaded.state["epoch"] == 1
    assert ckpt.load_latest(tmp_path / "absent.pt") is None


# ----------------------------------------------------------------------------------------------- store lines
def test_garbage_lines_in_the_store_are_skipped_with_one_warning_naming_them(tmp_path):
    from zoo.results import RunRecord

    store = ResultsStore(tmp_path)
    store.append(RunRecord("a", "finished", top1=0.5))
    with open(store.path, "ab") as f:
        f.write(b'{"run_id": "torn", "sta\n')  # a record cut by a kill
        f.write(b"\x00\xff\xfe garbage \x13\n")  # bytes from nowhere (a bad sector, a stray write)
        f.write(b"\n[1, 2, 3]\n")  # blank (fine) and JSON that is not a record
    store.append(RunRecord("b", "failed", error="x"))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert [r.run_id for r in store.records()] == ["a", "b"]
        assert sorted(store.latest()) == ["a", "b"] and ResultsStore(tmp_path).done_ids() == {"a"}
    [warning] = seen  # once per file per process, however many readers
    assert str(warning.message) == (f"{store.path}: skipped 3 damaged line(s) that are not JSON records "
                                    "(line 2, 3, 5); the records around them are read")


def test_a_record_still_being_written_is_not_called_damaged(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(json.dumps({"run_id": "a", "status": "finished"}).encode() + b'\n{"run_id": "b", "st')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r.run_id for r in ResultsStore(tmp_path).records()] == ["a"]


# ------------------------------------------------------------------------------------------- W&B offline files
WANDB_DAMAGE = {
    "truncated": (lambda data: data[: len(data) // 2], "ends mid-record"),
    "zero-length": (lambda data: b"", "too short for a wandb file header"),
    "garbage": (lambda data: random.Random(0).randbytes(len(data)), "not a wandb run file"),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(WANDB_DAMAGE))
def test_a_resumed_run_with_a_damaged_offline_file_logs_to_a_new_one_and_says_so(tmp_path, damage):
    from zoo.tracking.offline import find_offline_runs, read_offline_run
    from zoo.tracking.wandb_sink import WandbSink

    def open_sink() -> WandbSink:
        return WandbSink.open(project="zoo-test", entity=None, group="g", name="cell", tags=[], config={"lr": 1},
                              mode="offline", dir=str(tmp_path), resume_id="run0001")

    sink = open_sink()
    sink.log({"train/loss": 2.0}, step=1)
    first_dir = sink.run_dir
    sink.finish()
    (run_file,) = first_dir.glob("run-*.wandb")
    change, reason = WANDB_DAMAGE[damage]
    run_file.write_bytes(change(run_file.read_bytes()))
    time.sleep(1.1)  # wandb names the folder by the second it starts in: a rerun comes later than that
    with pytest.warns(RuntimeWarning, match=re.escape(f"earlier offline run file {run_file} is damaged")) as seen:
        sink = open_sink()
    assert any(reason in str(w.message) for w in seen)
    assert sink.active and sink.run_id == "run0001" and sink.run_dir != first_dir
    sink.log({"train/loss": 1.0}, step=2)
    sink.finish()
    again = read_offline_run(find_offline_runs(tmp_path)[-1])
    assert again.finished and not again.torn and [r["train/loss"] for r in again.history] == [1.0]
