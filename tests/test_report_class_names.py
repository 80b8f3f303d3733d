"""Class names where a user gave them: the report's class tables show "happy (3)"
instead of "3", and ``agree --class NAME`` resolves a name by explain's rule
(``--class-names``, else ImageNet's names for a 1000-class model)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from convviz_check.checks import CheckRequest, Settings, run_check
from convviz_check.errors import ConvvizError
from convviz_check.report.checks import write_report
from convviz_check.types import GradCAM
from tests._reports import heatmap_request

NAMES = ["angry", "disgust", "fear", "happy"]


def _cam(n: int, flipped: set[int]) -> GradCAM:
    maps = np.zeros((n, 8, 8), np.float32)
    maps[:, 4, 4], maps[:, 3, 4] = 1.0, 0.5
    classes = np.full(n, 3, np.int64)
    for i in flipped:
        classes[i] = 0
        maps[i] = 0.0
        maps[i, 0, 7], maps[i, 1, 6] = 1.0, 0.6
    return GradCAM(
        maps, maps, classes, np.ones(n, np.float32), "logit", "conv", np.zeros(n, bool), (32, 32)
    )


def _request(cam: GradCAM, images: np.ndarray) -> CheckRequest:
    return heatmap_request(cam, images, NAMES)


def test_a_failing_retrain_report_names_the_classes_in_json_and_html(tmp_path):
    n = 6
    images = np.random.default_rng(0).integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)
    settings = Settings(tmp_path / "golden", update="missing")
    assert run_check(settings, _request(_cam(n, set()), images), None).status == "written"
    results = tmp_path / "results"
    result = run_check(
        Settings(tmp_path / "golden", results_dir=results), _request(_cam(n, {4}), images), None
    )
    assert result.status == "failed"
    assert result.entry["class_names"] == NAMES
    write_report(results, [{"nodeid": "test_x.py::test_cam", **result.entry}])
    entry = json.loads((results / "report.json").read_text())["entries"][0]
    groups = entry["images_by_class"]
    assert [(g["class"], g.get("name")) for g in groups if g["class"] is not None] == [(3, "happy")]
    page = (results / "report.html").read_text()
    # the class table and the per-image table (golden -> now) name the classes
    assert "<td>happy (3)</td>" in page
    assert "(class happy (3) \u2192 angry (0))" in page  # the class table's "which"
    assert groups[0]["failing"] == {"image 4": ["class happy (3) \u2192 angry (0)"]}
    assert "happy (3) \u2192 angry (0)" in page
    assert "happy (3) \u2192 happy (3)" in page


def test_without_names_the_tables_show_indices(tmp_path):
    n = 4
    images = np.zeros((n, 32, 32, 3), np.uint8)
    request = _request(_cam(n, set()), images)
    request.meta = {}
    settings = Settings(tmp_path / "golden", update="missing")
    assert run_check(settings, request, None).status == "written"
    request = _request(_cam(n, {1}), images)
    request.meta = {}
    result = run_check(Settings(tmp_path / "golden", results_dir=tmp_path / "r"), request, None)
    assert "class_names" not in result.entry
    write_report(tmp_path / "r", [{"nodeid": "t::x", **result.entry}])
    entry = json.loads((tmp_path / "r" / "report.json").read_text())["entries"][0]
    assert all("name" not in g for g in entry["images_by_class"])
    assert "3 \u2192 0" in (tmp_path / "r" / "report.html").read_text()


# ------------------------------------------------------------------ agree --class NAME
@pytest.fixture(scope="module")
def imagenet_sized(tmp_path_factory):
    """A tiny model with 1000 outputs, saved: ImageNet's names apply to it."""
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1000)(x))
    path = tmp_path_factory.mktemp("m") / "m.keras"
    model.save(path)
    return path


def _agree(monkeypatch, argv):
    from convviz_check import cli
    from convviz_check.crossbackend import agreement as ag

    calls = []

    def fake(model, images, **kwargs):
        calls.append(kwargs)
        return ag.AgreementReport(model=model, backends=("tensorflow", "jax"), what=kwargs["what"])

    monkeypatch.setattr(ag, "agreement", fake)
    assert cli.main(["agree", *argv, "--what", "gradcam"]) == 0
    return calls[0]["class_index"]


def test_agree_resolves_an_imagenet_name_for_a_1000_class_model(imagenet_sized, monkeypatch):
    pytest.importorskip("keras_hub")
    assert _agree(monkeypatch, [str(imagenet_sized), "--scenes", "2", "--class", "tench"]) == 0
    assert _agree(monkeypatch, [str(imagenet_sized), "--scenes", "2", "--class", "goldfish"]) == 1
    assert _agree(monkeypatch, [str(imagenet_sized), "--scenes", "2", "--class", "7"]) == 7


def test_agree_suggests_close_names_as_explain_does(imagenet_sized, monkeypatch, capsys):
    from convviz_check import cli

    pytest.importorskip("keras_hub")
    argv = ["agree", str(imagenet_sized), "--scenes", "2", "--class", "tenchh"]
    assert cli.main(argv) == 2
    assert "Unknown class name. Received: --class 'tenchh'. Close: tench." in (
        capsys.readouterr().err
    )


def test_a_name_without_names_for_a_small_model_is_refused(tmp_path):
    import keras

    from convviz_check.cli import agree

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(5)(x))
    args = argparse.Namespace(class_index="tench", loaded_model=model)
    with pytest.raises(ConvvizError, match="class index in \\[0, 5\\).*'tench'"):
        agree._class_index(args, None)


def test_agree_takes_names_of_class_names_file(tmp_path, monkeypatch):
    names = tmp_path / "names.txt"
    names.write_text("\n".join(NAMES) + "\n")
    argv = ["m.keras", "--scenes", "2", "--class-names", str(names), "--class", "Happy"]
    assert _agree(monkeypatch, argv) == 3  # no model is loaded: the file names the classes


# ------------------------------------------------------------------ through the plugin
INNER = """
import os

import numpy as np

from convviz_check.types import GradCAM


def test_cam(convviz):
    n = 6
    maps = np.zeros((n, 8, 8), np.float32)
    maps[:, 4, 4], maps[:, 3, 4] = 1.0, 0.5
    top = np.full(n, 3, np.int64)
    if os.environ.get("INNER_MOVED"):
        top[4] = 0
        maps[4] = 0.0
        maps[4, 0, 7], maps[4, 1, 6] = 1.0, 0.6
    convviz.check("cam", GradCAM(
        heatmap=maps, raw=maps.copy(), class_index=top, score=np.ones(n, np.float32),
        score_kind="logit", layer="conv", degenerate=np.zeros(n, bool), image_shape=(32, 32),
    ))
"""


def test_a_plugin_run_names_the_classes_in_its_report(pytester, monkeypatch):
    from convviz_check.backends import current_backend

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("INNER_MOVED", raising=False)
    (pytester.path / "classes.txt").write_text("\n".join(NAMES) + "\n")
    pytester.makeini(
        f"[pytest]\nconvviz_golden_backend = {current_backend()}\n"
        "convviz_class_names = classes.txt\n"
    )
    pytester.makepyfile(test_inner=INNER)
    assert pytester.runpytest("--convviz-update=missing").ret == 0
    monkeypatch.setenv("INNER_MOVED", "1")
    results = pytester.path / "results"
    outcome = pytester.runpytest("--convviz-profile=retrain", f"--convviz-results-dir={results}")
    outcome.assert_outcomes(failed=1)
    entry = json.loads((results / "report.json").read_text())["entries"][0]
    assert [g.get("name") for g in entry["images_by_class"]] == ["happy", None]
    assert entry["images_by_class"][0]["class"] == 3
    page = (results / "report.html").read_text()
    assert "<td>happy (3)</td>" in page and "happy (3) \u2192 angry (0)" in page


def test_a_run_without_names_takes_the_goldens_names(pytester, monkeypatch):
    """Names given when the golden was written (kept in its sidecar) name the classes of
    a later run that configures none: in its message, report.json and report.html."""
    from convviz_check.backends import current_backend

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("INNER_MOVED", raising=False)
    (pytester.path / "classes.txt").write_text("\n".join(NAMES) + "\n")
    ini = f"[pytest]\nconvviz_golden_backend = {current_backend()}\n"
    pytester.makeini(ini + "convviz_class_names = classes.txt\n")
    pytester.makepyfile(test_inner=INNER)
    assert pytester.runpytest("--convviz-update=missing").ret == 0
    side = json.loads(next(pytester.path.rglob("cam.json")).read_text())
    assert side["class_names"] == NAMES
    pytester.makeini(ini)  # the names are no longer configured
    monkeypatch.setenv("INNER_MOVED", "1")
    results = pytester.path / "results"
    outcome = pytester.runpytest("--convviz-profile=retrain", f"--convviz-results-dir={results}")
    outcome.assert_outcomes(failed=1)
    assert "top class changed: happy (3) -> angry (0)" in outcome.stdout.str()
    entry = json.loads((results / "report.json").read_text())["entries"][0]
    assert entry["class_names"] == NAMES
    assert [g.get("name") for g in entry["images_by_class"]] == ["happy", None]
    page = (results / "report.html").read_text()
    assert "<td>happy (3)</td>" in page and "happy (3) \u2192 angry (0)" in page


def test_a_rewrite_without_names_keeps_the_goldens_names(tmp_path):
    n = 4
    images = np.zeros((n, 32, 32, 3), np.uint8)
    settings = Settings(tmp_path / "golden", update="missing")
    assert run_check(settings, _request(_cam(n, set()), images), None).status == "written"
    request = _request(_cam(n, {1}), images)
    request.meta = {}
    result = run_check(Settings(tmp_path / "golden", update="all"), request, None)
    assert result.status == "written"
    side = json.loads(next((tmp_path / "golden").rglob("cam.json")).read_text())
    assert side["class_names"] == NAMES


def test_a_sidecar_with_malformed_class_names_is_a_golden_error(tmp_path):
    from convviz_check import golden
    from convviz_check.errors import GoldenError

    images = np.zeros((2, 32, 32, 3), np.uint8)
    settings = Settings(tmp_path / "golden", update="missing")
    assert run_check(settings, _request(_cam(2, set()), images), None).status == "written"
    path = next((tmp_path / "golden").rglob("cam.json"))
    side = json.loads(path.read_text())
    side["class_names"] = ["happy", 3]
    path.write_text(json.dumps(side))
    with pytest.raises(GoldenError, match="malformed 'class_names'"):
        golden.load(path.with_suffix(""))
