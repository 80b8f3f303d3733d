"""Every judgment reaches the report: the fixture's assertions (localization,
faithfulness, cross-backend agreement) are recorded as Outcomes, passed or failed, and
report.json / report.html show each one with its metrics and pictures next to the
golden checks."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from convviz_check.judge.agreement import AgreementReport, PairComparison, judge_agreement
from convviz_check.report import checks as report
from convviz_check.report.outcomes import entry_of, is_judgment
from convviz_check.types import Comparison, MetricResult, Outcome


def _entries(root: Path) -> list[dict]:
    return json.loads((root / "out" / "report.json").read_text())["entries"]


def _picture(root: Path, entry: dict, role: str) -> np.ndarray:
    path = Path(entry["images"][role])
    assert path.is_file(), path
    assert (root / "out") in path.parents
    return np.asarray(Image.open(path))


def test_localization_and_faithfulness_judgments_are_in_report_json_and_html(pytester, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(
        test_j="""
        import numpy as np
        from convviz_check import examples
        from convviz_check.types import Box

        def test_lands(convviz):
            hm = np.zeros((8, 8)); hm[1, 1] = 1.0
            convviz.assert_localized(hm, Box(0, 0, 4, 4), min_energy=0.5)

        def test_misses(convviz):
            hm = np.zeros((8, 8)); hm[6, 6] = 1.0
            convviz.assert_localized(hm, Box(0, 0, 4, 4), name="corner")

        def test_unfaithful(convviz):
            model = examples.load_example_model("convnet")
            x = examples.make_scenes(4, seed=11).floats
            cam = convviz.gradcam(model, x)
            inverted = 1.0 - cam.heatmap
            convviz.assert_faithful(model, x, inverted, class_index=cam.class_index)
        """
    )
    result = pytester.runpytest("--convviz-results-dir=out", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=2)
    entries = _entries(pytester.path)
    by_check = {(e["nodeid"].split("::")[1], e["check"]): e for e in entries}
    assert set(by_check) == {
        ("test_lands", "localized-1"),
        ("test_misses", "corner"),
        ("test_unfaithful", "faithful-1"),
    }
    lands, misses = by_check["test_lands", "localized-1"], by_check["test_misses", "corner"]
    assert lands["judgment"] == "localization" and lands["status"] == "passed"
    assert lands["metrics"]["energy"] == {
        "value": 1.0,
        "bound": 0.5,
        "ok": True,
        "direction": "min",
        "note": "",
    }
    assert misses["status"] == "failed" and "pointing game missed" in misses["lead"]
    assert misses["metrics"]["pointing"]["value"] == 0.0 and not misses["metrics"]["pointing"]["ok"]
    assert misses["per_item"]["image"]["peak"] == [[6, 6]]
    # the overlay: the target drawn in green, the peak in magenta
    overlay = _picture(pytester.path, misses, "overlay")
    assert (overlay == (0, 255, 0)).all(axis=-1).any()
    assert (overlay == (255, 0, 255)).all(axis=-1).any()
    faithful = by_check["test_unfaithful", "faithful-1"]
    assert faithful["judgment"] == "faithfulness" and faithful["status"] == "failed"
    assert not faithful["metrics"]["lead_over_random"]["ok"]
    assert faithful["facts"]["random_draws"] > 1
    assert faithful["images"]
    # failures first; the page shows every judgment with its lead and its pictures
    assert [e["status"] for e in entries][:2] == ["failed", "failed"]
    data = json.loads((pytester.path / "out" / "report.json").read_text())
    assert data["backend"] == keras.config.backend()  # named though no golden check ran
    page = (pytester.path / "out" / "report.html").read_text()
    for e in entries:
        assert f"({e['judgment']})" in page
        for path in e.get("images", {}).values():
            assert Path(path).relative_to(pytester.path / "out").as_posix() in page
    assert "pointing game missed" in page and "lead_over_random" in page
    # the failing test's message names its overlay; the closing summary counts them
    result.stdout.fnmatch_lines(["*overlay: *corner.overlay.png"])
    result.stdout.fnmatch_lines(
        ["convviz: 3 judgment(s): localization 1 failed, 1 passed; faithfulness 1 failed"]
    )


def test_without_a_results_dir_a_judgment_writes_nothing(pytester):
    pytester.makepyfile(
        test_j="""
        import numpy as np
        from convviz_check.types import Box

        def test_misses(convviz):
            hm = np.zeros((8, 8)); hm[6, 6] = 1.0
            convviz.assert_localized(hm, Box(0, 0, 4, 4))
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*pointing game missed*"])
    assert not list(pytester.path.rglob("*.png"))


def _pair(ok: bool) -> PairComparison:
    value = 0.999 if ok else 0.5
    metric = MetricResult.judge("pearson", value, 0.99, "min")
    comparison = Comparison("heatmap", {"pearson": metric}, ok, details={"worst_item": "image 1"})
    return PairComparison("gradcam", "tensorflow", "torch", comparison)


@pytest.mark.parametrize("ok", [True, False])
def test_judge_agreement_names_the_worst_pair_and_its_metric(ok):
    rep = AgreementReport("m.keras", ("tensorflow", "torch"), ("gradcam",), pairs=[_pair(ok)])
    outcome = judge_agreement(rep)
    assert outcome.judgment == "agreement" and outcome.ok is ok
    metric = outcome.metrics["gradcam.pearson"]
    assert metric.ok is ok and metric.note == "tensorflow|torch, image 1"
    assert outcome.items["gradcam tensorflow vs torch"]["ok"] is ok
    if not ok:
        assert "gradcam differs between tensorflow and torch (pearson 0.5" in outcome.lead
        assert outcome.message == str(rep)


def test_report_html_shows_an_agreement_card_with_its_pictures(tmp_path):
    rep = AgreementReport("m.keras", ("tensorflow", "torch"), ("gradcam",), pairs=[_pair(False)])
    picture = np.zeros((12, 30, 3), np.uint8)
    outcome = Outcome(
        "agreement",
        "failed",
        judge_agreement(rep).lead,
        str(rep),
        judge_agreement(rep).metrics,
        judge_agreement(rep).items,
        {"gradcam": picture},
    )
    from pathlib import PurePosixPath

    entry = entry_of(
        outcome,
        nodeid="t.py::test_a",
        name="backends-agree-1",
        rel=PurePosixPath("t.py/test_a/backends-agree-1"),
        results_dir=tmp_path,
    )
    assert is_judgment(entry)
    written = np.asarray(Image.open(entry["images"]["gradcam"]))
    assert written.shape[0] >= 160  # small pictures are enlarged to stay readable
    paths = report.write_report(tmp_path, [entry])
    page = paths["html"].read_text()
    assert "images/t.py/test_a/backends-agree-1.gradcam.png" in page
    assert "gradcam.pearson" in page and "tensorflow|torch, image 1" in page
    data = json.loads(paths["json"].read_text())
    assert data["summary"] == {"failed": 1}
    assert data["entries"][0]["metrics"]["gradcam.pearson"]["value"] == 0.5


@pytest.mark.crossbackend
def test_a_failing_agreement_assertion_is_in_the_report_with_its_pictures(pytester, monkeypatch):
    from convviz_check.crossbackend.pool import missing_backends

    if missing_backends(("tensorflow", "torch")):
        pytest.skip("needs the tensorflow and torch backends installed (crossbackend env)")
    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(
        test_a="""
        from convviz_check import examples

        def test_agree(convviz):
            x = examples.make_scenes(2, seed=3).floats
            convviz.assert_backends_agree(
                str(examples.model_path("convnet")), x, what=("gradcam",),
                backends=("tensorflow", "torch"), tolerance={"heatmap_max_abs": 0.0,
                "heatmap_rms": 0.0}, name="agree",
            )
        """
    )
    result = pytester.runpytest("--convviz-results-dir=out", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    (entry,) = _entries(pytester.path)
    assert entry["judgment"] == "agreement" and entry["status"] == "failed"
    assert "differs between tensorflow and torch" in entry["lead"]
    assert _picture(pytester.path, entry, "gradcam").ndim == 3
    page = (pytester.path / "out" / "report.html").read_text()
    assert "(agreement)" in page and "agree.gradcam.png" in page


def test_the_randomization_sanity_check_is_recorded_too(pytester, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(
        test_r="""
        from convviz_check import examples

        def test_gradcam_depends_on_the_weights(convviz):
            model = examples.load_example_model("convnet")
            x = examples.make_scenes(4, seed=2).floats
            convviz.assert_randomization(model, x)

        def test_eigencam_does_not(convviz):
            # Eigen-CAM ignores the head: re-initializing it leaves the maps as they were
            model = examples.load_example_model("convnet")
            x = examples.make_scenes(4, seed=2).floats
            convviz.assert_randomization(model, x, method="eigencam", name="eigen")
        """
    )
    result = pytester.runpytest("--convviz-results-dir=out", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    entries = {e["check"]: e for e in _entries(pytester.path)}
    assert set(entries) == {"randomization-1", "eigen"}
    assert entries["randomization-1"]["status"] == "passed"
    eigen = entries["eigen"]
    assert eigen["judgment"] == "randomization" and eigen["status"] == "failed"
    assert any(not m["ok"] for m in eigen["metrics"].values())
    assert "(randomization)" in (pytester.path / "out" / "report.html").read_text()


def test_the_summary_line_counts_judgments_failures_first():
    from convviz_check.report.outcomes import summary_line

    verdicts = [("agreement", "passed"), ("golden", "passed"), ("golden", "missing")]
    verdicts += [("golden", "failed"), ("localization", "passed")]
    assert summary_line(verdicts) == (
        "5 judgment(s): golden 1 failed, 1 missing, 1 passed; localization 1 passed; "
        "agreement 1 passed"
    )
    assert summary_line([]) == ""


def test_xdist_workers_send_their_verdicts_to_the_summary(pytester):
    pytest.importorskip("xdist")
    pytester.makepyfile(
        test_x="""
        import numpy as np
        import pytest
        from convviz_check.types import Box

        @pytest.mark.parametrize("y", [1, 6])
        def test_points(convviz, y):
            hm = np.zeros((8, 8)); hm[y, y] = 1.0
            convviz.assert_localized(hm, Box(0, 0, 4, 4))
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["convviz: 2 judgment(s): localization 1 failed, 1 passed"])


@pytest.mark.crossbackend
def test_the_running_backend_computes_in_the_session_even_before_keras_is_imported(pytester):
    from convviz_check.crossbackend.pool import expected_backend, missing_backends

    running = expected_backend()
    other = next(b for b in ("torch", "jax", "tensorflow") if b != running)
    if missing_backends((running, other)):
        pytest.skip(f"needs the {running} and {other} backends installed (crossbackend env)")
    pytester.makepyfile(
        test_a=f"""
        import os
        import sys

        import numpy as np
        from convviz_check import examples
        from convviz_check.plugin_fixture import session_pool

        def test_agree(convviz, request):
            assert "keras" not in sys.modules  # nothing imported Keras before the call
            x = np.random.default_rng(0).uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
            convviz.assert_backends_agree(
                str(examples.model_path("convnet")), x, what=("activations",),
                backends=({running!r}, {other!r}),
            )
            pool = session_pool(request.config)
            assert pool.pid({running!r}) == os.getpid()  # in this process, no worker
            assert pool.pid({other!r}) not in (None, os.getpid())
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist")
    result.assert_outcomes(passed=1)
