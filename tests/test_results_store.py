"""The results store survives kills: complete records are never lost, a torn tail is skipped, newest record wins."""
import os
import signal
import subprocess
import sys
import time

from zoo.results import ResultsStore, RunRecord


def test_append_read_latest_and_done(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(RunRecord("a", "failed", error="OOM"))
    store.append(RunRecord("b", "diverged"))
    assert store.done_ids() == {"b"}
    store.append(RunRecord("a", "finished", top1=0.5))
    assert store.latest()["a"].top1 == 0.5
    assert store.done_ids() == {"a", "b"}
    assert [r.run_id for r in store.finished()] == ["a"]


def test_torn_tail_is_skipped_and_next_record_starts_a_new_line(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(RunRecord("a", "finished"))
    with open(store.path, "ab") as f:
        f.write(b'{"run_id": "b", "stat')  # a write cut short by a kill
    assert [r.run_id for r in store.records()] == ["a"]
    store.append(RunRecord("c", "finished"))
    assert [r.run_id for r in store.records()] == ["a", "c"]


WRITER = """
import sys
from zoo.results import ResultsStore, RunRecord
store = ResultsStore(sys.argv[1])
i = 0
while True:
    store.append(RunRecord(f"r{i}", "finished", error="x" * 5000))
    i += 1
"""


def test_kill_9_never_tears_the_store(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)])
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    records = ResultsStore(tmp_path).records()
    assert len(records) > 3
    assert [r.run_id for r in records] == [f"r{i}" for i in range(len(records))]


def test_a_line_of_the_first_format_still_loads_and_round_trips(tmp_path):
    """tests/data/results_v0.jsonl is a record written by zoo before RunRecord existed (dict-built)."""
    from pathlib import Path

    line = (Path(__file__).parent / "data" / "results_v0.jsonl").read_text()
    (tmp_path / "results.jsonl").write_text(line + '{"run_id": "new", "status": "failed", "from_the_future": 1}\n')
    old, new = ResultsStore(tmp_path).records()
    assert old.status == "finished" and old.label == "mobilevit_xxs_aft/basic/fixed/s0" and old.top1 == 0.0625
    assert old.history[0].val_top1 == 0.0625 and old.history[0].updates == 4 and old.history[0].ema_decay is None
    assert old.config["recipe"]["name"] == "basic" and old.extra == {}
    assert new.extra == {"from_the_future": 1} and new.top1 is None and new.history == []
    import json

    written, original = old.to_json(), json.loads(line)
    assert all(written[key] == value for key, value in original.items())  # nothing lost on the way through
    assert all(written[key] is None for key in set(written) - set(original))  # new fields only at their default
    assert new.to_json()["from_the_future"] == 1 and RunRecord.from_json(new.to_json()) == new


def test_a_late_interrupted_record_never_hides_a_finished_one(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(RunRecord("a", "finished", top1=0.9))
    store.append(RunRecord("a", "interrupted"))  # the stalled former owner, on its way out
    store.append(RunRecord("b", "failed"))
    store.append(RunRecord("b", "finished", top1=0.5))
    assert {k: (r.status, r.top1) for k, r in store.latest().items()} == {"a": ("finished", 0.9), "b": ("finished", 0.5)}
