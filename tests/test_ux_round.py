"""What a user trips on: small activation strips, labelled fviz pictures, the explain
command's output folder on a failure, the report's per-image table."""

from __future__ import annotations

import numpy as np
import pytest

from convviz_check.report import pictures


@pytest.mark.parametrize("shape", [(4, 4, 2), (3, 3, 4), (1, 1, 3)])
def test_a_layer_of_few_channels_is_drawn_as_large_numbered_tiles(shape) -> None:
    act = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    strip = pictures.activation_preview(act)
    c = shape[-1]
    # one row of tiles of at least FEW_CHANNEL_TILE px (a 4x4x2 map was 36x16 px)
    assert strip.shape[0] >= pictures.FEW_CHANNEL_TILE
    assert strip.shape[1] >= c * pictures.FEW_CHANNEL_TILE
    # each tile is numbered: white label text in its bottom-left corner
    side = pictures.FEW_CHANNEL_TILE
    for q in range(c):
        x0 = q * (strip.shape[1] + pictures._GAP) // c
        label = strip[-3:, x0 : x0 + 8]  # the black box the number is written on
        text = strip[-12:-4, x0 + 3 : x0 + 9, 0]
        assert (label == 0).all() and (text > 200).any() and (text < 50).any(), q
    # channels differ from each other even when each is one value (not all flat grey)
    tiles = [strip[: side - 16, i * (strip.shape[1] // c) + 20] for i in range(c)]
    assert len({int(t.mean()) for t in tiles}) > 1
    diff, scale = pictures.activation_diff_preview(act, act + 0.25)
    assert diff.shape == strip.shape and scale == pytest.approx(0.25)


# --------------------------------------------------------------------------- explain --out
def _tiny_model(tmp_path):
    from tests.test_cli_explain import _convnet

    return _convnet((16, 16, 3), 3, tmp_path / "tiny.keras")


def _photo(tmp_path):
    from PIL import Image

    path = tmp_path / "photo.png"
    pixels = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _fail_in_cams(monkeypatch) -> None:
    from convviz_check.cli import explain

    def broken(*args: object, **kwargs: object) -> dict:
        raise RuntimeError("planted failure half-way")

    monkeypatch.setattr(explain, "run_cams", broken)


def test_explain_failing_half_way_leaves_no_output_folder(tmp_path, monkeypatch, capsys) -> None:
    from convviz_check.cli import main

    model, photo = _tiny_model(tmp_path), _photo(tmp_path)
    _fail_in_cams(monkeypatch)
    out = tmp_path / "new" / "out"
    rc = main(
        ["explain", str(model), str(photo), "--out", str(out), "--what", "activations,gradcam"]
    )
    assert rc != 0 and "planted failure" in capsys.readouterr().err
    # the inputs and activations were written before the failure: none of it is left
    assert not out.exists() and not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png", "tiny.keras"]


def test_explain_into_an_existing_folder_keeps_its_other_files(
    tmp_path, monkeypatch, capsys
) -> None:
    from convviz_check.cli import main

    model, photo = _tiny_model(tmp_path), _photo(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "index.html").write_text("an earlier page")
    argv = ["explain", str(model), str(photo), "--out", str(out)]
    _fail_in_cams(monkeypatch)
    assert main([*argv, "--what", "activations,gradcam"]) != 0
    # a failure changes nothing in the folder the user had
    assert sorted(p.name for p in out.rglob("*")) == ["index.html", "notes.txt"]
    assert (out / "index.html").read_text() == "an earlier page"
    monkeypatch.undo()
    capsys.readouterr()
    assert main([*argv, "--what", "activations"]) == 0
    assert "was not empty: its other files were kept" in capsys.readouterr().out
    assert (out / "notes.txt").read_text() == "mine"  # kept
    assert "an earlier page" not in (out / "index.html").read_text()  # replaced
    assert (out / "summary.json").is_file() and list((out / "activations").glob("*.png"))
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


# --------------------------------------------------------------------------- report.html
def test_per_image_headers_of_the_report_wrap_so_six_metrics_fit_a_window(tmp_path) -> None:
    import re

    from convviz_check.report import checks as report
    from convviz_check.types import METRICS

    names = [(metric, field) for metric, field, _ in METRICS["heatmap"]]
    metrics = {m: {"value": 0.5, "bound": 0.1, "ok": False, "direction": "max"} for m, _ in names}
    per_item = {f"image {i}": {m: 0.25 * i for m, _ in names} for i in range(3)}
    entry = {"nodeid": "t.py::test_c", "check": "cam", "kind": "heatmap", "status": "failed",
             "metrics": metrics, "per_item": per_item}  # fmt: skip
    page = report.render_html({"entries": [entry], "summary": {"failed": 1}}, tmp_path)
    table = page[page.index("<table class=items>") :]
    heads = re.findall(r"<th>(.*?)</th>", table[: table.index("</tr>")])
    assert len(heads) == 1 + len(names)
    for (_, field), head in zip(names, heads[1:], strict=True):
        assert head.replace("<wbr>", "") == field  # the name a bound is set by, whole
        # a break after each underscore: no unbreakable run longer than a word
        assert max(len(run) for run in head.split("<wbr>")) <= len("heatmap_")


# --------------------------------------------------------------------------- fviz picture
def test_rows_of_the_fviz_readability_picture_are_labelled(monkeypatch) -> None:
    from pathlib import Path

    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(benchmarks))
    import fviz_readability as script

    row = np.random.default_rng(0).integers(0, 256, (64, 200, 3), dtype=np.uint8)
    one = script.labelled(row, "conv2\nchapter")
    two = script.labelled(row, "conv2\nrobust")
    width = script.LABEL_WIDTH
    assert one.shape == (64, width + 200, 3)
    np.testing.assert_array_equal(one[:, width:], row)  # the patterns as they were
    ink = one[:, :width].min(axis=-1) < 128
    assert ink[:32].any() and ink[32:].any()  # two lines of text: the layer, the ascent
    assert not np.array_equal(one[:, :width], two[:, :width])  # "chapter" / "robust"
