"""The embedded YOLO-class profiles: what planner/data/yolo_profiles.py derives, with sources, and sane in shape."""
from __future__ import annotations

import json
from importlib import resources

import pytest

from planner.data import yolo_profiles
from planner.profiles import DEFAULT_MODEL, load_profiles

GPUS = tuple(yolo_profiles.RESNET50_OFFLINE)


def test_the_committed_files_are_what_the_derivation_writes():
    """Edit the derivation, not the files: every file is regenerated and compared."""
    folder = resources.files("planner.data").joinpath("profiles")
    for name, doc in yolo_profiles.all_profiles().items():
        assert folder.joinpath(name).read_text() == yolo_profiles.render(doc), name


def test_every_gpu_has_every_detector_size_at_both_resolutions_and_a_segmenter():
    table = load_profiles()
    for gpu in GPUS:
        for res in ("640", "1280x720"):
            for size in "nsmlx":
                assert (f"yolov8{size}-{res}", gpu) in table
            assert (f"yolov8m-seg-{res}", gpu) in table
    assert (DEFAULT_MODEL, "T4") in table


def test_published_anchors_are_kept_and_every_figure_says_where_it_comes_from():
    table = load_profiles()
    assert table[("yolov8m-640", "T4")].batches[0].mean_ms == 5.86
    assert table[("yolov8x-640", "A100")].batches[0].mean_ms == 3.53
    for (model, gpu), prof in table.items():
        if model.startswith("yolov8"):
            assert prof.origin.kind == "derived" and prof.origin.date and len(prof.origin.sources) >= 4
            assert "yolo_profiles.py" in prof.origin.derivation


@pytest.mark.parametrize("gpu", GPUS)
def test_bigger_models_and_frames_are_slower_and_batches_pay_less_per_image(gpu):
    table = load_profiles()
    for res in ("640", "1280x720"):
        t1 = [table[(f"yolov8{s}-{res}", gpu)].batches[0].p50_ms for s in "nsmlx"]
        assert t1 == sorted(t1) and len(set(t1)) == 5
    for size in "nsmlx":
        small, big = table[(f"yolov8{size}-640", gpu)], table[(f"yolov8{size}-1280x720", gpu)]
        assert big.batches[0].p50_ms > small.batches[0].p50_ms
        per_image = [b.p50_ms / b.batch_size for b in small.batches]
        assert per_image == sorted(per_image, reverse=True)


def test_faster_gpus_by_mlperf_are_faster_here():
    table = load_profiles()
    order = sorted(GPUS, key=lambda g: yolo_profiles.RESNET50_OFFLINE[g])
    t1 = [table[("yolov8m-640", g)].batches[0].p50_ms for g in order]
    assert t1 == sorted(t1, reverse=True)
    doc = json.loads(resources.files("planner.data").joinpath("profiles/yolov8m-640-H100.json").read_text())
    assert "w = 1.38" in doc["origin"]["derivation"]
