"""Shared test settings: W&B offline in a temp dir, one torch thread per test process (2 cores, 2 workers)."""
import os

import pytest
import torch

# Two xdist workers on two cores: more threads than cores makes OpenMP regions wait on descheduled threads
# (we measured 5-25x slowdowns), so every test process and every subprocess it starts uses one thread.
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True)
def _offline_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
