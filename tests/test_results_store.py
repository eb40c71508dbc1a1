"""The results store survives kills: complete records are never lost, a torn tail is skipped, newest record wins."""
import os
import signal
import subprocess
import sys
import time

from zoo.results import ResultsStore


def test_append_read_latest_and_done(tmp_path):
    store = ResultsStore(tmp_path)
    store.append({"run_id": "a", "status": "failed", "error": "OOM"})
    store.append({"run_id": "b", "status": "diverged"})
    assert store.done_ids() == {"b"}
    store.append({"run_id": "a", "status": "finished", "top1": 0.5})
    assert store.latest()["a"]["top1"] == 0.5
    assert store.done_ids() == {"a", "b"}
    assert [r["run_id"] for r in store.finished()] == ["a"]


def test_torn_tail_is_skipped_and_next_record_starts_a_new_line(tmp_path):
    store = ResultsStore(tmp_path)
    store.append({"run_id": "a", "status": "finished"})
    with open(store.path, "ab") as f:
        f.write(b'{"run_id": "b", "stat')  # a write cut short by a kill
    assert [r["run_id"] for r in store.records()] == ["a"]
    store.append({"run_id": "c", "status": "finished"})
    assert [r["run_id"] for r in store.records()] == ["a", "c"]


WRITER = """
import sys
from zoo.results import ResultsStore
store = ResultsStore(sys.argv[1])
i = 0
while True:
    store.append({"run_id": f"r{i}", "status": "finished", "payload": "x" * 5000})
    i += 1
"""


def test_kill_9_never_tears_the_store(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)])
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    records = ResultsStore(tmp_path).records()
    assert len(records) > 3
    assert [r["run_id"] for r in records] == [f"r{i}" for i in range(len(records))]
