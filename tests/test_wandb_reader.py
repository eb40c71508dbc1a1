"""zoo.tracking.offline: parse real wandb 0.31 offline run files, and survive torn or corrupted ones."""
from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import pytest
import wandb
from wandb.proto import wandb_internal_pb2 as pb

from zoo.tracking.offline import (
    BLOCK_SIZE,
    ScanState,
    WandbFileError,
    find_offline_runs,
    iter_records,
    read_offline_run,
    resolve_run_file,
    wait_until_finished,
)

pytestmark = pytest.mark.xdist_group("test_wandb_reader")  # its module fixture is built on one worker only

BIG_TEXT = "0123456789abcdef" * 5000  # 80 KB: one record split over three 32 KiB blocks


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One genuine offline run written by wandb itself, with every record kind the harness produces."""
    root = tmp_path_factory.mktemp("wandb_real")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_DIR", str(root))
        run = wandb.init(
            project="zoo-test",
            group="grp",
            name="reader-run",
            job_type="train",
            tags=["mobilevit_xs", "basic"],
            config={"lr": 0.002, "recipe": {"name": "basic", "mixup": 0.5}, "amp": False, "patch": [2, 2, 2]},
            dir=str(root),
            settings=wandb.Settings(console="off", silent=True, save_code=False, reinit="create_new"),
        )
        run.config.update({"late_key": "added after init"})
        for step in (0, 5, 10):
            run.log({"train/loss": 2.5 - step / 10, "epoch/val_top1": float(step), "flag": step == 10}, step=step)
        run.log({"notes/big": BIG_TEXT}, step=11)
        run.summary.update({"top1": 10.0, "top1_raw": 9.5})
        run.summary.update({"top1": 12.5})  # later summary updates win
        run.log({"cells": wandb.Table(columns=["model", "top1"], data=[["a", 1.5], ["b", 2.5]])}, step=12)
        run.finish(exit_code=3)
    (found,) = find_offline_runs(root)
    assert wait_until_finished(found).finished  # wandb-core writes the file out just after finish() returns
    return found


def test_reads_config_history_summary_and_identity(real_run: Path) -> None:
    run = read_offline_run(real_run)
    assert run.path == resolve_run_file(real_run) and run.path.suffix == ".wandb"
    assert (run.name, run.project, run.group, run.job_type) == ("reader-run", "zoo-test", "grp", "train")
    assert run.tags == ["mobilevit_xs", "basic"]
    assert run.run_id and run.path.name == f"run-{run.run_id}.wandb"
    assert run.config == {
        "lr": 0.002,
        "recipe": {"name": "basic", "mixup": 0.5},
        "amp": False,
        "patch": [2, 2, 2],
        "late_key": "added after init",
    }
    losses = {row["_step"]: row["train/loss"] for row in run.history if "train/loss" in row}
    assert losses == pytest.approx({0: 2.5, 5: 2.0, 10: 1.5})
    assert [row["flag"] for row in run.history if "flag" in row] == [False, False, True]
    assert run.summary["top1"] == 12.5 and run.summary["top1_raw"] == 9.5
    assert run.summary["epoch/val_top1"] == 10.0  # the last logged value lands in the summary too
    assert run.exit_code == 3 and run.finished and not run.torn and run.skipped_chunks == 0


def test_record_split_across_blocks_is_reassembled(real_run: Path) -> None:
    assert resolve_run_file(real_run).stat().st_size > 2 * BLOCK_SIZE
    run = read_offline_run(real_run)
    assert [row["notes/big"] for row in run.history if "notes/big" in row] == [BIG_TEXT]


def test_table_and_artifacts(real_run: Path) -> None:
    run = read_offline_run(real_run)
    assert run.table("cells") == (["model", "top1"], [["a", 1.5], ["b", 2.5]])
    assert any(a.type == "run_table" and "cells.table.json" in a.paths for a in run.artifacts)
    assert any(path.startswith("media/table/cells") for path in run.files)
    with pytest.raises(KeyError):
        run.table("top1")


def test_torn_tail_keeps_everything_before_the_tear(real_run: Path, tmp_path: Path) -> None:
    source = resolve_run_file(real_run)
    full = read_offline_run(source)
    data = source.read_bytes()
    torn_dir = tmp_path / "torn"
    torn_dir.mkdir()
    torn = torn_dir / source.name
    # Cut inside the exit record's chunk: the run looks killed, the rest is intact.
    torn.write_bytes(data[:-3])
    run = read_offline_run(torn_dir)
    assert run.torn and run.exit_code is None and not run.finished
    assert run.config == full.config and run.summary["top1"] == 12.5
    # Cut inside the 80 KB split record: it is dropped whole, earlier steps survive.
    big_at = data.index(BIG_TEXT[:64].encode())
    torn.write_bytes(data[: big_at + BLOCK_SIZE])
    run = read_offline_run(torn)
    assert run.torn
    assert [row["_step"] for row in run.history if "train/loss" in row] == [0, 5, 10]
    assert not any("notes/big" in row for row in run.history)


def test_find_offline_runs_skips_latest_symlink_and_non_runs(real_run: Path, tmp_path: Path) -> None:
    wandb_dir = tmp_path / "wandb"
    older = wandb_dir / "offline-run-20200101_000000-aaaa1111"
    shutil.copytree(real_run, older)
    newer = wandb_dir / "offline-run-20300101_000000-bbbb2222"
    shutil.copytree(real_run, newer)
    (wandb_dir / "offline-run-20250101_000000-empty").mkdir()  # no .wandb file: not a run
    (wandb_dir / "latest-run").symlink_to(newer)
    assert find_offline_runs(tmp_path) == [older, newer]
    assert find_offline_runs(wandb_dir) == [older, newer]
    assert find_offline_runs(tmp_path / "missing") == []


# ---------------------------------------------------------------------------------------------- framing details
def _frame(payloads: list[bytes]) -> bytes:
    """An independent LevelDB-log writer (the test's oracle for framing): header, padding, FIRST/MIDDLE/LAST."""
    out = bytearray(b":W&B" + struct.pack("<HB", 0xBEE1, 0))
    for payload in payloads:
        rest, first = payload, True
        while True:
            room = BLOCK_SIZE - len(out) % BLOCK_SIZE
            if room < 7:
                out += b"\0" * room
                room = BLOCK_SIZE
            piece, rest = rest[: room - 7], rest[room - 7 :]
            kind = (1 if first else 4) if not rest else (2 if first else 3)
            out += struct.pack("<IHB", zlib.crc32(piece, zlib.crc32(bytes([kind]))), len(piece), kind) + piece
            first = False
            if not rest:
                break
    return bytes(out)


def _history_record(num: int, text: str) -> bytes:
    record = pb.Record(num=num)
    item = record.history.item.add()
    item.key, item.value_json = "text", f'"{text}"'
    record.history.step.num = num
    return record.SerializeToString()


def _texts(path: Path) -> list[str]:
    """Every record's text, asserting the framing was read cleanly (no resync, no tear)."""
    state = ScanState()
    texts = [r.history.item[0].value_json.strip('"') for r in iter_records(path, state)]
    assert state.skipped_chunks == 0 and not state.torn
    return texts


def _record_of_size(num: int, size: int) -> tuple[str, bytes]:
    """A history record whose serialised size is exactly `size` bytes."""
    text = "b" * size
    while len(payload := _history_record(num, text)) > size:
        text = text[: len(text) - (len(payload) - size)]
    assert len(payload) == size
    return text, payload


def test_block_padding_and_split_records(tmp_path: Path) -> None:
    first = _history_record(0, "a" * 100)
    # The second record ends 3 bytes before the block boundary: too little for a chunk header, so zero padding.
    second_text, second = _record_of_size(1, BLOCK_SIZE - 7 - (7 + len(first)) - 7 - 3)
    texts = ["a" * 100, second_text, "c" * 70_000, "d"]
    payloads = [first, second, _history_record(2, texts[2]), _history_record(3, texts[3])]
    data = _frame(payloads)
    assert data[BLOCK_SIZE - 3 : BLOCK_SIZE] == b"\0\0\0"
    path = tmp_path / "run-x.wandb"
    path.write_bytes(data)
    assert _texts(path) == texts


def test_bad_checksum_skips_to_next_block(tmp_path: Path) -> None:
    texts = [f"r{i}-" + "x" * 3000 for i in range(30)]  # ~90 KB over three blocks
    data = bytearray(_frame([_history_record(i, t) for i, t in enumerate(texts)]))
    data[data.index(texts[1].encode()) + 10] ^= 0xFF  # corrupt the second record, in the first block
    path = tmp_path / "run-x.wandb"
    path.write_bytes(bytes(data))
    run = read_offline_run(path)
    kept = [row["text"] for row in run.history]
    assert kept[0] == texts[0] and kept[-1] == texts[-1]
    assert texts[1] not in kept and len(kept) < len(texts)
    assert run.skipped_chunks >= 1 and not run.torn


def test_rejects_files_that_are_not_wandb_logs(tmp_path: Path) -> None:
    path = tmp_path / "run-x.wandb"
    path.write_bytes(b"PK\x03\x04 not a wandb file")
    with pytest.raises(WandbFileError, match="not a wandb run file"):
        read_offline_run(path)
    with pytest.raises(FileNotFoundError):
        read_offline_run(tmp_path / "nothing-here")
