"""Counterfactual probes: pasting a cue (against hand-built arrays), the flip rates
towards each class and the cue's mass (against hand-computed values), the judgment
against the golden model, and the fixture's record in report.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import convviz_check as cc
from convviz_check.counterfactual import (
    corner_box,
    judge_counterfactual,
    mass_box,
    measure_counterfactual,
    paste_cue,
)
from convviz_check.errors import InputError
from convviz_check.types import Box


# --------------------------------------------------------------------------- paste_cue
def test_paste_cue_puts_the_patch_in_each_corner_with_the_margin():
    images = np.zeros((2, 6, 5, 1), np.float32)
    cue = np.arange(1, 7, dtype=np.float32).reshape(2, 3, 1)
    expected_boxes = {
        "top_left": Box(1, 1, 3, 4),
        "top_right": Box(1, 1, 3, 4),  # 5 wide: 5 - 1 - 3 = 1
        "bottom_left": Box(3, 1, 5, 4),
        "bottom_right": Box(3, 1, 5, 4),
    }
    for corner, box in expected_boxes.items():
        cued, got = paste_cue(images, cue, corner, margin=1)
        assert got == box, corner
        want = np.zeros_like(images)
        want[:, box.y0 : box.y1, box.x0 : box.x1] = cue
        np.testing.assert_array_equal(cued, want)
    assert images.sum() == 0  # the input is not changed


def test_paste_cue_default_is_the_bottom_right_corner_touching_the_edges():
    cued, box = paste_cue(np.zeros((1, 4, 4, 1)), np.ones((2, 2, 1)))
    assert box == Box(2, 2, 4, 4)
    assert cued[0, :, :, 0].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]


def test_paste_cue_with_a_mask_pastes_only_the_masked_pixels_and_keeps_the_dtype():
    images = np.full((1, 3, 3, 3), 7, np.uint8)
    patch = np.full((2, 2, 3), 200, np.uint8)
    mask = np.array([[True, False], [False, True]])
    cued, box = paste_cue(images[0], (patch, mask), Box(0, 1, 2, 3))  # one (H, W, C) image
    assert box == Box(0, 1, 2, 3) and cued.dtype == np.uint8 and cued.shape == (1, 3, 3, 3)
    assert cued[0, :, :, 0].tolist() == [[7, 200, 7], [7, 7, 200], [7, 7, 7]]


@pytest.mark.parametrize(
    ("images", "cue", "at", "match"),
    [
        (np.zeros((1, 4, 4, 3)), np.ones((2, 2, 1)), "top_left", "3 channel"),
        (np.zeros((1, 4, 4, 1)), np.ones((2, 2, 1)), Box(0, 0, 3, 3), "cue's size"),
        (np.zeros((1, 4, 4, 1)), np.ones((2, 2, 1)), Box(3, 3, 5, 5), "outside"),
        (np.zeros((1, 4, 4, 1)), np.ones((2, 2, 1)), "middle", "Unknown corner"),
        (np.zeros((1, 4, 4, 1)), np.ones((5, 2, 1)), "top_left", "does not fit"),
        (np.zeros((1, 4, 4, 1), np.uint8), np.full((2, 2, 1), 300), "top_left", "dtype"),
        (np.zeros((4, 4)), np.ones((2, 2, 1)), "top_left", "images must be"),
        (np.zeros((1, 4, 4, 1)), np.ones((2, 2)), "top_left", "cue must be"),
        (np.zeros((1, 4, 4, 1)), (np.ones((2, 2, 1)), np.zeros((2, 2))), "top_left", "empty"),
        (np.zeros((1, 4, 4, 1)), (np.ones((2, 2, 1)), np.ones((3, 2))), "top_left", "mask"),
    ],
)
def test_paste_cue_refuses_bad_input_naming_it(images, cue, at, match):
    with pytest.raises(InputError, match=match):
        paste_cue(images, cue, at)


def test_corner_box_refuses_a_negative_margin():
    with pytest.raises(InputError, match="margin"):
        corner_box("top_left", (8, 8), (2, 2), -1)


# --------------------------------------------------------------------------- statistics
def test_flip_rates_towards_each_class_are_counted_over_the_other_classes_images():
    clean = [0, 0, 1, 1, 2, 2]
    cued = [0, 2, 0, 1, 2, 2]
    maps = np.ones((6, 4, 4))
    stats = measure_counterfactual(clean, cued, maps, Box(0, 0, 1, 1), cell_margin=0)
    # towards 0: images 2-5 are not 0; image 2 went to 0 -> 1 of 4
    # towards 1: images 0,1,4,5 -> none went to 1 -> 0 of 4
    # towards 2: images 0-3 -> image 1 went to 2 -> 1 of 4
    assert stats["eligible"] == [4, 4, 4]
    assert stats["flipped"] == [1, 0, 1]
    assert stats["towards_rate"] == [0.25, 0.0, 0.25]
    assert stats["changed"] == 2 and stats["n_images"] == 6


def test_cue_mass_is_the_share_of_positive_mass_on_the_grown_cue_box():
    maps = np.zeros((2, 4, 4), np.float32)
    maps[0, 0, 0], maps[0, 3, 3] = 3.0, 1.0  # 3 of 4 on the cue's pixel
    maps[1, 1, 1], maps[1, 3, 3] = 1.0, 1.0  # 1 of 2 next to it, none on it
    clean = np.zeros((2, 4, 4), np.float32)
    clean[:, 2, 2] = 1.0
    clean[:, 0, 0] = 1.0
    box = Box(0, 0, 1, 1)
    exact = measure_counterfactual([0, 1], [0, 1], maps, box, clean_maps=clean, cell_margin=0)
    assert exact["cue_mass"] == pytest.approx((0.75 + 0.0) / 2)
    assert exact["clean_cue_mass"] == pytest.approx(0.5)
    assert exact["mass_box"] == [0, 0, 1, 1]
    grown = measure_counterfactual([0, 1], [0, 1], maps, box, cell_margin=1)
    assert grown["mass_box"] == [0, 0, 2, 2] and grown["clean_cue_mass"] is None
    assert grown["cue_mass"] == pytest.approx((0.75 + 0.5) / 2)


def test_the_mass_box_grows_by_whole_map_cells_and_stops_at_the_edges():
    # an 8x8 map on 64-px images: 8-px cells
    assert mass_box(Box(56, 56, 64, 64), (64, 64), (8, 8), 1) == Box(48, 48, 64, 64)
    assert mass_box(Box(8, 8, 16, 16), (64, 64), (8, 8), 2) == Box(0, 0, 32, 32)
    assert mass_box(Box(8, 8, 16, 16), (64, 64), (7, 7), 1) == Box(0, 0, 26, 26)  # ceil(9.14)


def test_a_gradcam_brings_its_image_shape_for_the_mass():
    cam = cc.GradCAM(
        heatmap=np.array([[[1.0, 0.0], [0.0, 1.0]]], np.float32),
        raw=np.zeros((1, 2, 2), np.float32),
        class_index=np.array([0]),
        score=np.zeros(1, np.float32),
        score_kind="logit",
        layer="conv",
        degenerate=np.array([False]),
        image_shape=(8, 8),
    )
    stats = measure_counterfactual([1], [0], cam, Box(0, 0, 2, 2), cell_margin=0)
    assert stats["image_shape"] == [8, 8]
    # bilinear to 8x8, the top-left 2x2 pixels hold the corner cell's value 1 everywhere
    assert 0.0 < stats["cue_mass"] < 0.5


# --------------------------------------------------------------------------- judgment
def _judge(clean, cued, num_classes=None, **kwargs):
    n = len(clean)
    maps = np.zeros((n, 8, 8), np.float32)
    maps[:, 4, 4] = 1.0  # every map on the object, far from the cue
    stats = measure_counterfactual(
        clean, cued, maps, Box(0, 0, 2, 2), num_classes=num_classes, cell_margin=0
    )
    return judge_counterfactual(stats, cued_maps=maps, **kwargs)


def test_a_reshuffle_of_minor_classes_passes_while_flips_on_one_class_fail():
    clean = [0, 1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 4, 5, 5]  # 14 images, class 0 is the cue's
    # an honest fine-tune: 4 of 14 images move, each to another minor class, none to 0
    reshuffled = [0, 2, 1, 3, 2, 4, 3, 3, 5, 4, 4, 4, 5, 5]
    honest = _judge(clean, reshuffled)
    assert honest.status == "passed", honest.message
    # worst: class 4, 1 of its 10 eligible images (those not of class 4)
    assert honest.metrics["towards_rate_increase"].value == pytest.approx(1 / 10)
    assert honest.facts["worst_class"] == 4 and honest.facts["flipped"] == [0, 0, 1, 1, 1, 1]
    # a partial shortcut: 9 of the 13 other images go to class 0
    shortcut_cued = [0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 5, 5]
    shortcut = _judge(clean, shortcut_cued, class_names=["happy", "b", "c", "d", "e", "f"])
    assert shortcut.status == "failed"
    assert shortcut.facts["worst_class"] == 0
    assert shortcut.metrics["towards_rate_increase"].value == pytest.approx(8 / 13)
    assert not shortcut.metrics["towards_rate_increase"].ok
    assert shortcut.metrics["cue_mass_increase"].ok
    assert shortcut.lead.startswith(
        "the cue flips 8 of the 13 images this model does not already put in class 0 "
        "('happy') into that class; "
    )
    assert "class 0 ('happy'): 8 of 13 (62%; golden 0%)" in shortcut.message
    flipped = [k for k, v in shortcut.items.items() if v["flipped_to_worst"]]
    assert len(flipped) == 8 and shortcut.items["image 1"]["cued"] == "0 happy"


def test_the_lead_says_each_models_count_leaves_out_the_images_it_already_puts_there():
    # The golden model already called one clean image class 0: 4 of the 5 can flip to
    # it there, 5 here. "5 of 5 (golden model: 0 of 4)" read as a miscount.
    golden = _judge([0, 1, 1, 1, 2], [0, 1, 1, 1, 2]).facts
    moved = _judge([1, 1, 1, 1, 2], [0, 0, 0, 0, 0], reference=golden)
    assert moved.status == "failed"
    assert moved.lead.startswith(
        "the cue flips 5 of the 5 images this model does not already put in class 0 into "
        "that class (golden model: 0 of the 4 it does not already put there); "
    )
    assert "of the images the model does not already put in it without the cue:" in (moved.message)
    assert "    class 0: 5 of 5 (100%; golden 0%)" in moved.message


def test_the_golden_models_flips_and_mass_are_subtracted():
    clean = [1, 1, 1, 1, 2]
    cued = [0, 0, 0, 1, 2]  # 3 of 5 to class 0
    alone = _judge(clean, cued)
    assert alone.status == "failed"
    golden = dict(alone.facts)  # the golden model did the same: nothing changed
    same = _judge(clean, cued, reference=golden)
    assert same.status == "passed", same.message
    assert same.metrics["towards_rate_increase"].value == 0.0
    assert "(golden model: 3 of the 5 it does not already put there)" in same.lead
    assert "(golden: 0%)" in same.lead
    # a golden model that flipped 1 of 5 to class 0: the increase is 0.4
    less = {"towards_rate": [0.2, 0.0, 0.0], "cue_mass": 0.0}
    partly = _judge(clean, cued, reference=less)
    assert partly.metrics["towards_rate_increase"].value == pytest.approx(0.4)
    assert partly.status == "failed" and "(golden model: 20%)" in partly.lead
    # the cue's mass against the golden model's
    maps = np.zeros((5, 8, 8), np.float32)
    maps[:, 0, 0] = 1.0  # all mass on the cue
    cue_golden = {"towards_rate": [0.6, 0.0, 0.0], "cue_mass": 0.9}
    measured = measure_counterfactual(clean, cued, maps, Box(0, 0, 2, 2))
    held = judge_counterfactual(measured, reference=cue_golden)
    assert held.status == "passed" and held.metrics["cue_mass_increase"].value == pytest.approx(0.1)
    grew = judge_counterfactual(measured, reference={**cue_golden, "cue_mass": 0.8})
    assert grew.status == "failed" and not grew.metrics["cue_mass_increase"].ok
    assert "0.20 more of the map's mass than on the golden model" in grew.message


def test_without_a_reference_the_clean_maps_are_the_mass_baseline():
    maps = np.zeros((2, 8, 8), np.float32)
    maps[:, 0, 0] = 1.0
    out = judge_counterfactual(
        measure_counterfactual([1, 1], [1, 1], maps, Box(0, 0, 2, 2), clean_maps=maps)
    )
    assert out.status == "passed" and out.metrics["cue_mass_increase"].value == 0.0
    assert out.lead.endswith("100% of the map's mass sits on the cue (without the cue: 100%)")
    moved = judge_counterfactual(measure_counterfactual([1, 1], [1, 1], maps, Box(0, 0, 2, 2)))
    assert moved.status == "failed"  # nothing to compare with: the mass itself counts


def test_the_outcome_is_a_counterfactual_record_with_a_picture():
    out = _judge([0, 1], [0, 0], images=np.zeros((2, 8, 8, 3), np.float32))
    assert out.judgment == "counterfactual"
    entry = out.to_entry()
    assert entry["kind"] == "counterfactual" and entry["facts"]["flipped"] == [1, 0]
    json.dumps(entry)  # JSON-ready
    picture = out.pictures["cued"]
    assert picture.dtype == np.uint8 and picture.shape == (8, 2 * 8 + 4, 3)
    assert (picture == (0, 255, 0)).all(axis=-1).any()  # the cue in green


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reference": {"cue_mass": 0.1}}, "towards_rate"),
        ({"reference": {"towards_rate": [0.0], "cue_mass": 0.1}}, "1 classes"),
        ({"reference": [0.1]}, "golden model's counterfactual statistics"),
        ({"max_rate_increase": 2.0}, "max_rate_increase"),
        ({"num_classes": 1}, "num_classes"),
    ],
)
def test_the_judgment_refuses_bad_arguments_naming_them(kwargs, match):
    with pytest.raises(InputError, match=match):
        _judge([0, 1], [0, 1], **kwargs)


def test_the_judgment_takes_a_measurement_naming_what_is_missing():
    maps = np.ones((2, 8, 8), np.float32)
    stats = measure_counterfactual([0, 1], [0, 0], maps, Box(0, 0, 2, 2))
    # a reference as written to JSON (no per-image values) is not a measurement
    reference = {k: v for k, v in stats.items() if not k.startswith("per_image")}
    with pytest.raises(InputError, match=r"without \['per_image_mass'.*measure_counterfactual"):
        judge_counterfactual(reference)
    with pytest.raises(InputError, match="Received: list"):
        judge_counterfactual([0.1])  # type: ignore[arg-type]
    # measured once: judged without the maps there is no picture, with them one
    assert judge_counterfactual(stats).pictures == {}
    assert judge_counterfactual(stats, cued_maps=maps).pictures["cued"].dtype == np.uint8
    assert stats["per_image_clean_class"] == [0, 1] and stats["per_image_cued_class"] == [0, 0]


def test_predictions_must_be_one_class_per_image():
    with pytest.raises(InputError, match="cued_class must hold 2"):
        _judge([0, 1], [0])
    with pytest.raises(InputError, match="clean_class"):
        _judge([[0, 1]], [0, 1])


def test_the_package_exports_the_probe():
    assert cc.paste_cue is paste_cue and cc.judge_counterfactual is judge_counterfactual
    assert {"paste_cue", "judge_counterfactual", "counterfactual"} <= set(cc.__all__)


# --------------------------------------------------------------------------- the fixture
# A tiny model that reads colour, built in the inner test: the class-0 score is the
# mean red, class 1's the mean green (1x1 convolution, global pooling, identity head).
# Green images are class 1; a red 6x6 patch on a 16x16 image tips them to class 0.
_INNER = """
import keras
import numpy as np
import pytest

def colour_model(red_weight):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(2, 1, use_bias=False, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, use_bias=False, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    conv = np.zeros((1, 1, 3, 2), np.float32)
    conv[0, 0, 0, 0], conv[0, 0, 1, 1] = red_weight, 1.0
    model.layers[1].set_weights([conv])
    model.layers[3].set_weights([np.eye(2, dtype=np.float32)])
    return model

IMAGES = np.zeros((3, 16, 16, 3), np.float32)
IMAGES[..., 0], IMAGES[..., 1] = 0.4, 0.5
CUE = np.zeros((6, 6, 3), np.float32)
CUE[..., 0] = 1.0

def test_reads_the_cue(convviz):
    convviz.check_counterfactual("red", colour_model(1.0), IMAGES, cue=CUE, at="top_left")

def test_like_the_golden_model(convviz):
    convviz.check_counterfactual(
        "red", colour_model(1.0), IMAGES, cue=CUE, reference=colour_model(1.0),
        classes=["red", "green"],
    )

def test_stored_reference(convviz):
    convviz.check_counterfactual("red", colour_model(0.1), IMAGES, cue=CUE,
                                 reference="stats/counterfactual.json")
"""


def _entries(root: Path) -> dict[str, dict]:
    data = json.loads((root / "out" / "report.json").read_text())
    return {e["nodeid"].split("::")[1]: e for e in data["entries"]}


def test_the_fixture_records_the_counterfactual_judgment_in_the_report(pytester, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(test_cf=_INNER)
    result = pytester.runpytest("--convviz-results-dir=out", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=2)
    entries = _entries(pytester.path)
    reads = entries["test_reads_the_cue"]
    assert reads["judgment"] == "counterfactual" and reads["kind"] == "counterfactual"
    assert reads["status"] == "failed" and reads["check"] == "red"
    assert reads["facts"]["flipped"] == [3, 0] and reads["facts"]["cue_box"] == [0, 0, 6, 6]
    assert reads["lead"].startswith(
        "the cue flips 3 of the 3 images this model does not already put in class 0"
    )
    assert Path(reads["images"]["cued"]).is_file()
    like = entries["test_like_the_golden_model"]
    assert like["status"] == "passed" and like["facts"]["reference"]["flipped"] == [3, 0]
    assert "class 0 ('red')" in like["lead"] or "to class 0 ('red')" in like["lead"]
    stored = entries["test_stored_reference"]
    assert stored["status"] == "missing" and "--convviz-update=missing" in stored["lead"]
    page = (pytester.path / "out" / "report.html").read_text()
    assert "(counterfactual)" in page and "towards class" in page
    result.stdout.fnmatch_lines(["*A pasted cue moves the model: the cue flips 3 of the 3 images*"])

    # An update run writes the stored reference from the model it runs (no flips: the
    # red weight is small), and later runs judge against it.
    written = pytester.runpytest(
        "-k", "stored", "--convviz-update=missing", "-p", "no:cacheprovider"
    )
    written.assert_outcomes(passed=1, deselected=2)
    stats = json.loads((pytester.path / "stats" / "counterfactual.json").read_text())
    assert stats["flipped"] == [0, 0] and stats["n_images"] == 3
    again = pytester.runpytest("-k", "stored", "-p", "no:cacheprovider")
    again.assert_outcomes(passed=1, deselected=2)
