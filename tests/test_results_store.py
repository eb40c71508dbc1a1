"""The results store survives kills: complete records are never lost, a torn tail is skipped, newest record wins."""
import os
import signal
import subprocess
import sys
import time

import pytest

from zoo.config import ConfigError
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
    # its config has a key this version dropped (recipe.ema_warmup): the record loads without a typed config, and the
    # stored one travels verbatim in `extra`
    assert old.config is None and old.extra["config"]["recipe"]["name"] == "basic" and list(old.extra) == ["config"]
    assert new.extra == {"from_the_future": 1} and new.top1 is None and new.history == []
    import json

    written, original = old.to_json(), json.loads(line)
    assert all(written[key] == value for key, value in original.items())  # nothing lost on the way through
    defaults = RunRecord(run_id="x", status="failed").to_json()
    assert all(written[key] == defaults[key] for key in set(written) - set(original))  # new fields at their default
    assert new.to_json()["from_the_future"] == 1 and RunRecord.from_json(new.to_json()) == new


def test_a_late_interrupted_record_never_hides_a_finished_one(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(RunRecord("a", "finished", top1=0.9))
    store.append(RunRecord("a", "interrupted"))  # the stalled former owner, on its way out
    store.append(RunRecord("b", "failed"))
    store.append(RunRecord("b", "finished", top1=0.5))
    assert {k: (r.status, r.top1) for k, r in store.latest().items()} == {"a": ("finished", 0.9), "b": ("finished", 0.5)}


def _cfg(**changes):
    from zoo.config import RunConfig, SamplerConfig, load_recipe

    return RunConfig(model="mobilevit_xxs", recipe=load_recipe("basic"), sampler=SamplerConfig(), **changes)


def test_the_config_is_typed_and_written_as_before(tmp_path):
    import json

    from zoo.config import to_dict

    cfg = _cfg(lr=0.004).resolved("cpu", 1, False)
    store = ResultsStore(tmp_path)
    store.append(RunRecord(cfg.run_id(), "finished", config=cfg))
    (line,) = store.path.read_text().splitlines()
    assert json.loads(line)["config"] == json.loads(json.dumps(to_dict(cfg)))  # the JSON of the old dict field
    (back,) = store.records()
    assert back.config == cfg and back.config.lr == 0.004 and back.config.recipe.name == "basic"
    assert back.config.run_id() == cfg.run_id() and back.extra == {}
    assert RunRecord("x", "failed").to_json()["config"] == {}  # no config: the old default, not null


def test_a_config_of_another_version_keeps_the_record_loadable_and_round_trips(tmp_path):
    import json

    from zoo.config import to_dict

    raw = {**to_dict(_cfg()), "knob_of_the_future": 3}
    (tmp_path / "results.jsonl").write_text(json.dumps({"run_id": "f", "status": "finished", "config": raw}) + "\n")
    (record,) = ResultsStore(tmp_path).records()
    assert record.config is None and record.extra == {"config": raw} and record.config_json() == raw
    assert record.to_json()["config"] == raw and RunRecord.from_json(record.to_json()) == record
    with pytest.raises(ConfigError, match="run f "):  # what rebuilds the run (measurement) says which one
        record.require_config()


def test_since_reads_typed_records_after_an_offset_and_waits_for_a_torn_tail(tmp_path):
    store = ResultsStore(tmp_path)
    assert store.since(0) == ([], 0) and store.end_offset() == 0
    store.append(RunRecord("a", "finished"))
    offset = store.end_offset()
    store.append(RunRecord("b", "failed"))
    with open(store.path, "ab") as f:
        f.write(b'{"run_id": "c", "stat')  # a write still in flight
    fresh, end = store.since(offset)
    assert [(r.run_id, r.status) for r in fresh] == [("b", "failed")] and end == offset + len(
        store.path.read_bytes().splitlines(keepends=True)[1])
    with open(store.path, "ab") as f:
        f.write(b'us": "finished"}')  # the same line, complete now (still without its newline)
    assert [r.run_id for r in store.since(end)[0]] == ["c"] and store.since(end)[1] == store.end_offset()
    every, after = store.split(offset)
    assert [r.run_id for r in every] == ["a", "b", "c"] and [r.run_id for r in after] == ["b", "c"]
