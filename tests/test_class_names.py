"""Class names: read from a file (one per line, or a JSON list), given to the fixture
(``convviz.class_names``, ``check(class_names=)``, ini ``convviz_class_names``) or the
CLI (``--class-names FILE``), and printed next to class indices."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convviz_check.class_names import check_class_names, label, read_class_names
from convviz_check.errors import InputError
from convviz_check.report.causes import class_named

NAMES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def test_a_names_file_is_one_name_per_line_or_a_json_list(tmp_path):
    lines = tmp_path / "names.txt"
    lines.write_text("\n".join(NAMES) + "\n\n")
    listed = tmp_path / "names.json"
    listed.write_text(json.dumps(NAMES))
    assert read_class_names(lines) == NAMES == read_class_names(listed)
    assert label(6, NAMES) == "neutral (6)" and label(9, NAMES) == "9" and label(2, None) == "2"


@pytest.mark.parametrize(
    "text, expected",
    [
        ('["a", ', "not valid JSON"),
        ('["a", 3]', "non-string"),
        ("a\n\nb\n", "empty or non-string entries (first at index 1)"),
        ("", "no names"),
    ],
)
def test_a_bad_names_file_is_refused_naming_it(tmp_path, text, expected):
    path = tmp_path / "names.txt"
    path.write_text(text)
    with pytest.raises(InputError, match="class names") as info:
        read_class_names(path)
    assert expected in str(info.value) and str(path) in str(info.value)
    with pytest.raises(InputError, match="Cannot read"):
        read_class_names(tmp_path / "missing.txt")
    with pytest.raises(InputError, match="Too few class names.*Expected one per class: 7"):
        check_class_names(["a", "b"], "--class-names", 7)
    with pytest.raises(InputError, match="list of strings"):
        check_class_names("angry", "convviz.class_names")


def test_a_top_class_line_names_both_classes():
    assert class_named("top class changed: 6 -> 3 (image 1)", NAMES) == (
        "top class changed: neutral (6) -> happy (3) (image 1)"
    )
    assert class_named("top class changed: 6 -> 3", None) == "top class changed: 6 -> 3"


INNER = """
import os

import numpy as np

from convviz_check.types import GradCAM


def cam(top):
    heatmap = np.zeros((1, 7, 7), np.float32)
    heatmap[0, 2, 3] = 1.0
    heatmap[0, 1, 1] = float(os.environ.get("INNER_BUMP", "0"))
    return GradCAM(
        heatmap=heatmap, raw=heatmap.copy(), class_index=np.array([top], np.int64),
        score=np.ones(1, np.float32), score_kind="logit", layer="conv",
        degenerate=np.zeros(1, bool), image_shape=(28, 28),
    )


def test_cam(convviz):
    MODE = os.environ.get("INNER_MODE", "")
    if MODE == "attribute":
        convviz.class_names = {names!r}
    if MODE == "argument":
        convviz.check("cam", cam(int(os.environ["INNER_TOP"])), class_names={names!r})
    else:
        convviz.check("cam", cam(int(os.environ["INNER_TOP"])))
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    from convviz_check.backends import current_backend

    monkeypatch.delenv("CI", raising=False)
    (pytester.path / "classes.txt").write_text("\n".join(NAMES) + "\n")
    pytester.makeini(
        f"[pytest]\nconvviz_golden_backend = {current_backend()}\n"
        "convviz_class_names = classes.txt\n"
    )
    pytester.makepyfile(test_inner=INNER.format(names=NAMES))
    monkeypatch.setenv("INNER_TOP", "6")
    assert pytester.runpytest("--convviz-update=missing").ret == 0
    return pytester


@pytest.mark.parametrize("mode", ["ini", "attribute", "argument"])
def test_a_changed_top_class_is_named_in_the_failure(project, monkeypatch, mode):
    monkeypatch.setenv("INNER_MODE", mode)
    monkeypatch.setenv("INNER_TOP", "3")
    monkeypatch.setenv("INNER_BUMP", "0.5")
    if mode != "ini":
        project.makeini(project.path.joinpath("tox.ini").read_text().replace("convviz_class", "x_"))
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*top class changed: neutral (6) -> happy (3)*"])
    # the cause leads: right after the headline
    text = [line[2:].strip() for line in result.outlines if line.startswith("E ")]
    head = next(i for i, line in enumerate(text) if "does not match its golden" in line)
    assert text[head + 1].startswith("top class changed: neutral (6) -> happy (3)"), text


def test_the_names_are_stored_in_the_sidecar(project):
    sidecar = next((project.path / "golden").rglob("cam.json"))
    assert json.loads(sidecar.read_text())["class_names"] == NAMES


def test_explain_names_the_classes_of_a_class_names_file(tmp_path, capsys):
    from PIL import Image

    from convviz_check import cli
    from tests import _models

    model = tmp_path / "m.keras"
    _models.sequential((16, 16, 1), seed=3, name="gray").save(model)
    photo = tmp_path / "face.png"
    Image.fromarray(np.full((16, 16), 90, np.uint8), mode="L").save(photo)
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nbird\n")
    out = tmp_path / "out"
    argv = ["explain", str(model), str(photo), "--out", str(out), "--what", "gradcam"]
    assert cli.main([*argv, "--class-names", str(names), "--class", "dog"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    (entry,) = summary["gradcam"]["images"]
    assert entry["class_index"] == 1 and entry["class_name"] == "dog"
    assert "dog (1) for every image" in (out / "index.html").read_text()  # the page
    names.write_text("cat\n")
    capsys.readouterr()
    assert cli.main([*argv, "--class-names", str(names)]) == 2
    assert "Too few class names" in capsys.readouterr().err


@pytest.mark.parametrize("content", [None, ""])
def test_a_missing_or_empty_class_names_file_stops_the_run_at_start_up(pytester, content):
    if content is not None:
        (pytester.path / "classes.txt").write_text(content)
    pytester.makeini("[pytest]\nconvviz_class_names = classes.txt\n")
    pytester.makepyfile(test_inner="def test_x():\n    pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*convviz_class_names (ini):*classes.txt*"])
    assert "test_inner.py" not in result.stdout.str()  # stopped before collecting
