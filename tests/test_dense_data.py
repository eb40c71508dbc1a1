"""Dense-prediction data (zoo.data.dense) and metrics (zoo.training.dense_metrics).

The scattered-digits task is checked for determinism and for targets that agree with each other (boxes tight around
the mask pixels, mask classes equal to box labels); tiny COCO and VOC folders are written here and read back; each
bad input raises `DenseDataError` naming the file; perfect predictions score 1.0 and worse ones less.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from zoo.config.typed import ConfigError
from zoo.data.dense import (
    IGNORE_INDEX,
    NUM_CLASSES,
    CocoDetectionData,
    DenseDataError,
    ScatteredDigits,
    VocSegmentationData,
    collate_detection,
    collate_segmentation,
)
from zoo.data.dense.scattered import _digit_pool
from zoo.training.dense_metrics import (
    detection_metric,
    detection_summary,
    segmentation_metric,
    segmentation_summary,
)

# --- scattered digits ---------------------------------------------------------------------------------------


def _same(a, b) -> bool:
    (image_a, target_a), (image_b, target_b) = a, b
    return torch.equal(image_a, image_b) and all(
        torch.equal(torch.as_tensor(target_a[k]), torch.as_tensor(target_b[k])) for k in target_a)


def test_scattered_is_deterministic_per_seed_and_index():
    first, again, other = ScatteredDigits("train", seed=0), ScatteredDigits("train", seed=0), ScatteredDigits(
        "train", seed=1)
    for i in (0, 7, 1023):
        assert _same(first[i], again[i])
    assert _same(first[5], first[5])  # reading other items in between changes nothing
    assert not any(_same(first[i], other[i]) for i in range(5))
    assert not _same(first[0], ScatteredDigits("val", seed=0)[0])


def test_scattered_targets_agree_with_each_other():
    data = ScatteredDigits("train", seed=3, size=64)
    counts = []
    for i in range(len(data)):
        image, target = data[i]
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        boxes, labels, masks, semantic = target["boxes"], target["labels"], target["masks"], target["semantic"]
        assert labels.dtype == torch.int64 and semantic.dtype == torch.int64 and semantic.shape == (64, 64)
        assert ((labels >= 1) & (labels <= 10)).all()
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 64).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        assert int(masks.sum(0).max()) <= 1  # instance masks never overlap
        assert set(semantic.unique().tolist()) == {0, *labels.tolist()}
        for box, label, mask in zip(boxes, labels, masks):
            rows, cols = torch.nonzero(mask, as_tuple=True)
            tight = torch.tensor([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=torch.float32)
            assert torch.equal(box.as_subclass(torch.Tensor), tight)
            assert (semantic[mask.bool()] == label).all()
        counts.append(len(labels))
    assert 1 <= min(counts) and max(counts) <= 4 and len(set(counts)) > 1


def test_scattered_splits_use_disjoint_digit_images_and_documented_sizes():
    train_pool, val_pool = _digit_pool("train")[0], _digit_pool("val")[0]
    assert (len(train_pool), len(val_pool)) == (1437, 360)
    seen = {image.tobytes() for image in train_pool}
    assert not any(image.tobytes() in seen for image in val_pool)
    assert (len(ScatteredDigits("train")), len(ScatteredDigits("val"))) == (1024, 256)
    assert NUM_CLASSES == 11


@pytest.mark.parametrize("kwargs, named", [
    ({"digits_per_image": (0, 2)}, "digits_per_image"), ({"canvas": 16}, "canvas"),
    ({"scale": (3, 2)}, "scale"), ({"size": 0}, "size"), ({"split": "test"}, "split"),
])
def test_scattered_rejects_bad_settings(kwargs, named):
    with pytest.raises(DenseDataError, match=named):
        ScatteredDigits(**kwargs)


def test_scattered_collates_and_transforms_move_boxes_with_the_image():
    loader = DataLoader(ScatteredDigits("val", size=6), batch_size=3, collate_fn=collate_detection)
    images, targets = next(iter(loader))
    assert len(images) == len(targets) == 3 and images[0].shape == (3, 64, 64)
    stacked, masks = collate_segmentation([ScatteredDigits("val", size=6)[i] for i in range(3)])
    assert stacked.shape == (3, 3, 64, 64) and masks.shape == (3, 64, 64) and masks.dtype == torch.int64
    plain, big = ScatteredDigits("val", size=2)[1], ScatteredDigits("val", size=2, transforms=v2.Resize(128))[1]
    assert big[0].shape == (3, 128, 128) and big[1]["semantic"].shape == (128, 128)
    assert torch.allclose(big[1]["boxes"], plain[1]["boxes"] * 2)
    assert set(big[1]["semantic"].unique().tolist()) == set(plain[1]["semantic"].unique().tolist())


# --- COCO ---------------------------------------------------------------------------------------------------


def _coco(root: Path, *, annotations=None, text: str | None = None) -> Path:
    """Three images (40x30, 50x40, 32x32; the last without objects) and categories 1, 3, 7 (gaps, as COCO's)."""
    sizes = {1: (40, 30), 2: (50, 40), 3: (32, 32)}
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    for image_id, size in sizes.items():
        Image.new("RGB", size, (30 * image_id, 0, 0)).save(root / "val2017" / f"{image_id:012d}.png")
    default = [
        {"id": 10, "image_id": 1, "category_id": 3, "bbox": [2, 3, 10, 5], "area": 50, "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": 7, "bbox": [20, 10, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 12, "image_id": 2, "category_id": 1, "bbox": [0, 0, 50.5, 40], "area": 2000, "iscrowd": 0},
        {"id": 13, "image_id": 2, "category_id": 3, "bbox": [5, 5, 5, 5], "area": 25, "iscrowd": 1},
    ]
    data = {
        "images": [{"id": i, "file_name": f"{i:012d}.png", "width": w, "height": h} for i, (w, h) in sizes.items()],
        "annotations": default if annotations is None else annotations,
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 7, "name": "train"}],
    }
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data) if text is None else text)
    return root


def test_coco_folder_loads_with_contiguous_labels(tmp_path):
    data = CocoDetectionData(_coco(tmp_path), "val")
    assert len(data) == 3 and data.num_classes == 4 and data.class_names == ("background", "person", "car", "train")
    image, target = data[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32 and target["image_id"] == 1
    assert target["boxes"].tolist() == [[2, 3, 12, 8], [20, 10, 40, 30]]
    assert target["labels"].tolist() == [2, 3]
    image, target = data[1]  # the crowd box is left out; 50.5 px wide is within tolerance and clamped to 50
    assert target["boxes"].tolist() == [[0, 0, 50, 40]] and target["labels"].tolist() == [1]
    assert data[2][1]["boxes"].shape == (0, 4) and data[2][1]["labels"].shape == (0,)
    assert CocoDetectionData(tmp_path, "val", keep_crowd=True)[1][1]["iscrowd"].tolist() == [0, 1]
    resized = CocoDetectionData(tmp_path, "val", size=60)[0]
    assert resized[0].shape == (3, 60, 60) and resized[1]["boxes"].tolist()[0] == [3, 6, 18, 16]


def _box(x, y, w, h):
    return [{"id": 99, "image_id": 1, "category_id": 3, "bbox": [x, y, w, h], "area": 1, "iscrowd": 0}]


@pytest.mark.parametrize("setup, named, says", [
    (lambda r: (_coco(r), (r / "annotations" / "instances_val2017.json").unlink()), "instances_val2017.json",
     "annotation file missing"),
    (lambda r: _coco(r, text='{"images": [1,\n  2 3]}'), "instances_val2017.json", "line 2 column 5"),
    (lambda r: _coco(r, text="[]"), "instances_val2017.json", "images, annotations and categories"),
    (lambda r: _coco(r, annotations=_box(35, 2, 10, 5)), "instances_val2017.json", "image 1.*35, 2, 10, 5"),
    (lambda r: _coco(r, annotations=_box(2, -3, 10, 5)), "instances_val2017.json", "outside the 40x30 image"),
    (lambda r: _coco(r, annotations=_box(2, 3, -1, 5)), "instances_val2017.json", "w, h >= 0"),
    (lambda r: _coco(r, annotations=[{**_box(1, 1, 2, 2)[0], "category_id": 5}]), "instances_val2017.json",
     "category_id 5"),
    (lambda r: (_coco(r), (r / "val2017" / "000000000002.png").unlink()), "val2017", "000000000002.png"),
])
def test_coco_bad_input_names_the_file(tmp_path, setup, named, says):
    setup(tmp_path)
    with pytest.raises(DenseDataError, match=f"{named}.*{says}") as caught:
        CocoDetectionData(tmp_path, "val")
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, ConfigError)  # the CLI's exit 2
    assert "\n" not in str(caught.value) and str(tmp_path) in str(caught.value)


def test_coco_missing_image_folder(tmp_path):
    _coco(tmp_path)
    for path in (tmp_path / "val2017").iterdir():
        path.unlink()
    (tmp_path / "val2017").rmdir()
    with pytest.raises(DenseDataError, match="val2017: image folder missing"):
        CocoDetectionData(tmp_path, "val")


# --- VOC ----------------------------------------------------------------------------------------------------


def _voc(root: Path, ids=("2007_000032", "2007_000033")) -> Path:
    voc = root / "VOCdevkit" / "VOC2012"
    for folder in ("ImageSets/Segmentation", "JPEGImages", "SegmentationClass"):
        (voc / folder).mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(f"{i}\n" for i in ids))
    for n, image_id in enumerate(ids):
        Image.new("RGB", (24, 16), (100, 50 * n, 0)).save(voc / "JPEGImages" / f"{image_id}.jpg")
        mask = np.zeros((16, 24), dtype=np.uint8)
        mask[4:12, 6:18], mask[4, 6:18] = 15 + n, IGNORE_INDEX  # a person (or pottedplant) with a border row
        png = Image.fromarray(mask)
        png.putpalette([value for index in range(256) for value in (index, 255 - index, 0)])  # now mode "P"
        png.save(voc / "SegmentationClass" / f"{image_id}.png")
    return root


def test_voc_folder_loads_class_indices(tmp_path):
    data = VocSegmentationData(_voc(tmp_path), "train")
    assert len(data) == 2 and data.num_classes == 21 and data.class_names[15] == "person"
    image, target = data[1]
    assert image.shape == (3, 16, 24) and image.dtype == torch.float32 and float(image.max()) <= 1.0
    semantic = target["semantic"]
    assert semantic.dtype == torch.int64 and semantic.shape == (16, 24)
    assert set(semantic.unique().tolist()) == {0, 16, IGNORE_INDEX}
    assert int((semantic == 16).sum()) == 7 * 12 and int((semantic == IGNORE_INDEX).sum()) == 12
    resized = VocSegmentationData(tmp_path, "train", size=32)[0][1]["semantic"]
    assert resized.shape == (32, 32) and set(resized.unique().tolist()) == {0, 15, IGNORE_INDEX}


def _drop(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize("setup, says", [
    (lambda r: r.mkdir(exist_ok=True), "VOC2012: folder missing"),
    (lambda r: _drop(_voc(r) / "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt"), "train.txt: split file missing"),
    (lambda r: (_voc(r) / "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt").write_text("\n"), "lists no image"),
    (lambda r: _drop(_voc(r) / "VOCdevkit/VOC2012/SegmentationClass/2007_000033.png"),
     "SegmentationClass: 1 file.*2007_000033.png"),
    (lambda r: _drop(_voc(r) / "VOCdevkit/VOC2012/JPEGImages/2007_000032.jpg"), "JPEGImages: 1 file.*000032.jpg"),
])
def test_voc_missing_files_are_named(tmp_path, setup, says):
    setup(tmp_path)
    with pytest.raises(DenseDataError, match=says):
        VocSegmentationData(tmp_path, "train")
    with pytest.raises(DenseDataError, match="unknown split 'test'"):
        VocSegmentationData(tmp_path, "test")


def test_voc_colour_mask_is_named_when_read(tmp_path):
    _voc(tmp_path)
    bad = tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2007_000033.png"
    Image.new("RGB", (24, 16), (128, 0, 0)).save(bad)
    data = VocSegmentationData(tmp_path, "train")
    data[0]
    with pytest.raises(DenseDataError, match="2007_000033.png: mask mode 'RGB'"):
        data[1]


# --- metrics ------------------------------------------------------------------------------------------------


def _detections(boxes, labels):
    boxes = torch.tensor(boxes, dtype=torch.float32)
    return {"boxes": boxes, "labels": torch.tensor(labels), "scores": torch.ones(len(boxes))}


def test_detection_metric_perfect_then_shifted():
    truth = [{"boxes": torch.tensor([[2.0, 3, 22, 33], [30, 30, 60, 50]]), "labels": torch.tensor([2, 5])}]
    perfect = detection_metric()
    perfect.update([_detections([[2, 3, 22, 33], [30, 30, 60, 50]], [2, 5])], truth)
    scores = detection_summary(perfect)
    assert scores["map"] == pytest.approx(1.0) and scores["map_50"] == pytest.approx(1.0)
    shifted = detection_metric()  # the first box moved 4 px right: IoU 480/720 = 0.67, a hit at .5, a miss at .75
    shifted.update([_detections([[6, 3, 26, 33], [30, 30, 60, 50]], [2, 5])], truth)
    worse = detection_summary(shifted)
    assert worse["map_50"] == pytest.approx(1.0) and worse["map"] < 0.8 and worse["map_75"] == pytest.approx(0.5)
    assert all(isinstance(value, float) for value in worse.values())


def test_segmentation_metric_perfect_wrong_and_ignored():
    target = torch.tensor([[[0, 0, 1, 1], [0, 2, 2, IGNORE_INDEX]]])
    perfect = segmentation_metric(3)
    perfect.update(target.clamp(max=2) * (target != IGNORE_INDEX), target)  # any class on the ignored pixel
    assert segmentation_summary(perfect) == {"miou": pytest.approx(1.0)}
    wrong = segmentation_metric(3)
    logits = torch.nn.functional.one_hot(torch.tensor([[[0, 0, 1, 1], [0, 2, 1, 0]]]), 3).permute(0, 3, 1, 2)
    wrong.update(logits.float(), target)  # one pixel of class 2 called 1: IoUs 1, 2/3, 1/2
    assert segmentation_summary(wrong)["miou"] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
