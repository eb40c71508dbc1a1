"""Where a result came from: git commit and package versions, recorded with every run and every measurement."""
from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

# The packages that shape a training result (measurements add their runtimes' packages to these).
TRAINING_PACKAGES = ("torch", "torchvision", "timm", "torchmetrics", "wandb")


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions(packages: tuple[str, ...]) -> dict[str, str | None]:
    """Installed version of each package (None when absent), plus Python's."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """The training packages' versions (absent ones left out)."""
    return {k: v for k, v in package_versions(TRAINING_PACKAGES).items() if v is not None}
