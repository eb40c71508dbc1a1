"""The task of a matrix (classification, detection, segmentation) and which data kinds and recipe knobs fit it.

A classification config leaves its task out of the run id (`RunConfig.run_id`), so every earlier run id holds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from zoo.config.typed import ConfigError

Task = Literal["classification", "detection", "segmentation"]
# The one list of data kinds runs.yaml may name, by the tasks each serves: detection needs boxes, segmentation pixel
# masks. Every other list of kinds (the `DatasetKind` type, zoo.data's builders and option types) derives from it.
KINDS_BY_TASK: dict[str, tuple[str, ...]] = {
    "classification": ("digits", "imagefolder", "cifar10", "cifar100", "hf"),
    "detection": ("scattered-digits", "coco"),
    "segmentation": ("scattered-digits", "voc"),
}
DATA_KINDS: tuple[str, ...] = tuple(dict.fromkeys(kind for kinds in KINDS_BY_TASK.values() for kind in kinds))
DENSE_KINDS: tuple[str, ...] = tuple(kind for kind in DATA_KINDS if kind not in KINDS_BY_TASK["classification"])
BUNDLED_KINDS: tuple[str, ...] = ("digits", "scattered-digits")  # generated here: no `data.root`
CIFAR_KINDS: tuple[str, ...] = ("cifar10", "cifar100")
DatasetKind = Literal[DATA_KINDS]  # type: ignore[valid-type]  # the list as a type: from_dict names the allowed kinds
# Recipe knobs a dense task does not apply (the rule the plan prints once as a `note:` and the board states):
# mixing images blends their boxes and masks into nothing a detector or segmenter can be taught, label smoothing
# is a classifier's, and RandAugment / random erasing / colour jitter / random-resized crop are image-only
# transforms in timm (the boxes and masks would not follow). Flip, weight decay, drop path, EMA and repeated
# augmentation apply as in classification.
DENSE_UNUSED_RECIPE_KEYS: tuple[str, ...] = ("mixup", "cutmix", "label_smoothing", "auto_augment", "re_prob",
                                             "color_jitter", "scale")


def check_task_data(task: str, kind: str, source: str, key: str = "task") -> None:
    """A task and a data kind that do not fit are a ConfigError naming the task and the kinds it can train on."""
    if kind not in KINDS_BY_TASK[task]:
        raise ConfigError(f"{source}: {key}: {task} cannot train on data.kind {kind!r} (allowed for {task}: "
                          f"{', '.join(KINDS_BY_TASK[task])})")


def dense_recipe_note(tasks: tuple[str, ...]) -> str | None:
    """The one line saying which recipe knobs a dense task leaves out (None for classification only)."""
    dense = [t for t in tasks if t != "classification"]
    if not dense:
        return None
    return (f"task {', '.join(dense)}: the recipes' {', '.join(DENSE_UNUSED_RECIPE_KEYS)} do not apply (images, "
            f"boxes and masks are only flipped (hflip) and resized together); weight decay, drop path, EMA and the "
            f"optimizer/schedule apply as in classification")


def check_matrix_tasks(matrix: Any, source: str) -> None:
    """runs.yaml's `task` (one task or a list of distinct ones) fits the data kind, and every model has the
    features each dense task's head reads (built once, small, as `check_model_kwargs` does)."""
    task = matrix.task
    tasks = (task,) if isinstance(task, str) else tuple(task)
    if not tasks or len(set(tasks)) != len(tasks):
        raise ConfigError(f"{source}: task: must be a task or a non-empty list of distinct tasks "
                          f"(allowed: {', '.join(KINDS_BY_TASK)}), got {list(tasks)!r}")
    for i, one in enumerate(tasks):
        check_task_data(one, matrix.data.kind, source, "task" if isinstance(task, str) else f"task[{i}]")
    store = matrix.classification_store
    if store is not None and not Path(store).is_dir():
        raise ConfigError(f"{source}: classification_store: must be an existing folder (a classification "
                          f"matrix's store_dir), got {store!r}")
    dense = [one for one in tasks if one != "classification"]
    if not dense:
        return
    # The edge asks the models stage (upward: kept in the validating function, tests/test_layout.py EDGE_CHECKS).
    from zoo.models import list_models
    from zoo.models.dense.check import missing_features

    known = set(list_models())
    for i, model in enumerate(matrix.models):
        for one in dense:
            problem = missing_features(model, one, matrix.resolution.base_resolution,
                                       dict(matrix.model_kwargs.get(model, {}))) if model in known else None
            if problem:
                raise ConfigError(f"{source}: models[{i}]: {problem}; task {one} needs a backbone with them")
