"""The kind-specific `data.options` of each data source, checked where runs.yaml is read.

`DataConfig.validate` calls `parse_options` while the matrix loads, so a bad option is reported like every other
config error (file, full key path such as ``data.options.source_size``, the value, what is allowed) and exits 2
before anything runs; the data sources parse the same options again when they build.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zoo.config.typed import ConfigError, from_dict


class DataError(ConfigError):
    """A user error about data: unknown kind or option, missing folder or file, inconsistent classes."""


@dataclass(frozen=True)
class DigitsOptions:
    source_size: int = 32
    val_fraction: float = 0.2
    split_seed: int = 0

    def validate(self, source: str, path: str) -> None:
        if self.source_size < 8:
            raise DataError(f"{source}: {path}.source_size: must be >= 8 (the digits are 8x8), got {self.source_size}")
        if not 0 < self.val_fraction < 1:
            raise DataError(f"{source}: {path}.val_fraction: must be within (0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class ImageFolderOptions:
    train_dir: str = "train"
    val_dir: str = "val"
    skip_corrupt: bool = False
    verify: bool = False
    verify_threads: int = 8


@dataclass(frozen=True)
class CifarOptions:
    download: bool = False


@dataclass(frozen=True)
class HFOptions:
    image_column: str = "image"
    label_column: str = "label"
    train_split: str = "train"
    val_split: str = "validation"
    data_dir: str | None = None
    cache_dir: str | None = None


OPTIONS_BY_KIND: dict[str, type] = {
    "digits": DigitsOptions,
    "imagefolder": ImageFolderOptions,
    "cifar10": CifarOptions,
    "cifar100": CifarOptions,
    "hf": HFOptions,
}


def parse_options(kind: str, options: Any, source: str = "build_datasets", path: str = "data.options") -> Any:
    """The typed options of data set `kind`; a DataError names `source`, the key under `path`, the value found and
    what is allowed (an unknown key lists the options of this kind)."""
    if kind not in OPTIONS_BY_KIND:
        raise DataError(f"{source}: data.kind: unknown kind {kind!r} (allowed: {', '.join(OPTIONS_BY_KIND)})")
    return typed_options(OPTIONS_BY_KIND[kind], kind, options, source, path)


def typed_options(cls: type, kind: str, options: Any, source: str, path: str,
                  error: type[DataError] = DataError) -> Any:
    """`options` as `cls` (zoo.config.typed.from_dict); a ConfigError comes back as `error` (the data flavour, so
    callers can catch either) naming the kind."""
    try:
        return from_dict(cls, options, source, path)
    except DataError:
        raise
    except ConfigError as err:
        raise error(f"{err} [data.kind: {kind}]") from None
