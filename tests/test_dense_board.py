"""Whole detectors and segmenters on the architecture board: the deployable graphs, their rows, the int8 check's
labels, and the board section from a hand-made store."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.measure.backends.common import top1_agreement
from zoo.report.architectures import board_architectures, dense_backends, dense_labels, dense_parts, write_board
from zoo.measure.store import Measurement, MeasurementStore
from zoo.measure.suite import build_model
from zoo.models.dense.deployable import DENSE_HEADS, dense_graph
from zoo.models.export import prepare_for_export


def test_the_detector_graph_ends_at_the_head_with_coco_classes() -> None:
    graph = build_model('mobilenetv2_100[head="ssdlite"]', {"head": "ssdlite"}).eval()
    with torch.no_grad():
        out = graph(torch.rand(1, 3, 320, 320))
    # 6 boxes per location on maps of 20, 10, 5, 3, 2, 1 (strides 16 ... 512 at 320 px): 6 * 539 anchors,
    # 81 class logits (80 + background) then 4 box offsets
    assert out.shape == (1, 6 * (400 + 100 + 25 + 9 + 4 + 1), 81 + 4)
    assert graph.class_labels(out).shape == (1, 3234)
    same = build_model('mobilenetv2_100[head="ssdlite"]', {"head": "ssdlite"}).eval()
    with torch.no_grad():
        assert torch.equal(same(torch.ones(1, 3, 320, 320)), graph(torch.ones(1, 3, 320, 320)))  # seeded weights


def test_the_segmenter_graph_gives_voc_logits_at_the_input_size() -> None:
    graph = dense_graph("mobilevit_xxs", "deeplabv3").eval()
    with torch.no_grad():
        out = graph(torch.rand(1, 3, 128, 128))  # any size runs; the board exports at 512
    assert out.shape == (1, 21, 128, 128) and graph.class_labels(out).shape == (1, 128, 128)
    assert DENSE_HEADS["deeplabv3"].resolution == 512 and DENSE_HEADS["ssdlite"].resolution == 320


@pytest.mark.slow
def test_a_fused_family_is_fused_inside_the_dense_graph_and_keeps_its_outputs() -> None:
    graph = dense_graph("fastvit_t8", "ssdlite").eval()
    prepared = prepare_for_export(graph, 320)
    x = torch.rand(1, 3, 320, 320)
    with torch.no_grad():
        assert torch.allclose(prepared(x), graph(x), atol=1e-4)
    norms = lambda m: sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.body["backbone"].features.modules())
    assert norms(prepared) < norms(graph)  # the backbone's train-time branches (conv + BN) folded


def test_the_int8_check_compares_per_anchor_labels_of_a_dense_graph() -> None:
    graph = dense_graph("mobilenetv2_100", "ssdlite").eval()
    images = torch.rand(2, 3, 320, 320)

    def run(array: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return graph(torch.from_numpy(array)).numpy()

    assert top1_agreement(run, graph, images) == 1.0

    def shuffled(array: np.ndarray) -> np.ndarray:  # every anchor's logits rolled by one class: no label agrees
        out = run(array)
        out[..., :81] = np.roll(out[..., :81], 1, axis=-1)
        return out

    assert top1_agreement(shuffled, graph, images) == 0.0


def test_dense_rows_are_named_only_and_at_their_heads_sizes() -> None:
    assert len(board_architectures()) == 29 and not any("head=" in a.label for a in board_architectures())
    rows = board_architectures(dense_labels())
    assert [(a.label, a.resolution) for a in rows[:1] + rows[-1:]] == [
        ('mobilenetv2_100[head="ssdlite"]', 320), ('mobilevit_s[head="deeplabv3"]', 512)]
    assert len(rows) == 8 and dense_parts(rows[0].label) == ("mobilenetv2_100", "ssdlite")
    assert dense_parts("mobilevit_s[patch_size=[3, 3, 3]]") is None and dense_parts("mobilevit_s") is None


def _rec(model: str, backend: str, ms: float, resolution: int, **extra) -> Measurement:
    return Measurement(model=model, resolution=resolution, backend=backend, machine_id="m1", status="ok",
                       median_ms=ms, median_of_means_ms=ms, p90_ms=ms * 1.1, trimmed_mean_ms=ms, gmacs=1.0,
                       params=2_000_000, machine={"cpu_model": "Test CPU", "cpus": 2, "os": "Linux"}, **extra)


def test_the_board_shows_dense_rows_in_their_own_section_beside_the_papers(tmp_path: Path) -> None:
    backend = dense_backends()[0]
    store = MeasurementStore(tmp_path / "measurements.jsonl")
    classifiers = {"mobilenetv2_100": 10.0, "mobilevit_xxs": 20.0, "mobilevit_xs": 30.0}
    whole = {"mobilenetv2_100": 40.0, "mobilevit_xxs": 90.0, "mobilevit_xs": 70.0}  # xxs and xs swap
    for name, ms in classifiers.items():
        store.append(_rec(name, backend, ms, 224))
    for name, ms in whole.items():
        store.append(_rec(f'{name}[head="ssdlite"]', backend, ms, 320, peak_memory_mb=ms / 10,
                          memory_kind="planned arena"))
    text = write_board(tmp_path, store.path).read_text()
    section = text[text.index("## Whole detectors and segmenters"):]
    assert "| mobilevit_xs    | 320   | 2.00       | 2.7              |" in section and "24.8 mAP" in section
    assert "memory MB (executorch-xnnpack-1t)" in section and "| 7.0 (arena)" in section  # xs: its arena
    # 2 concordant pairs, 1 discordant of 3: τ = 1/3
    assert "ssdlite on executorch-xnnpack-1t: the backbones' classifier latency order carries to the whole model " \
           "with Kendall τ = 0.33 (3 backbones timed as both)" in section
    front = text[text.index("## Headline"):text.index("## Conclusions")]
    assert "head=" not in front  # the classifiers' fronts and rankings never see the dense rows
