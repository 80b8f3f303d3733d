"""Every failing image of a heatmap check is pictured (golden | now | diff), up to a
cap; the other images are one click away (a closed <details> whose pictures load when
opened). And a metric no bound judges reads as such (3 digits, 'not judged')."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from convviz_check.checks import Settings, run_check
from convviz_check.report import gallery
from convviz_check.report.checks import render_html, write_report
from convviz_check.report.comparison import metric_line
from convviz_check.types import GradCAM, MetricResult
from tests._reports import heatmap_request

NAMES = ["angry", "disgust", "fear", "happy"]


def _cam(n: int, flipped: set[int]) -> GradCAM:
    maps = np.zeros((n, 8, 8), np.float32)
    maps[:, 4, 4], maps[:, 3, 4] = 1.0, 0.5
    classes = np.arange(n) % 4
    for i in flipped:
        classes[i] = (classes[i] + 1) % 4
        maps[i] = 0.0
        maps[i, 0, 7], maps[i, 1, 6] = 1.0, 0.6
    return GradCAM(
        maps, maps, classes, np.ones(n, np.float32), "logit", "conv", np.zeros(n, bool), (32, 32)
    )


def _run(tmp_path: Path, n: int, flipped: set[int]):
    images = np.random.default_rng(0).integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)

    settings = Settings(tmp_path / "golden", update="missing")
    golden = heatmap_request(_cam(n, set()), images, NAMES)
    assert run_check(settings, golden, None).status == "written"
    results = tmp_path / "results"
    now = heatmap_request(_cam(n, flipped), images, NAMES)
    result = run_check(Settings(tmp_path / "golden", results_dir=results), now, None)
    write_report(results, [{"nodeid": "test_x.py::test_cam", **result.entry}])
    return result, results, (results / "report.html").read_text()


def _pictured(page: str) -> list[int]:
    return [int(i) for i in re.findall(r"<figure id='[^']*-(\d+)'>", page)]


def test_an_image_the_message_names_is_pictured_and_the_rest_on_demand(tmp_path):
    n = 20  # more than the 8 worst the strips show
    flipped = {2, 5, 9, 11, 14, 17, 19}
    result, results, page = _run(tmp_path, n, flipped)
    assert result.status == "failed"
    named = {int(i) for i in re.findall(r"\(image (\d+)\)", result.message)}
    assert named and named <= flipped
    open_part, _, folded = page.partition("<details class=each>")
    # every failing image is pictured open (the strips show 8 only), the others folded
    assert sorted(_pictured(open_part)) == sorted(flipped)
    assert sorted(_pictured(folded)) == sorted(set(range(n)) - flipped)
    assert "the other 13 images" in folded and folded.count("loading=lazy") == 13
    assert "image 9: class angry (1)" not in page  # named by the golden's class
    assert "image 9: class disgust (1) \u2192 fear (2)" in open_part
    for picture in result.entry["pictures"]:
        path = Path(picture["path"])
        assert path.parent.name == "cam.each" and path.is_file()
        assert Path(results, re.search(rf"src='([^']*/{path.name})'", page)[1]).is_file()
        with Image.open(path) as img:  # golden | now | diff, side by side
            assert img.width > 2.5 * img.height


def test_a_passing_check_writes_no_per_image_pictures(tmp_path):
    result, results, page = _run(tmp_path, 6, set())
    assert result.status == "passed"
    assert "pictures" not in result.entry and "class=each" not in page
    assert not list(results.rglob("*.each"))


def _entry(failing: int, total: int) -> dict:
    per_item = {
        f"image {i}": {"class_index": [0, 1] if i < failing else [0, 0], "spearman": 0.5}
        for i in range(total)
    }
    pictures = [
        {"image": f"image {i}", "path": f"/r/images/cam.each/image_{i}.png", "failing": i < failing}
        for i in range(total)
    ]
    return {"rel": "t/cam", "per_item": per_item, "pictures": pictures}


def test_failing_images_past_the_cap_are_folded_with_the_others():
    cap = gallery.FAILING_SHOWN
    page = gallery.each_image_html(_entry(cap + 5, cap + 9), Path("/r"))
    open_part, _, folded = page.partition("<details")
    assert _pictured(open_part) == list(range(cap))
    assert _pictured(folded) == list(range(cap, cap + 9))
    assert f"every failing image ({cap + 5}, the first {cap};" in open_part


def test_every_image_is_ranked_worst_first_and_at_most_max_pictured():
    per_item = {"image 3": {"spearman": 0.1}, "image 1": {"class_index": [2, 0]}}
    assert gallery.each_order(per_item, {}, 5) == [1, 3, 0, 2, 4]
    assert len(gallery.each_order({}, {}, 500)) == gallery.MAX_PICTURED


# ------------------------------------------------------------------ unjudged metrics
def test_a_metric_without_a_bound_reads_as_not_judged():
    flip = MetricResult.judge(
        "class_flip_share", 2 / 13, None, "max", "2 of 13 changed images now explain class 0"
    )
    line = metric_line(flip, 10)
    assert line.endswith("0.154  (2 of 13 changed images now explain class 0; not judged)")
    entry = {
        "status": "failed",
        "kind": "heatmap",
        "metrics": {"class_flip_share": flip.to_dict()},
    }
    page = render_html({"entries": [entry]}, Path("."))
    assert "0.15384615384615385" not in page
    assert (
        "<td>0.154</td><td colspan=2 class=facts>2 of 13 changed images now explain class 0; not judged<"
        in page
    )
