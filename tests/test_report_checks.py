"""Reports of golden checks: the pictures (convviz_check.report.pictures: previews,
expected/obtained/diff images) and convviz_check.report.checks (report.json,
report.html, the xdist part files)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from convviz_check.artifacts import Artifact
from convviz_check.report import checks as report
from convviz_check.report import pictures


def _heat(y: int, x: int, n: int = 1) -> Artifact:
    hm = np.zeros((n, 7, 7), np.float32)
    hm[:, y, x] = 1.0
    return Artifact.from_value(hm, "heatmap")


def test_picture_of_a_heatmap_is_rgb_upscaled_for_small_maps():
    img = pictures.picture(_heat(2, 3, n=2))
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.shape[0] >= 96  # 7x7 cells stay visible
    assert img.shape[1] > 2 * img.shape[0]  # two maps side by side
    # each tile shows the hot cell (row 2, col 3 of 7) in red, the rest in jet's blue
    side = img.shape[0]
    for left in (0, img.shape[1] - side):
        tile = img[:, left : left + side].astype(int)
        red = tile[..., 0] - tile[..., 2]
        y, x = np.unravel_index(np.argmax(red), red.shape)
        assert (y * 7 // side, x * 7 // side) == (2, 3)
        assert tile[0, 0, 2] > tile[0, 0, 0]  # a cold corner is blue


def test_picture_of_activations_shows_every_channel_of_the_first_image():
    acts = {"conv": np.random.default_rng(0).normal(size=(2, 4, 4, 20))}
    img = pictures.picture(Artifact.from_value(acts))
    assert img.dtype == np.uint8 and img.ndim == 2
    # 20 channels at 16 per row: two rows of 4-pixel tiles with 1-pixel gaps, upscaled.
    assert img.shape[0] / img.shape[1] == pytest.approx((2 * 5 - 1) / (16 * 5 - 1))


def test_picture_of_activations_shows_the_layer_asked_for():
    acts = {"a": np.zeros((1, 4, 4, 1)), "b": np.ones((1, 4, 4, 20))}
    art = Artifact.from_value(acts)
    first, b = pictures.picture(art), pictures.picture(art, layer="b")
    assert first.shape[0] == first.shape[1] and b.shape[1] > 2 * b.shape[0]  # 20 channels
    assert np.array_equal(pictures.picture(art, layer="nope"), first)  # unknown: the first


def test_picture_of_patterns_is_the_filter_grid_of_the_deprocessed_patterns():
    from convviz_check.render import deprocess_image, filter_grid

    pats = np.random.default_rng(0).random((3, 10, 10, 3)).astype(np.float32)
    img = pictures.picture(Artifact.from_value(pats, "pattern"))
    grid = filter_grid(np.stack([deprocess_image(p, crop=0) for p in pats]), cols=8, margin=2)
    k = img.shape[0] // grid.shape[0]  # upscaled (nearest) by a whole factor
    assert k >= 1 and img.shape == (grid.shape[0] * k, grid.shape[1] * k, 3)
    np.testing.assert_array_equal(img[::k, ::k], grid)


def test_picture_of_a_gradcam_shows_its_heatmaps():
    from convviz_check.types import GradCAM

    maps = _heat(2, 3, n=2).arrays["value"]
    cam = GradCAM(
        heatmap=maps, raw=maps, class_index=np.array([0, 1]), score=np.ones(2, np.float32),
        score_kind="logit", layer="conv", degenerate=np.array([False, False]),
        image_shape=(28, 28),
    )  # fmt: skip
    assert np.array_equal(
        pictures.picture(Artifact.from_value(cam)), pictures.picture(_heat(2, 3, n=2))
    )


def test_preview_is_the_picture_or_none_when_none_can_be_drawn(monkeypatch):
    art = _heat(2, 3)
    assert np.array_equal(pictures.preview(art), pictures.picture(art))

    def broken(*args, **kwargs):
        raise ValueError("odd shape")

    monkeypatch.setattr(pictures, "picture", broken)
    assert pictures.preview(art) is None


def test_diff_image_is_dark_for_equal_maps_and_bright_where_they_differ():
    same, same_scale = pictures.diff_image(_heat(2, 3), _heat(2, 3))
    moved, moved_scale = pictures.diff_image(_heat(2, 3), _heat(5, 5))
    assert same.shape == moved.shape
    assert same.max() < 20  # magma(0) is near black
    assert moved.max() > 200
    assert (same_scale, moved_scale) == (0.0, 1.0)


def test_diff_tiles_of_several_images_are_parted_by_white_gaps():
    maps = np.zeros((3, 4, 4), np.float32)
    img, _ = pictures.diff_image(
        Artifact.from_value(maps, "heatmap"), Artifact.from_value(maps, "heatmap")
    )
    tile, gap = pictures.MIN_TILE, pictures._GAP
    assert img.shape[1] == 3 * tile + 2 * gap
    assert (img[:, tile : tile + gap] == 255).all()  # visible between near-black tiles
    assert img[:, :tile].max() < 20


def test_diff_image_is_scaled_to_its_own_maximum():
    small = Artifact.from_value(_heat(2, 3).arrays["value"] * 0.98, "heatmap")
    img, scale = pictures.diff_image(_heat(2, 3), small)
    assert scale == pytest.approx(0.02)
    assert img.max() > 200  # a 2% change is as visible as a large one


def test_diff_image_of_activations_marks_the_changed_channel():
    a = {"c": np.ones((1, 3, 3, 2), np.float32)}
    b = {"c": np.ones((1, 3, 3, 2), np.float32)}
    b["c"][0, :, :, 1] = 0.0
    img, scale = pictures.diff_image(Artifact.from_value(a), Artifact.from_value(b))
    assert scale == 1.0
    half = img.shape[1] // 2
    assert img[:, :half].max() == 0 and img[:, half + 1 :].max() == 255


def test_diff_image_is_none_when_shapes_differ():
    other = Artifact.from_value(np.zeros((1, 5, 5), np.float32), "heatmap")
    assert pictures.diff_image(_heat(1, 1), other) is None
    patterns = Artifact.from_value(np.zeros((1, 7, 7, 3), np.float32), "pattern")
    assert pictures.diff_image(_heat(1, 1), patterns) is None  # kinds differ


def test_write_check_images_writes_expected_obtained_and_diff(tmp_path):
    written, scale = pictures.write_check_images(tmp_path / "sub" / "cam", _heat(5, 5), _heat(2, 3))
    assert list(written) == ["expected", "obtained", "diff"] and scale == 1.0
    for role, path in written.items():
        assert path.endswith(f"cam.{role}.png")
        assert Image.open(path).format == "PNG"
    # obtained is the second argument: its picture is the obtained image
    obtained = np.asarray(Image.open(written["obtained"]))
    assert np.array_equal(obtained, pictures.picture(_heat(5, 5)))


def test_write_check_images_without_a_golden_writes_only_the_obtained_image(tmp_path):
    written, scale = pictures.write_check_images(tmp_path / "cam", _heat(5, 5))
    assert list(written) == ["obtained"] and scale is None


def test_a_picture_that_fails_never_hides_the_others(tmp_path):
    other = Artifact.from_value(np.zeros((1, 5, 5), np.float32), "heatmap")
    written, scale = pictures.write_check_images(tmp_path / "cam", other, _heat(2, 3))
    assert list(written) == ["expected", "obtained"] and scale is None  # shapes differ


def _entry(nodeid: str, status: str, message: str = "") -> dict:
    return {
        "nodeid": nodeid,
        "check": "cam",
        "kind": "heatmap",
        "status": status,
        "message": message,
    }


def test_report_lists_failures_first_in_json_and_html(tmp_path):
    images, _ = pictures.write_check_images(tmp_path / "images" / "cam", _heat(5, 5), _heat(2, 3))
    entries = [
        _entry("t.py::test_a", "passed"),
        {**_entry("t.py::test_b", "failed", "peak moved <script>"), "images": images},
        _entry("t.py::test_c", "missing"),
    ]
    paths = report.write_report(tmp_path, entries, {"unused": {"files": ["t.py/test_z/cam"]}})
    data = json.loads(paths["json"].read_text())
    assert [e["status"] for e in data["entries"]] == ["failed", "missing", "passed"]
    assert data["summary"] == {"failed": 1, "missing": 1, "passed": 1}
    page = paths["html"].read_text()
    assert page.index("test_b") < page.index("test_c") < page.index("test_a")
    assert "<script>" not in page and "peak moved &lt;script&gt;" in page
    assert "src='images/cam.expected.png'" in page and "src='images/cam.diff.png'" in page
    assert "t.py/test_z/cam" in page


def test_parts_of_several_workers_are_merged_and_cleared(tmp_path):
    report.write_part(tmp_path, "gw0", {"entries": [_entry("t.py::a", "passed")]})
    report.write_part(tmp_path, "gw1", {"entries": [_entry("t.py::b", "failed")]})
    merged = report.merge_parts(tmp_path)
    assert [e["nodeid"] for e in merged] == ["t.py::b", "t.py::a"]
    report.clear_parts(tmp_path)
    assert report.merge_parts(tmp_path) == []


def test_plugin_writes_report_with_failures_first(pytester, monkeypatch):
    from convviz_check.backends import current_backend

    monkeypatch.delenv("CI", raising=False)
    pytester.makeini(f"[pytest]\nconvviz_golden_backend = {current_backend()}\n")
    pytester.makepyfile(
        test_r="""
        import numpy as np

        def test_ok(convviz):
            convviz.check("a", np.eye(5, dtype=np.float32))

        def test_missing(convviz):
            convviz.check("b", np.eye(5, dtype=np.float32))
        """
    )
    pytester.runpytest("--convviz-update=missing", "-k", "test_ok").assert_outcomes(passed=1)
    result = pytester.runpytest("--convviz-results-dir=out")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["convviz: report *out/report.html"])
    data = json.loads((pytester.path / "out" / "report.json").read_text())
    assert [e["status"] for e in data["entries"]] == ["missing", "passed"]
    passed = data["entries"][1]
    assert set(passed["images"]) == {"expected", "obtained", "diff"}
    assert (pytester.path / "out" / (passed["obtained"] + ".npz")).exists()
    assert "test_missing" in (pytester.path / "out" / "report.html").read_text()


def test_heatmaps_are_drawn_over_the_inputs_thumbnail():
    heat = _heat(2, 3, n=2)
    white = pictures.inputs_thumbnail(np.ones((2, 16, 16, 3), np.float32))
    black = pictures.inputs_thumbnail(np.zeros((2, 16, 16, 3), np.float32))
    dark = np.full((2, 16, 16, 3), 0.1, np.float32)
    dark[:, :, :8] = 0.9  # a left half and a right half: something to see under the map
    bare = pictures.picture(heat)
    over_dark = pictures.picture(heat, inputs=pictures.inputs_thumbnail(dark))
    assert (
        over_dark.shape[0] >= 96
        and over_dark.shape[:2] != bare.shape[:2]
        or not np.array_equal(over_dark, bare)
    )
    tile = over_dark[:, : over_dark.shape[0]].astype(float)
    half = tile.shape[1] // 2
    assert tile[:, :half].mean() > tile[:, half:].mean() + 40  # the image shows through
    assert pictures.picture(heat, inputs=white).mean() > pictures.picture(heat, inputs=black).mean()
    assert len(pictures.thumbnail_tiles(white)) == 2


def _failing_activation_entry(tmp_path):
    """A real failing check through the lifecycle: layer l2 of four changed by 1%."""
    from pathlib import PurePosixPath

    from convviz_check import checks

    rng = np.random.default_rng(0)
    acts = {f"l{i}": rng.random((1, 4, 4, 3)).astype(np.float32) for i in (3, 1, 2, 0)}
    settings = checks.Settings(tmp_path / "golden", "tensorflow", "missing")
    rel = PurePosixPath("t.py", "test_a", "acts")

    def request(value):
        return checks.CheckRequest("acts", rel, Artifact.from_value(value), "tensorflow",
                                   label="t.py::test_a")  # fmt: skip

    checks.run_check(settings, request(acts), None)
    changed = dict(acts, l2=acts["l2"] * 1.01)
    results = tmp_path / "res"
    settings = checks.Settings(tmp_path / "golden", "tensorflow", None, results_dir=results)
    outcome = checks.run_check(settings, request(changed), None)
    assert outcome.status == "failed"
    return {"nodeid": "t.py::test_a", **outcome.entry}, results


def test_html_report_leads_with_a_summary_and_shows_where_the_change_begins(tmp_path):
    entry, results = _failing_activation_entry(tmp_path)
    passed = {"nodeid": "t.py::test_b", "check": "ok", "kind": "heatmap", "status": "passed"}
    paths = report.write_report(results, [passed, entry], {"backend": "tensorflow"})
    page = paths["html"].read_text()
    summary = page.index("Worst checks")
    assert page.index("1 failed") < summary < page.index("t.py::test_a :: acts <small>")
    # the per-layer table keeps the computed order (l3, l1, l2, l0) and names l2 first out
    assert [page.index(f"<td>l{i}</td>") for i in (3, 1, 2, 0)] == sorted(
        page.index(f"<td>l{i}</td>") for i in (3, 1, 2, 0)
    )
    assert "first layer out of bounds: <b>l2</b>" in page
    # the accept command of the results dir, and the bound written exactly
    assert "convviz-check golden accept" in page and "t.py::test_a :: acts" in page
    assert "&lt;= 1e-05" in page
    # passing checks are listed, folded
    assert "<details><summary>1 passing or written check(s)</summary>" in page
    assert "first layer out of bounds (depth order): l2" in entry["message"]


def test_bounds_are_never_rounded_across_in_the_html(tmp_path):
    entry = {
        "nodeid": "t.py::test_c", "check": "cam", "kind": "heatmap", "status": "failed",
        "metrics": {"pearson": {"value": 0.999985, "bound": 0.99999, "ok": False,
                                "direction": "min"}},
    }  # fmt: skip
    page = report.render_html({"entries": [entry], "summary": {"failed": 1}}, tmp_path)
    assert "&gt;= 0.99999" in page and "0.999985" in page
    assert ">= 1<" not in page and "&gt;= 1<" not in page


def test_worst_checks_lead_with_the_metric_that_failed_not_the_fingerprint(tmp_path):
    entry = {
        "nodeid": "t.py::test_cam",
        "check": "cam",
        "kind": "heatmap",
        "status": "failed",
        "message": "convviz check 'cam' failed\nmodel fingerprint changed: golden ab, now cd",
        "metrics": {
            "rms": {"value": 0.3, "bound": 0.01, "ok": False, "direction": "max"},
            "pearson": {"value": 0.2, "bound": 0.99, "ok": False, "direction": "min"},
            "max_abs": {"value": 0.0, "bound": 0.1, "ok": True, "direction": "max"},
        },
    }
    page = report.write_report(tmp_path, [entry])["html"].read_text()
    summary = page.split("<h2>Worst checks</h2>")[1].split("</ol>")[0]
    # rms is 30x its bound, pearson (1 - 0.2) / 0.01 = 80x: pearson leads
    assert "heatmap_pearson_min 0.2 (bound &gt;= 0.99)" in summary
    assert "fingerprint" not in summary


def test_many_judgments_of_one_test_show_as_one_gallery_and_one_summary_line(tmp_path):
    from PIL import Image as PILImage

    entries = []
    for i in (1, 2, 10):
        path = tmp_path / "images" / f"localized-{i}.overlay.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        PILImage.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
        entries.append(
            {
                "nodeid": "t.py::test_lands",
                "check": f"localized-{i}",
                "judgment": "localization",
                "kind": "localization",
                "status": "failed",
                "lead": "Heatmap is not localized on the target: pointing game missed.",
                "images": {"overlay": str(path)},
            }
        )
    entries.append(
        {"nodeid": "t.py::test_lands", "check": "localized-3", "judgment": "localization"}
        | {"kind": "localization", "status": "passed", "lead": "lands"}
    )
    page = report.write_report(tmp_path, entries)["html"].read_text()
    summary = page.split("<h2>Worst checks</h2>")[1].split("</ol>")[0]
    assert summary.count("<li>") == 1 and "3 of 4 failed" in summary
    assert "t.py::test_lands :: 3 localization judgments" in page
    gallery = page.split("class='images gallery'>")[1].split("</div>")[0]
    assert gallery.count("<img") == 3
    # in natural order: 2 before 10
    assert gallery.index("localized-2.overlay.png") < gallery.index("localized-10.overlay.png")
