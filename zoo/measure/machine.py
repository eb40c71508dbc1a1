"""What machine and software a measurement was taken on, and a short stable id to key measurements by."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
from dataclasses import asdict, dataclass
from importlib import metadata

import torch

__all__ = ["MachineInfo", "machine_info", "package_version", "software_versions", "usable_cpus"]

_VERSIONED_PACKAGES = (
    "torch", "onnxruntime", "onnx", "timm", "coremltools", "numpy", "executorch", "litert-torch", "ai-edge-litert",
    "torchao",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int:
    # The cores this process may run on (cgroup/affinity), not the host's total.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def package_version(package: str) -> str | None:
    """The installed version of `package`, None when it is not installed."""
    return _version(package)


def software_versions() -> dict[str, str | None]:
    """Versions of the packages that shape a measurement, plus Python's."""
    versions = {name: _version(name) for name in _VERSIONED_PACKAGES}
    versions["python"] = platform.python_version()
    return versions


@dataclass(frozen=True)
class MachineInfo:
    cpu_model: str
    cpus: int
    os: str
    gpu: str | None
    torch_version: str
    onnxruntime_version: str | None

    @property
    def machine_id(self) -> str:
        """12 hex digits of a hash of the fields that change timings; the same machine and stack keep the id."""
        payload = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:12]

    def as_dict(self) -> dict:
        return {**asdict(self), "machine_id": self.machine_id}


@functools.lru_cache(maxsize=1)
def _gpu_name() -> str | None:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def machine_info() -> MachineInfo:
    """Describe this machine (CPU, usable cores, OS, GPU, torch and onnxruntime versions)."""
    return MachineInfo(
        cpu_model=_cpu_model(),
        cpus=usable_cpus(),
        os=f"{platform.system()} {platform.machine()}",
        gpu=_gpu_name(),
        torch_version=torch.__version__,
        onnxruntime_version=_version("onnxruntime"),
    )
