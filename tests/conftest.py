"""Shared test settings: W&B offline in a temp dir, one torch thread per test process (2 cores, 2 workers), and
the schedule for two xdist workers (see docs/testing.md).

Scheduling (`make test` runs `pytest -n 2 --dist loadgroup --no-loadscope-reorder`): xdist sends whole groups to
one worker, in the order collected here.
- A test that starts several busy processes (torchrun, DDP, parallel matrix workers) is marked `multiprocess`:
  all of them form one xdist group, so two never overlap on two cores (four busy processes on two cores made
  gloo's collectives crawl).
- A file with a module-scoped fixture sets `pytestmark = pytest.mark.xdist_group("<file>")`, so its fixture is
  built on one worker only.
- Slow tests go first (the multiprocess group first of all, then the files of 20-60 s tests), so the long ones
  do not start last and leave one worker idle at the end.
"""
import os

import pytest
import torch

# Two xdist workers on two cores: more threads than cores makes OpenMP regions wait on descheduled threads
# (we measured 5-25x slowdowns), so every test process and every subprocess it starts uses one thread.
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"

MULTIPROCESS_GROUP = "multiprocess"
# Files whose slow tests take 20-60 s each (an end-to-end subprocess, phone-runtime exports): they start before the
# other slow tests, while the multiprocess group runs on the other worker.
LONGEST_FILES = ("test_gpu_check.py", "test_runtime_backends.py", "test_export_prepare.py", "test_slurm.py",
                 "test_matrix_e2e.py", "test_litert_int8.py", "test_architecture_board.py", "test_measure_resume.py")


def pytest_configure(config: pytest.Config) -> None:
    # Registered here, not in pyproject.toml: the Makefile's setup stamp is pyproject.toml's checksum.
    config.addinivalue_line("markers", "multiprocess: starts several busy processes (torchrun, DDP, parallel "
                                       "workers); all such tests form one xdist group and run first")


@pytest.hookimpl(tryfirst=True)  # before xdist names the groups in the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("multiprocess") is not None:
            item.add_marker(pytest.mark.xdist_group(MULTIPROCESS_GROUP))

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("multiprocess") is not None:
            return 0
        if item.get_closest_marker("slow") is not None:
            return 1 if item.path.name in LONGEST_FILES else 2
        return 3

    def group(item: pytest.Item) -> str | None:
        mark = item.get_closest_marker("xdist_group")
        return None if mark is None else (mark.args[0] if mark.args else mark.kwargs.get("name"))

    # A group keeps its items together (its module fixture is built once, with or without xdist), at its most
    # urgent item's rank.
    group_rank: dict[str, int] = {}
    for item in items:
        if (name := group(item)) is not None:
            group_rank[name] = min(group_rank.get(name, 3), rank(item))
    order = {id(item): index for index, item in enumerate(items)}
    first: dict[str, int] = {}
    for item in items:
        if (name := group(item)) is not None:
            first.setdefault(name, order[id(item)])

    def key(item: pytest.Item) -> tuple[int, int, int]:
        name = group(item)
        if name is None:
            return rank(item), order[id(item)], 0
        return group_rank[name], first[name], order[id(item)]

    items.sort(key=key)
    if getattr(config.option, "loadgroup", False):  # on an xdist worker under --dist loadgroup
        for item in items:
            if (name := group(item)) is not None:
                _name_the_group(item, name)


def _name_the_group(item: pytest.Item, name: str) -> None:
    """What xdist's loadgroup does (the nodeid's '@group' suffix, its scope), for pytest 9: xdist 3.8 sets
    `item._nodeid`, which pytest 9 no longer reads (the id is `item._id`), so its groups were silently ignored."""
    nodeid = str(item.nodeid)
    if "@" in nodeid[nodeid.rfind("]") + 1:]:
        return  # an xdist that names groups itself
    if hasattr(item, "_id"):
        from _pytest.nodeid import NodeId

        item._id = NodeId.parse(f"{nodeid}@{name}")
    else:
        item._nodeid = f"{nodeid}@{name}"


@pytest.fixture(autouse=True)
def _offline_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
