"""Data sources built from files generated in temp dirs: digits, imagefolder, CIFAR pickles, Hugging Face on disk."""
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.data import CorruptImageError, DataError, build_datasets
from zoo.config.typed import ConfigError

# --- digits -------------------------------------------------------------------------------------------------


def test_digits_sizes_classes_and_rgb_images():
    splits = build_datasets("digits", options={"source_size": 24})
    assert (len(splits.train), len(splits.val)) == (1437, 360)
    assert splits.num_classes == 10 and splits.class_names == tuple("0123456789")
    image, label = splits.train[0]
    assert image.mode == "RGB" and image.size == (24, 24) and label == 0  # the split keeps sklearn's order
    assert splits.train.labels[:10] == list(range(10))
    pixels = np.asarray(image)
    assert (pixels[..., 0] == pixels[..., 1]).all() and pixels.max() > 200  # grey digits, full 0..255 range


def test_digits_split_is_stratified_and_deterministic():
    first = build_datasets("digits", options={"val_fraction": 0.2, "split_seed": 0})
    again = build_datasets("digits", options={"val_fraction": 0.2, "split_seed": 0})
    other = build_datasets("digits", options={"val_fraction": 0.2, "split_seed": 1})
    assert first.val.labels == again.val.labels and np.array_equal(first.val.images, again.val.images)
    assert not np.array_equal(first.val.images, other.val.images)
    train, val = Counter(first.train.labels), Counter(first.val.labels)
    for digit in range(10):
        assert abs(val[digit] - 0.2 * (train[digit] + val[digit])) <= 1  # each class split 80/20


def test_unknown_kind_and_option_name_what_is_allowed():
    with pytest.raises(DataError, match="allowed: digits, imagefolder, cifar10, cifar100, hf"):
        build_datasets("mnist")
    with pytest.raises(DataError, match=r"options.size: unknown key \(allowed: source_size, split_seed, val_fraction"):
        build_datasets("digits", options={"size": 32})
    with pytest.raises(ConfigError, match="val_fraction"):  # DataError is a ConfigError: the CLI exits 2
        build_datasets("digits", options={"val_fraction": 1.5})


# --- imagefolder --------------------------------------------------------------------------------------------


def _save(path: Path, color: tuple[int, int, int], mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 16), color).convert(mode).save(path)


def _tree(root: Path, val_classes: tuple[str, ...] = ("cat", "dog")) -> Path:
    for split, classes in (("train", ("cat", "dog")), ("val", val_classes)):
        for c, name in enumerate(classes):
            _save(root / split / name / "a.jpg", (200, 10 * c, 0))
            _save(root / split / name / "b.png", (0, 10 * c, 200), mode="L" if split == "train" else "RGBA")
    return root


def test_imagefolder_loads_jpeg_and_png_as_rgb(tmp_path):
    splits = build_datasets("imagefolder", root=_tree(tmp_path))
    assert splits.class_names == ("cat", "dog") and splits.num_classes == 2
    assert (len(splits.train), len(splits.val), splits.skipped) == (4, 4, 0)
    items = [splits.train[i] for i in range(4)] + [splits.val[i] for i in range(4)]
    assert all(image.mode == "RGB" and image.size == (20, 16) for image, _ in items)
    assert sorted(label for _, label in items) == [0, 0, 0, 0, 1, 1, 1, 1]


def test_imagefolder_corrupt_file_is_named_or_skipped_and_counted(tmp_path):
    root = _tree(tmp_path)
    bad = root / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg" * 10)
    splits = build_datasets("imagefolder", root=root)
    with pytest.raises(CorruptImageError, match="broken.jpg"):
        for index in range(len(splits.train)):
            splits.train[index]
    with pytest.raises(DataError, match="broken.jpg"):
        build_datasets("imagefolder", root=root, options={"verify": True})
    skipping = build_datasets("imagefolder", root=root, options={"skip_corrupt": True})
    assert skipping.skipped == 1 and skipping.skipped_files == (str(bad),)
    assert len(skipping.train) == 4
    assert all(skipping.train[i][0].mode == "RGB" for i in range(4))


def test_imagefolder_class_mismatch_and_missing_folders_are_clear(tmp_path):
    with pytest.raises(DataError, match=r"only in train: \['dog'\], only in val: \['wolf'\]"):
        build_datasets("imagefolder", root=_tree(tmp_path / "a", val_classes=("cat", "wolf")))
    root = tmp_path / "b"
    _save(root / "train" / "cat" / "a.jpg", (1, 2, 3))
    with pytest.raises(DataError, match=str(root / "val")):
        build_datasets("imagefolder", root=root)
    with pytest.raises(DataError, match="needs a root"):
        build_datasets("imagefolder")
    with pytest.raises(DataError, match="does not exist"):
        build_datasets("imagefolder", root=tmp_path / "nowhere")


# --- cifar --------------------------------------------------------------------------------------------------


def _cifar_batch(path: Path, labels: list[int], label_key: str) -> None:
    data = np.zeros((len(labels), 3072), dtype=np.uint8)
    data[:, :1024] = 255  # red plane full: every image is pure red
    data[:, 1024 + 33] = np.array(labels, dtype=np.uint8)  # green at pixel (row 1, col 1) encodes the label
    with open(path, "wb") as handle:
        pickle.dump({"data": data, label_key: labels}, handle)


def test_cifar_offline_without_files_names_the_folder_and_the_download(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py") as err:
        build_datasets("cifar10", root=tmp_path)
    assert "cifar-10-python.tar.gz" in str(err.value) and str(tmp_path) in str(err.value)
    with pytest.raises(DataError, match="cifar-100-python"):
        build_datasets("cifar100", root=tmp_path)


def test_cifar10_reads_the_pickle_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        _cifar_batch(folder / f"data_batch_{i}", [i, i + 1], "labels")
    _cifar_batch(folder / "test_batch", [9, 0, 3], "labels")
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, handle)
    splits = build_datasets("cifar10", root=tmp_path)
    assert (len(splits.train), len(splits.val), splits.num_classes) == (10, 3, 10)
    image, label = splits.val[0]
    assert image.mode == "RGB" and image.size == (32, 32) and label == 9
    assert image.getpixel((0, 0)) == (255, 0, 0)  # planes are R, G, B in that order
    assert image.getpixel((1, 1)) == (255, 9, 0)  # and rows are laid out row-major
    assert [splits.train[i][1] for i in range(10)] == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]


# --- Hugging Face -------------------------------------------------------------------------------------------


def _hf_saved(path: Path, image_column: str = "image", label_column: str = "label") -> Path:
    import datasets

    features = datasets.Features(
        {image_column: datasets.Image(), label_column: datasets.ClassLabel(names=["red", "green", "blue"])}
    )

    def split(n: int) -> datasets.Dataset:
        colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
        rows = {image_column: [Image.new("RGB", (12, 10), colors[i % 3]) for i in range(n)],
                label_column: [i % 3 for i in range(n)]}
        return datasets.Dataset.from_dict(rows, features=features)

    datasets.DatasetDict({"train": split(6), "validation": split(3)}).save_to_disk(str(path))
    return path


def test_hf_saved_dataset_loads_with_custom_columns(tmp_path):
    root = _hf_saved(tmp_path / "colors", image_column="img", label_column="colour")
    splits = build_datasets("hf", root=root, options={"image_column": "img", "label_column": "colour"})
    assert (len(splits.train), len(splits.val)) == (6, 3)
    assert splits.class_names == ("red", "green", "blue") and splits.num_classes == 3
    image, label = splits.train[4]
    assert image.mode == "RGB" and image.size == (12, 10)
    assert label == 1 and image.getpixel((0, 0)) == (0, 255, 0)
    with pytest.raises(DataError, match=r"no column 'image' in split 'train' \(columns: img, colour\)"):
        build_datasets("hf", root=root, options={"label_column": "colour"})
    with pytest.raises(DataError, match=r"no split 'val' .*splits: train, validation"):
        build_datasets("hf", root=root, options={"image_column": "img", "label_column": "colour", "val_split": "val"})


def test_every_data_kind_has_one_builder_and_one_options_type():
    """The kinds are listed once (zoo.config.tasks.KINDS_BY_TASK); zoo.data's per-kind tables cover exactly those."""
    from zoo.config.tasks import DATA_KINDS, DENSE_KINDS
    from zoo.data.datasets import _BUILDERS
    from zoo.data.dense.build import DENSE_OPTIONS
    from zoo.data.options import OPTIONS_BY_KIND

    assert set(_BUILDERS) == set(OPTIONS_BY_KIND) == set(DATA_KINDS) - set(DENSE_KINDS)
    assert set(DENSE_OPTIONS) == set(DENSE_KINDS)
