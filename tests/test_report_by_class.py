"""A retrain heatmap check in the report: images grouped by the golden's class, the
failing images first (in report.json, report.html and the pictures), each image's
object box and the suspect regions drawn on its tile."""

from __future__ import annotations

import json
from pathlib import PurePosixPath

import numpy as np
import pytest

from convviz_check.artifacts import Artifact
from convviz_check.checks import CheckRequest, Settings, attach_boxes, run_check
from convviz_check.regions import attach_regions
from convviz_check.report import classes
from convviz_check.report.checks import write_report
from convviz_check.report.pictures import (
    BOX_COLOUR,
    REGION_COLOUR,
    draw_marks,
    inputs_thumbnail,
    under_tiles,
)
from convviz_check.types import Box, GradCAM

ITEMS = {
    "image 0": {"spearman": 0.95, "class_index": [0, 0], "pointing": [True, True]},
    "image 1": {"spearman": 0.40, "class_index": [0, 0], "pointing": [True, True]},
    "image 2": {"spearman": 0.99, "class_index": [1, 2], "pointing": [True, True]},
    "image 3": {"spearman": 0.90, "class_index": [1, 1], "pointing": [True, False]},
    "image 4": {"spearman": 0.97, "class_index": [1, 1], "pointing": [True, True]},
}


def test_failing_images_come_first_then_the_least_alike():
    # image 2 changed class (first), image 3 lost its hit, then by rank correlation
    assert classes.worst_first(ITEMS) == [2, 3, 1, 0, 4]
    assert classes.failing(ITEMS["image 2"]) == ["class 1 \u2192 2"]
    assert classes.failing(ITEMS["image 3"]) == ["pointing hit lost"]
    drop = {"box_energy_drop": 0.3}
    assert classes.failing(drop, {"box_energy_drop": {"bound": 0.25}}) == [
        "box energy dropped 0.30"
    ]
    assert classes.failing(drop, {"box_energy_drop": {"bound": 0.5}}) == []
    # more than 8 images: the pictures show the 8 worst, the unlisted ones after
    assert classes.picture_order({"per_item": ITEMS}, None, 12) == [2, 3, 1, 0, 4, 5, 6, 7]
    assert classes.picture_order({}, None, 12) is None


def test_images_are_grouped_by_the_golden_class_without_a_class_table():
    groups = classes.class_groups({"per_item": ITEMS})
    assert [g["class"] for g in groups] == [1, 0]  # class 1 holds the two failing images
    assert groups[0]["images"] == ["image 2", "image 3", "image 4"]
    assert groups[0]["failing"] == {
        "image 2": ["class 1 \u2192 2"],
        "image 3": ["pointing hit lost"],
    }
    assert groups[1] == {"class": 0, "n": 2, "images": ["image 1", "image 0"], "failing": {}}
    order = classes.by_class_order({"per_item": ITEMS})
    assert order == ["image 2", "image 3", "image 4", "image 1", "image 0"]
    assert classes.class_groups({"per_item": {"image 0": {"spearman": 1.0}}}) == []


def test_the_comparison_class_table_adds_masses_and_a_row_for_every_image():
    by_class = [
        {"class": None, "n": 5, "mass": {"box": [0.5, 0.4]}, "grown": {"box": 0}},
        {"class": 0, "n": 2, "mass": {"box": [0.5, 0.5]}, "grown": {"box": 0}},
        {"class": 1, "n": 3, "mass": {"box": [0.5, 0.3], "logo": [0.1, 0.4]}, "grown": {"logo": 2}},
    ]
    entry = {"per_item": ITEMS, "details": {"by_class": by_class, "regions": {"logo": {}}}}
    groups = classes.class_groups(entry)
    assert [g["class"] for g in groups] == [1, 0, None]
    assert groups[0]["mass"]["logo"] == [0.1, 0.4] and groups[0]["grown"] == {"logo": 2}
    assert groups[-1]["n"] == 5 and len(groups[-1]["failing"]) == 2
    page = classes.by_class_html(entry, ["cat", "dog"])
    assert page.index("dog (1)") < page.index("cat (0)") < page.index("every image")
    assert "0.10 \u2192 0.40 (2 grew)" in page and "<th>logo</th>" in page


def _cam(n: int, moved: set[int], flipped: set[int]) -> GradCAM:
    maps = np.zeros((n, 8, 8), np.float32)
    classes_ = np.arange(n, dtype=np.int64) % 3
    for i in range(n):
        maps[i, 4, 4] = 1.0
        maps[i, 3, 4] = 0.5
        if i in moved:
            maps[i] = 0.0
            maps[i, 0, 7], maps[i, 1, 6] = 1.0, 0.6
    changed = classes_.copy()
    for i in flipped:
        changed[i] = (changed[i] + 1) % 3
    return GradCAM(
        maps, maps, changed, np.ones(n, np.float32), "logit", "conv", np.zeros(n, bool), (32, 32)
    )


def _request(cam: GradCAM, images: np.ndarray) -> CheckRequest:
    boxes = [Box(8, 8, 24, 24)] * len(cam)
    artifact = attach_boxes(Artifact.from_value(cam), boxes)
    artifact = attach_regions(artifact, {"logo": Box(0, 24, 8, 32)})
    return CheckRequest(
        "cam",
        PurePosixPath("test_x.py/test_cam/cam"),
        artifact,
        "tensorflow",
        inputs=images,
        label="test_x.py::test_cam",
        profile="retrain",
    )


def test_a_retrain_report_groups_by_class_and_draws_the_failing_images_first(tmp_path):
    n = 12
    images = np.random.default_rng(0).integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)
    golden_cam = _cam(n, set(), set())
    golden_cam = GradCAM(**{**golden_cam.__dict__, "class_index": np.arange(n) % 3})
    settings = Settings(tmp_path / "golden", update="missing")
    assert run_check(settings, _request(golden_cam, images), None).status == "written"
    results = tmp_path / "results"
    moved, flipped = {9, 10}, {11}
    result = run_check(
        Settings(tmp_path / "golden", results_dir=results),
        _request(_cam(n, moved, flipped), images),
        None,
    )
    assert result.status == "failed"
    shown = result.entry["shown"]
    # the failing images (beyond the first 8) are drawn first
    assert set(shown[:3]) == {"image 9", "image 10", "image 11"}
    assert len(shown) == 8
    write_report(results, [{"nodeid": "test_x.py::test_cam", **result.entry}])
    data = json.loads((results / "report.json").read_text())
    groups = data["entries"][0]["images_by_class"]
    failing = {name for g in groups if g["class"] is not None for name in g["failing"]}
    assert failing == {"image 9", "image 10", "image 11"}
    first = groups[0]
    assert first["class"] in (0, 1, 2) and len(first["failing"]) >= 1
    page = (results / "report.html").read_text()
    assert "by the golden's class (the class with the most failing images first" in page
    assert ", ".join(shown) + ", the worst first" in page
    assert "dashed cyan: logo" in page and "white: the object box" in page
    # the obtained picture: 8 tiles, the first over image 11's own thumbnail
    from PIL import Image

    obtained = np.asarray(Image.open(result.entry["images"]["obtained"]))
    assert obtained.shape[1] == 8 * 96 + 7 * 2


def test_an_exact_report_has_no_class_groups(tmp_path):
    entry = {"nodeid": "t::x", "kind": "heatmap", "profile": "exact", "per_item": ITEMS}
    write_report(tmp_path, [entry])
    assert "images_by_class" not in json.loads((tmp_path / "report.json").read_text())["entries"][0]


def test_marks_draw_the_box_solid_and_regions_dashed_at_the_tile_scale():
    tile = np.zeros((96, 96, 3), np.uint8)
    out = draw_marks(tile, (32, 32), (8, 8, 24, 24), [(0, 24, 8, 32)])
    # box rows 8..24 of 32 -> 24..72 of 96: its top edge, two pixels thick, solid
    assert (out[24, 24:72] == BOX_COLOUR).all() and (out[25, 24:72] == BOX_COLOUR).all()
    assert (out[26, 30] == 0).all()  # inside stays as it was
    # the region (0, 24, 8, 32) -> rows 0..24, cols 72..96: dashed on its top edge
    top = (out[0, 72:96] == REGION_COLOUR).all(axis=-1)
    assert top[:4].all() and not top[4:8].any() and top[8:12].all()
    assert (tile == 0).all()  # a copy


def test_under_tiles_take_the_images_else_the_stored_strip():
    images = np.random.default_rng(1).integers(0, 255, (10, 16, 16, 3), dtype=np.uint8)
    strip = inputs_thumbnail(images)  # the first 8 only
    from_images = under_tiles([9, 0], strip, images)
    assert all(t is not None for t in from_images)
    np.testing.assert_array_equal(from_images[1], under_tiles([0], strip)[0])
    assert under_tiles([9, 0], strip)[0] is None  # the strip does not hold image 9


@pytest.mark.parametrize("name", ["image 3", "image x", "layer 3", "3"])
def test_image_index_reads_per_image_names(name):
    assert classes.image_index(name) == (3 if name == "image 3" else None)
