"""What a pass over models this project did not build (MobileNetV2 from config, a
1-channel [-1, 1] all-convolutional model, skimage photos) found on the pages the
package writes, each pinned here."""

from __future__ import annotations

import re

import numpy as np

from convviz_check.report import explain

NAMES = ("airplane", "automobile", "bird", "cat", "deer")


def _top(scores: list[float]) -> list[dict]:
    return [{"index": i, "name": NAMES[i], "score": s} for i, s in enumerate(scores)]


def test_close_probabilities_are_written_with_the_digits_that_tell_them_apart() -> None:
    page = explain._top_table(_top([0.1533, 0.147, 0.14323, 0.14319, 0.1395]), "probability")
    cells = re.findall(r"<td>([0-9.e-]+)</td>", page)
    assert len(set(cells)) == 5  # at 3 digits 0.14323 and 0.14319 both read 0.143
    assert cells[2] != cells[3] and "tie" not in page


def test_tied_top_classes_are_called_a_tie() -> None:
    # an untrained MobileNetV2: every probability is 0.1 in float32
    page = explain._top_table(_top([0.1] * 5), "probability")
    assert "the first 5 tie: no top class" in page


def test_the_card_says_why_the_explained_class_is_not_the_tables_first() -> None:
    image = {"top": _top([0.1] * 5)}
    cam = {"class": "top predicted", "score_kind": "logit"}
    hint = explain._explained_hint(image, {"class_index": 8}, cam)
    assert "the top class by the logit, which the map explains" in hint
    assert explain._explained_hint(image, {"class_index": 0}, cam) == ""
    assert explain._explained_hint(image, {"class_index": 8}, {**cam, "class": 8}) == ""


def test_a_flat_maps_warning_stays_as_wide_as_its_map() -> None:
    entry = {"overlay": "gradcam/x.png", "degenerate": True}
    figure = explain._map_figure("scorecam", entry, [512, 512], 230)
    assert figure.startswith('<figure class="map" style="width:230px">')
    assert "Flat map" in figure


def test_the_console_names_the_explained_classes() -> None:
    summary = {
        "model": {"name": "m", "class": "Functional", "input_shape": [96, 96, 3], "classes": 10},
        "images": [{"name": "a.png", "top": _top([0.2])}],
        "input": {"preprocessing": ["", "[0, 255] mapped to [0, 1]"]},
        "score_kind": "probability",
        "activations": None,
        "gradcam": {
            "methods": ["gradcam"],
            "layer": "out_relu",
            "score_kind": "logit",
            "images": [
                {"class_index": 8, "class_name": "ship", "maps": {"gradcam": {"degenerate": 0}}}
            ]
            * 3,
        },
        "filters": None,
        "notes": [],
        "timings": {},
    }
    lines = explain.summary_lines(summary)
    line = next(x for x in lines if x.startswith("cam:"))
    assert "explains each image's highest-logit class: ship (8) x3;" in line
    assert "[8, 8, 8]" not in line
    # the image's line says what ranks its first class: the probability the model outputs
    assert "  a.png: highest probability: airplane (0) (0.2)" in lines
    chosen = {**summary, "gradcam": {**summary["gradcam"], "class": 8}}
    line = next(x for x in explain.summary_lines(chosen) if x.startswith("cam:"))
    assert "explains the class given with --class: ship (8) x3;" in line


def test_the_page_names_the_explained_class_as_the_console_does() -> None:
    cam = {
        "class": "top predicted",
        "score_kind": "logit",
        "methods": ["gradcam"],
        "layer": "conv",
        "note": None,
        "images": [],
    }
    page = explain._gradcam_section({"gradcam": cam, "images": [], "score_kind": "probability"})
    assert "class: each image&#x27;s highest-logit class." in page


def test_the_console_says_highest_output_where_the_model_gives_no_probabilities() -> None:
    summary = {
        "model": {"name": "m", "class": "Functional", "input_shape": [8, 8, 1], "classes": 2},
        "images": [{"name": "a.png", "top": _top([2.5, -1.0])}],
        "input": {"preprocessing": [""]},
        "score_kind": "output",
        "activations": None,
        "gradcam": None,
        "filters": None,
        "notes": [],
        "timings": {},
    }
    lines = explain.summary_lines(summary)
    assert "  a.png: highest output: airplane (0) (2.5)" in lines
    assert not any(" top " in x for x in lines)


# ------------------------------------------------------------------ judgment cards
def _card(entry: dict) -> str:
    from pathlib import Path

    from convviz_check.report.outcomes import judgment_card

    return judgment_card({"status": "failed", **entry}, Path("/r"), "a")


def test_a_localization_row_writes_boxes_and_peak_points_as_such() -> None:
    item = {"peak": [[62, 0], [62, 1], [63, 0], [63, 1]], "target_box": [8, 20, 56, 44]}
    page = _card({"judgment": "localization", "per_item": {"image": item}})
    assert "<td>(62, 0), (62, 1), (63, 0), (63, 1)</td>" in page
    assert "<td>rows [8, 56), cols [20, 44)</td>" in page
    assert "62, 0, 62, 1" not in page


def test_judgment_pictures_say_what_their_colours_are() -> None:
    images = {"images": {"overlay": "/r/images/o.png"}}
    page = _card({"judgment": "localization", **images})
    assert "green: the target, cyan: the map&#x27;s own box" in page
    assert "magenta: the peak" in page
    curves = {"images": {"curves": "/r/images/c.png"}, "facts": {"metric": "insertion"}}
    page = _card({"judgment": "faithfulness", **curves})
    assert "red: the map under test, grey: the random maps&#x27; mean, blue:" in page
    assert "share of pixels inserted" in page


# ------------------------------------------------------------------ agree --out
def test_the_agreement_page_names_the_explained_classes(tmp_path) -> None:
    from convviz_check.crossbackend import agreement as ag
    from convviz_check.report import agreement as pages
    from convviz_check.types import TECHNIQUES
    from tests.test_agreement import synthetic_results

    base, _ = synthetic_results()
    report = ag.build_report(
        "m", ("tensorflow", "jax"), TECHNIQUES, {"tensorflow": base, "jax": base}
    )
    classes = np.asarray(base["gradcam"].arrays["class_index"]).reshape(-1).tolist()
    names = [f"kind{i}" for i in range(max(classes) + 1)]
    page, _ = pages.write_pictures(report, tmp_path, class_names=names)
    expected = pages.named_classes(classes, names)
    assert f"classes: {expected}" in page.read_text()
    assert expected.startswith(f"kind{classes[0]} ({classes[0]}) x")
    _, _ = pages.write_pictures(report, tmp_path / "bare")
    assert "classes:" not in (tmp_path / "bare" / "index.html").read_text()


def test_named_classes_counts_each_class_once() -> None:
    from convviz_check.report.agreement import named_classes

    assert named_classes([2, 2, 6, 2], ["a", "b", "gravel"]) == "gravel (2) x3, 6 x1"
    assert named_classes([1, 1], None) == "1 x2"


def test_agree_draws_the_first_filters_a_small_layer_has(tmp_path, capsys) -> None:
    import argparse

    import keras

    from convviz_check.cli import agree

    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(3, 3, padding="same", name="c3")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    path = tmp_path / "m.keras"
    keras.Model(inputs, x).save(path)
    args = argparse.Namespace(
        model=str(path), filters=8, filters_layer=None, unsafe=False, custom_objects=None
    )
    assert agree._filters_count(args, ("filters",)) == 3  # every backend failed on filter 3
    assert "--filters 8: layer 'c3' has 3; comparing 3" in capsys.readouterr().out
    assert agree._filters_count(args, ("gradcam",)) == 8  # not drawn: not looked at
    args = argparse.Namespace(
        model=str(tmp_path / "missing.keras"),
        filters=8,
        filters_layer=None,
        unsafe=False,
        custom_objects=None,
    )
    assert agree._filters_count(args, ("filters",)) == 8  # the workers say what is wrong


def test_an_agreements_labelled_pictures_are_written_at_their_size(tmp_path) -> None:
    from pathlib import PurePosixPath

    from PIL import Image

    from convviz_check.report.outcomes import entry_of
    from convviz_check.types import Outcome

    pictures = {
        "agreement": np.zeros((133, 350, 3), np.uint8),  # a one-row diff with its title
        "localization": np.zeros((64, 64, 3), np.uint8),  # an overlay at map size
    }
    sizes = {}
    for judgment, picture in pictures.items():
        outcome = Outcome(judgment, "passed", "ok", pictures={"diff": picture})
        entry = entry_of(
            outcome, nodeid="t", name=judgment, rel=PurePosixPath("t/x"), results_dir=tmp_path
        )
        with Image.open(entry["images"]["diff"]) as img:
            sizes[judgment] = img.size
    assert sizes["agreement"] == (350, 133)  # its text stays the size it was drawn at
    assert sizes["localization"] == (192, 192)  # a small map is still enlarged


def test_an_all_zero_diff_is_called_identical() -> None:
    from pathlib import Path

    from convviz_check.report.checks import render_html

    entry = {
        "status": "passed",
        "kind": "heatmap",
        "images": {"diff": "/r/images/cam.diff.png"},
        "diff_scale": 0.0,
    }
    page = render_html({"entries": [entry]}, Path("/r"))
    assert "diff |expected - obtained|: identical (0 everywhere)" in page
    assert "white = 0" not in page


# ------------------------------------------------------------------ golden diff
def test_golden_diff_names_the_classes_and_pictures_the_changed_images_first(
    tmp_path, capsys
) -> None:
    from PIL import Image

    from convviz_check import cli, golden
    from convviz_check.artifacts import Artifact
    from convviz_check.types import GradCAM

    def cam(flip: bool) -> Artifact:
        maps = np.zeros((3, 8, 8), np.float32)
        maps[:, 4, 4] = 1.0
        classes = np.array([2, 2, 5 if flip else 2])
        if flip:
            maps[2] = 0.0
            maps[2, 0, 7] = 1.0
        return Artifact.from_value(
            GradCAM(maps, maps, classes, np.ones(3), "logit", "c", np.zeros(3, bool), (32, 32))
        )

    names = ["a", "b", "gravel", "c", "d", "animal"]
    golden.save(tmp_path / "old", cam(False), {"class_names": names})
    golden.save(tmp_path / "new", cam(True), {"class_names": names})
    argv = ["golden", "diff", str(tmp_path / "old"), str(tmp_path / "new")]
    assert cli.main([*argv, "--images", str(tmp_path / "pics")]) == 1
    assert "top class changed: gravel (2) -> animal (5) (image 2)" in capsys.readouterr().out
    with Image.open(tmp_path / "pics" / "check.diff.png") as img:
        diff = np.asarray(img.convert("RGB"))
    # the changed image (2) is drawn first: the brightest diff is in the first tile
    tiles = [diff[:80, x : x + 96] for x in (0, 98, 196)]  # 96-px tiles, 2-px gaps; no label
    assert [int(t.max() > 200) for t in tiles] == [1, 0, 0]


def test_failing_cards_come_in_the_order_of_the_worst_checks_list() -> None:
    from pathlib import Path

    from convviz_check.report.checks import render_html

    def golden_entry(nodeid: str, value: float) -> dict:
        metric = {"value": value, "bound": 0.5, "direction": "min", "ok": False}
        return {
            "nodeid": nodeid,
            "check": "cam",
            "status": "failed",
            "kind": "heatmap",
            "metrics": {"spearman_mean": metric},
        }

    judgment = {
        "nodeid": "t::test_a",
        "check": "faithful-1",
        "status": "failed",
        "judgment": "faithfulness",
        "lead": "not faithful",
    }
    entries = [judgment, golden_entry("t::test_b", 0.4), golden_entry("t::test_c", -0.2)]
    page = render_html({"entries": entries}, Path("."))
    listing, _, cards = page.partition("</ol>")
    order = [listing.index(n) for n in ("t::test_c", "t::test_b", "t::test_a")]
    assert order == sorted(order)  # the farthest out first, then the judgment
    order = [cards.index(f"{n} ::") for n in ("t::test_c", "t::test_b", "t::test_a")]
    assert order == sorted(order)


def test_class_changes_of_a_hesitant_model_say_why_they_are_not_judged() -> None:
    from convviz_check.report.comparison import comparison_text

    details = {
        "per_item": {"image 0": {}, "image 1": {}, "image 2": {}},
        "worst_item": "image 0",
        "profile": "retrain",
        "class_flips": {"n": 0, "n_all": 3, "changed": 0, "towards": [], "confident": 0.5},
        "class_index_expected": [8, 8, 8],
        "class_index_obtained": [0, 0, 8],
    }
    text = comparison_text("heatmap", {}, details, passed=True)
    assert (
        "class changes not judged: 2 of 3 images changed their top class, but no image's "
        "golden probability reaches 0.5" in text
    )
    confident = {**details, "class_flips": {**details["class_flips"], "n": 3}}
    assert "not judged" not in comparison_text("heatmap", {}, confident, passed=True)
