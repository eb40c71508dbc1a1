"""Where a result came from: git commit and library versions, recorded with every run."""
from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    import timm
    import torch
    import torchmetrics
    import torchvision

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "torchmetrics": torchmetrics.__version__,
    }
    try:
        import wandb

        versions["wandb"] = wandb.__version__
    except ImportError:
        pass
    return versions
