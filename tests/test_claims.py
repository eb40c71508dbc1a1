"""Claims on matrix cells: one holder at a time, leases that expire, heartbeats that renew, dead holders replaced."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zoo.results.store import append_jsonl
from zoo.runner import claims as claims_mod
from zoo.runner.claims import ClaimStore, results_offset, scan_results
from zoo.runner.plan import RunSpec


def foreign(store_dir: Path, lease_s: float) -> ClaimStore:
    """A claim store that looks like another host: its pids mean nothing here, only its lease counts."""
    store = ClaimStore(store_dir, lease_s=lease_s)
    store._host_id = "elsewhere|boot|pidns"
    return store


def test_one_holder_at_a_time_and_release(tmp_path):
    a, b = ClaimStore(tmp_path, lease_s=60), ClaimStore(tmp_path, lease_s=60)
    claim = a.try_claim("r1", "m/basic/fixed/s0")
    assert claim is not None and claim.taken_from is None
    assert b.try_claim("r1") is None
    assert "claimed by" in b.explain("r1") and str(os.getpid()) in b.explain("r1")
    assert b.try_claim("r2") is not None  # other cells stay free
    claim.release()
    assert not a.path("r1").exists() and b.explain("r1") == "claimable"
    assert b.try_claim("r1") is not None


def test_lease_expires_on_the_filesystem_clock(tmp_path, monkeypatch):
    monkeypatch.setattr(claims_mod, "MTIME_GRACE_S", 0.0)
    holder = foreign(tmp_path, lease_s=0.4).try_claim("r1")
    ours = ClaimStore(tmp_path, lease_s=60)
    assert holder is not None and ours.try_claim("r1") is None
    time.sleep(0.6)  # no heartbeat: the holder's own 0.4 s lease is what counts, not ours
    taken = ours.try_claim("r1")
    assert taken is not None and taken.taken_from.reason == "lease expired"
    assert taken.taken_from.holder.token == holder.holder.token
    assert not holder.renew() and holder.lost  # the old holder learns it lost the cell


def test_heartbeat_keeps_the_claim_and_exit_releases_it(tmp_path, monkeypatch):
    monkeypatch.setattr(claims_mod, "MTIME_GRACE_S", 0.0)
    holder = foreign(tmp_path, lease_s=0.4).try_claim("r1")
    ours = ClaimStore(tmp_path, lease_s=60)
    with holder:  # renews every lease/4
        for _ in range(6):
            time.sleep(0.2)
            assert ours.try_claim("r1") is None
        first_beat = holder.holder.heartbeat_at
        assert first_beat > holder.holder.started_at
    assert not ours.path("r1").exists() and not holder.lost
    assert ours.try_claim("r1") is not None


def test_claim_of_a_dead_local_process_is_taken_at_once(tmp_path):
    store = ClaimStore(tmp_path, lease_s=3600)
    child = subprocess.run(
        [sys.executable, "-c", "import sys; from zoo.runner.claims import ClaimStore; "
         f"ClaimStore({str(tmp_path)!r}, lease_s=3600).try_claim('r1'); sys.exit(0)"], check=True)
    assert child.returncode == 0 and store.path("r1").exists()
    state = store.state("r1")
    assert not state.live and state.reason == "holder process is gone"
    taken = store.try_claim("r1")
    assert taken is not None and taken.taken_from.reason == "holder process is gone"


def test_a_reused_pid_is_not_the_holder(tmp_path):
    store = ClaimStore(tmp_path, lease_s=3600)
    claim = store.try_claim("r1")
    data = json.loads(store.path("r1").read_text())
    data["proc_start"] = "1"  # our pid, but a process that started at another time
    store.path("r1").write_text(json.dumps(data))
    assert store.state("r1").reason == "holder process is gone"
    assert claim is not None


def test_settled_cells_are_never_claimed(tmp_path):
    store = ClaimStore(tmp_path, lease_s=60)
    results = tmp_path / "results.jsonl"
    append_jsonl(results, {"run_id": "done", "status": "finished"})
    append_jsonl(results, {"run_id": "nan", "status": "diverged"})
    append_jsonl(results, {"run_id": "old-fail", "status": "failed"})
    since = results_offset(tmp_path)
    append_jsonl(results, {"run_id": "new-fail", "status": "failed"})
    append_jsonl(results, {"run_id": "stopped", "status": "interrupted"})
    assert store.try_claim("done") is None and store.try_claim("nan") is None
    assert "already finished" in store.explain("done")
    # a failure of this invocation is settled for it; an earlier failure and an interruption are retried
    assert store.try_claim("new-fail", since_offset=since) is None
    assert store.try_claim("new-fail") is not None
    assert store.try_claim("old-fail", since_offset=since) is not None
    assert store.try_claim("stopped", since_offset=since) is not None
    scan = scan_results(tmp_path, since)
    assert {k: r.status for k, r in scan.since.items()} == {"new-fail": "failed", "stopped": "interrupted"}


def test_claim_first_skips_held_and_settled_cells(tmp_path):
    store = ClaimStore(tmp_path, lease_s=60)
    append_jsonl(tmp_path / "results.jsonl", {"run_id": "a", "status": "finished"})
    assert store.try_claim("b") is not None
    got = store.claim_first(["a", "b", "c", "d"])
    assert got is not None and got.run_id == "c"
    assert sorted(store.holders()) == ["b", "c"] and all(s.live for s in store.holders().values())


def test_an_unreadable_claim_expires_by_its_age(tmp_path):
    store = ClaimStore(tmp_path, lease_s=5)
    store.dir.mkdir(parents=True)
    store.path("r1").write_text("{not json")
    assert store.try_claim("r1") is None  # fresh: respected for one lease
    old = time.time() - 60
    os.utime(store.path("r1"), (old, old))
    taken = store.try_claim("r1")
    assert taken is not None and taken.taken_from.reason == "unreadable"


def test_lost_claim_calls_on_lost(tmp_path):
    store = ClaimStore(tmp_path, lease_s=0.4)
    claim = store.try_claim("r1")
    hits = []
    claim.on_lost = lambda: hits.append(True)
    with claim:
        data = json.loads(store.path("r1").read_text())
        store.path("r1").write_text(json.dumps({**data, "token": "someone-else"}))  # a takeover
        deadline = time.time() + 3
        while not hits and time.time() < deadline:
            time.sleep(0.05)
    assert hits and claim.lost
    assert json.loads(store.path("r1").read_text())["token"] == "someone-else"  # theirs is left alone


def test_a_killed_lock_holder_does_not_block_the_directory(tmp_path):
    store = ClaimStore(tmp_path, lease_s=60, lock_timeout_s=10)
    code = ("import os, signal; from zoo.runner.claims import ClaimStore; "
            f"lock = ClaimStore({str(tmp_path)!r}).locked(); lock.acquire(); print('held', flush=True); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -9 and "held" in proc.stdout
    started = time.time()
    assert store.try_claim("r1") is not None and time.time() - started < 5


@pytest.mark.parametrize("lease", ["7.5"])
def test_lease_from_environment(tmp_path, monkeypatch, lease):
    monkeypatch.setenv("ZOO_LEASE_S", lease)
    assert ClaimStore(tmp_path).lease_s == 7.5
    assert ClaimStore(tmp_path, lease_s=3).lease_s == 3


def _planned_cell(seed: int) -> RunSpec:
    from zoo.config import Execution, PlannedRun, RunConfig, SamplerConfig, load_recipe

    cfg = RunConfig(model="mobilevit_xxs", recipe=load_recipe("basic"), sampler=SamplerConfig(), seed=seed)
    return RunSpec(PlannedRun.plan(cfg, Execution("cpu", 1, False)), "todo")


def test_a_stalled_owners_late_interrupted_record_does_not_reopen_a_finished_cell(tmp_path):
    """The new owner finished the cell; the former owner, back from its stall, records `interrupted` on its way out.
    The claims, the matrix loop, its summary and both progress views still see the cell finished."""
    from zoo.results import ResultsStore, RunRecord
    from zoo.runner.matrix import DONE, Progress, _decide, summarize

    cell, other = _planned_cell(0), _planned_cell(1)
    store, claims = ResultsStore(tmp_path), ClaimStore(tmp_path, lease_s=60)
    since = results_offset(tmp_path)
    for status in ("finished", "interrupted"):  # the new owner's record, then the stalled one's
        top1 = 0.5 if status == "finished" else None
        store.append(RunRecord(cell.run_id, status, label=cell.config.label, top1=top1))
    assert scan_results(tmp_path, since).settled(cell.run_id) and scan_results(tmp_path).settled(cell.run_id)
    assert claims.try_claim(cell.run_id, since_offset=since) is None and claims.try_claim(cell.run_id) is None
    assert claims.explain(cell.run_id, since) == "already finished in the results store"
    assert _decide(claims, [cell.run_id], {}, since) == (DONE, None)
    summary = summarize([cell.run_id], tmp_path, since, wall_s=1.0)
    assert (summary.finished, summary.left, summary.exit_code) == (1, 0, 0)
    for by_label in (False, True):
        progress = Progress([cell, other], tmp_path, since, enabled=False, by_label=by_label)
        assert progress.settled() == {cell.config.label if by_label else cell.run_id}
        progress.close()
    # an unfinished cell is still claimed (the rule hides nothing else)
    assert _decide(claims, [cell.run_id, other.run_id], {}, since)[0] == other.run_id
