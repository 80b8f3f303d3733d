"""Calibrated retrain bounds: the profile file (convviz_check.calibration), the
``convviz-check calibrate`` command, and the plugin reading the file at start-up."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convviz_check import golden
from convviz_check.calibration import (
    MIN_SPREAD,
    PROFILE_FILE,
    CalibrationError,
    build_profile,
    choose_bound,
    read_profile,
    retrain_fields,
    write_profile,
)
from convviz_check.cli import main
from convviz_check.cli.calibrate import worst_values

SHA = ["a" * 64, "b" * 64, "c" * 64]
MODELS = [{"path": f"m{i}.keras", "sha256": s} for i, s in enumerate(SHA)]


# ------------------------------------------------------------------ the bound rule
def test_the_bound_is_the_worst_plus_margin_spreads_in_the_failing_direction():
    sim = choose_bound([0.9, 0.8, 0.85], "min", 1.5)  # worst 0.8, spread 0.1
    assert (sim["worst"], sim["spread"], sim["bound"]) == (0.8, pytest.approx(0.1), 0.65)
    err = choose_bound([0.01, 0.1, 0.02], "max", 2.0)  # worst 0.1, spread 0.09
    assert err["bound"] == pytest.approx(0.28) and "note" not in err and err["informative"]
    small = choose_bound([0.01, 0.04, 0.02], "max", 2.0)  # spread 0.03 counts as 0.05
    assert small["bound"] == pytest.approx(0.14) and "agreed within" in small["note"]
    wide = choose_bound([0.2, 0.9, 0.95], "min", 3.0, "spearman_mean")
    assert wide["bound"] == 0.0 and not wide["informative"]  # clipped: fails nothing
    assert "does not separate" in wide["note"]
    # retrains that agree exactly still leave room for one moved image in 16
    same = choose_bound([1.0, 1.0, 1.0], "min", 1.5, "class_agreement")
    assert same["bound"] == pytest.approx(1.0 - 1.5 * MIN_SPREAD) and same["informative"]
    assert "agreed within" in same["note"]
    assert choose_bound([0.0, 0.0, 0.0], "max", 1.5)["bound"] == pytest.approx(0.075)


def test_a_share_bound_at_one_fails_nothing_and_is_flagged():
    # region_shift measured 0.38-0.69 between honest retrains of a hesitant model
    shares = choose_bound([0.385, 0.5, 0.692], "max", 1.5, "region_shift")
    assert shares["bound"] == 1.0 and not shares["informative"]
    unbounded = choose_bound([0.385, 0.5, 0.692], "max", 1.5)  # an error: no upper edge
    assert unbounded["bound"] == pytest.approx(1.1525) and unbounded["informative"]


def test_a_field_called_out_but_not_judged_is_not_calibrated():
    measured = [{"heatmap_class_flip_share_max": v, "heatmap_pointing_drop": 0.1} for v in
                (0.5, 0.9, 0.4)]  # fmt: skip
    data = build_profile(measured, MODELS, date="2026-12-07")
    assert "heatmap_class_flip_share_max" not in data["bounds"]["heatmap"]
    assert "heatmap_pointing_drop" in data["bounds"]["heatmap"]


def test_build_profile_is_generic_over_the_retrain_fields_and_round_trips(tmp_path):
    fields = retrain_fields()
    assert fields["activation_cka_min"].kind == "activation"  # every kind's metrics
    assert fields["heatmap_spearman_mean_min"].direction == "min"
    measured = [
        {"activation_cka_min": v, "heatmap_pointing_drop": d}
        for v, d in ((0.9, 0.0), (0.8, 0.1), (0.85, 0.05))
    ]
    data = build_profile(measured, MODELS, margin=1.0, date="2026-12-07")
    assert set(data["bounds"]) == {"activation", "heatmap"}  # unmeasured fields left out
    assert data["bounds"]["heatmap"]["heatmap_pointing_drop"]["bound"] == pytest.approx(0.2)
    path = write_profile(tmp_path / PROFILE_FILE, data)
    cal = read_profile(path)
    assert (cal.k, cal.date) == (3, "2026-12-07")
    assert cal.describe() == "bounds calibrated on 3 retrains, 2026-12-07"
    assert cal.tolerance("activation").activation_cka_min == pytest.approx(0.7)
    assert cal.tolerance("pattern") is None
    # the file sits in the golden dir, but it is no golden check (never unused, never pruned)
    assert list(golden.iter_checks(tmp_path)) == []
    (tmp_path / "t" / "c.json").parent.mkdir()
    (tmp_path / "t" / "c.json").write_text("{}")  # an orphan sidecar: pruned
    assert main(["golden", "prune", "--golden-dir", str(tmp_path)]) == 0
    assert path.is_file() and not (tmp_path / "t" / "c.json").exists()


def test_fewer_than_three_retrains_are_refused(tmp_path, capsys):
    with pytest.raises(CalibrationError, match=r"at least 3 honest retrains.*2 model"):
        build_profile([{}, {}], MODELS[:2])
    models = []
    for i in range(2):
        models.append(tmp_path / f"m{i}.keras")
        models[-1].write_bytes(bytes([i]))
    code = main(["calibrate", "--models", *map(str, models), "--gate", str(tmp_path)])
    assert code == 2
    assert "at least 3 honest retrains" in capsys.readouterr().err
    three = [*map(str, models), str(models[0])]
    code = main(["calibrate", "--models", *three, "--gate", str(tmp_path), "--margin", "-1"])
    assert code == 2
    assert "--margin must be a number >= 0. Received: -1.0" in capsys.readouterr().err
    code = main(["calibrate", "--models", *three, "--gate", str(tmp_path)])
    assert code == 2
    assert "The same model file was given more than once" in capsys.readouterr().err


def _valid() -> dict:
    return build_profile(
        [{"activation_cka_min": v} for v in (0.9, 0.8, 0.85)], MODELS, date="2026-12-07"
    )


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d.update(k=2), "k must be an int >= 3"),
        (lambda d: d.update(version=99), "format / version"),
        (lambda d: d.update(date="7 Dec"), "date must be a YYYY-MM-DD"),
        (lambda d: d["models"][1].update(sha256="xyz"), r"models\[1\].sha256"),
        (
            lambda d: d["bounds"]["activation"].update(activation_max_rel={"bound": 1.0}),
            r"bounds.activation.activation_max_rel must be a retrain field of activation",
        ),
        (
            lambda d: d["bounds"]["activation"]["activation_cka_min"].update(bound=1.5),
            r"bounds.activation.activation_cka_min.bound must be a passable bound",
        ),
        (
            lambda d: d["bounds"]["activation"]["activation_cka_min"].update(values=[0.9]),
            r"activation_cka_min.values must be a list of k=3",
        ),
    ],
)
def test_a_bad_profile_file_is_refused_naming_the_file_and_the_field(tmp_path, change, named):
    data = _valid()
    change(data)
    path = tmp_path / PROFILE_FILE
    path.write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match=named) as info:
        read_profile(path)
    assert str(path) in str(info.value)


def test_worst_values_take_each_fields_worst_check():
    def entry(golden_rel, kind, metrics, status="passed"):
        return {
            "judgment": "golden",
            "profile": "retrain",
            "golden": golden_rel,
            "kind": kind,
            "status": status,
            "metrics": {n: {"value": v, "direction": "min"} for n, v in metrics.items()},
        }

    report = {
        "entries": [
            entry("t/a", "activation", {"cka": 0.7}),
            entry("t/b", "activation", {"cka": 0.4}, status="failed"),  # measured anyway
            entry("t/c", "heatmap", {"spearman_mean": 0.8, "degenerate_changed": 0}),
            {**entry("t/d", "activation", {"cka": 0.1}), "profile": "exact"},  # not retrain
        ]
    }
    worst, per_check = worst_values(report, "m.keras")
    assert worst == {"activation_cka_min": 0.4, "heatmap_spearman_mean_min": 0.8}
    assert per_check["t/b"] == {"activation_cka_min": 0.4}
    report["entries"].append(entry("t/e", "heatmap", {}, status="missing"))
    with pytest.raises(CalibrationError, match="m.keras: golden check 't/e' is missing"):
        worst_values(report, "m.keras")


# ------------------------------------------------------------------ end to end
GATE = """
import numpy as np
import pytest

import convviz_check as cc
from convviz_check.plugin import gate_model


@pytest.fixture(scope="session")
def model(pytestconfig):
    return cc.load_model(gate_model(pytestconfig))


def test_first_layer(convviz, model):
    images = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype("float32")
    convviz.check("conv", convviz.activations(model, images, layers=["conv"]))
"""


def _tiny_models(directory: Path) -> list[Path]:
    """Three "retrains" (one model's weights, the others' moved by 10% noise) and an
    unrelated model (other random weights)."""
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    base = model.get_weights()
    rng = np.random.default_rng(0)
    paths = []
    for i, noise in enumerate((0.0, 0.1, 0.1)):
        model.set_weights([w + noise * np.abs(w).mean() * rng.normal(size=w.shape) for w in base])
        paths.append(directory / f"retrain{i}.keras")
        model.save(paths[-1])
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in base])
    paths.append(directory / "unrelated.keras")
    model.save(paths[-1])
    return paths


@pytest.fixture
def gate(pytester, monkeypatch):
    from convviz_check.backends import current_backend

    monkeypatch.delenv("CI", raising=False)
    pytester.makeini(f"[pytest]\nconvviz_golden_backend = {current_backend()}\n")
    pytester.makepyfile(test_gate=GATE)
    models = _tiny_models(pytester.path)
    pytester.runpytest(f"--convviz-model={models[0]}", "--convviz-update=missing")
    return pytester, models


def test_calibrate_writes_a_profile_that_the_next_run_reads(gate, capsys):
    pytester, models = gate
    args = ["calibrate", "--models", *map(str, models[:3]), "--gate", str(pytester.path)]
    assert main([*args, "--margin", "1.0"]) == 0, capsys.readouterr().err
    assert "activation_cka_min: values 1, " in capsys.readouterr().out
    path = pytester.path / "golden" / PROFILE_FILE
    data = json.loads(path.read_text())
    entry = data["bounds"]["activation"]["activation_cka_min"]
    assert data["k"] == 3 and len(entry["values"]) == 3
    assert entry["values"][0] == pytest.approx(1.0)  # the golden's own model
    widen = max(entry["spread"], MIN_SPREAD)  # margin 1.0
    assert 0.5 < entry["bound"] == pytest.approx(entry["worst"] - widen, abs=1e-6)
    assert [m["sha256"] for m in data["models"]] == [golden_sha(m) for m in models[:3]]
    assert data["versions"]["backend"] and data["versions"]["keras"]

    result = pytester.runpytest(
        f"--convviz-model={models[1]}", "--convviz-profile=retrain", "--convviz-results-dir=r"
    )
    result.assert_outcomes(passed=1)  # the second retrain is within bounds measured on it
    text = f"bounds calibrated on 3 retrains, {data['date']}"
    result.stdout.fnmatch_lines([f"convviz: retrain profile: {text} ({PROFILE_FILE})"])
    (judged,) = json.loads((pytester.path / "r" / "report.json").read_text())["entries"]
    assert judged["bounds"] == text
    assert judged["metrics"]["cka"]["bound"] == pytest.approx(entry["bound"])
    # An unrelated model fails the calibrated bound, and the failure says which bounds.
    other = pytester.runpytest(f"--convviz-model={models[3]}", "--convviz-profile=retrain")
    other.assert_outcomes(failed=1)
    other.stdout.fnmatch_lines([f"*compared with the retrain profile's {text})*"])
    # Measuring (what calibrate runs) records the same failure and fails no test.
    measured = pytester.runpytest(
        f"--convviz-model={models[3]}", "--convviz-profile=retrain", "--convviz-measure",
        "--convviz-results-dir=m",
    )  # fmt: skip
    measured.assert_outcomes(passed=1)
    (entry,) = json.loads((pytester.path / "m" / "report.json").read_text())["entries"]
    assert entry["status"] == "failed" and not entry["metrics"]["cka"]["ok"]


PATTERN_GATE = """
import numpy as np
import pytest

import convviz_check as cc
from convviz_check.plugin import gate_model


def test_patterns(convviz, pytestconfig):
    model = cc.load_model(gate_model(pytestconfig))
    images = np.random.default_rng(0).uniform(0, 1, (4, 16, 16, 3)).astype("float32")
    patterns = convviz.filter_patterns(model, "conv", steps=10)
    convviz.check("patterns", patterns, kind="pattern", images=images)
"""


def test_calibrate_bounds_the_pattern_gap_of_pattern_goldens_with_a_record(
    pytester, monkeypatch, capsys
):
    from convviz_check.backends import current_backend

    monkeypatch.delenv("CI", raising=False)
    pytester.makeini(f"[pytest]\nconvviz_golden_backend = {current_backend()}\n")
    pytester.makepyfile(test_gate=PATTERN_GATE)
    models = _tiny_models(pytester.path)
    written = pytester.runpytest(f"--convviz-model={models[0]}", "--convviz-update=missing")
    written.assert_outcomes(passed=1)
    args = ["calibrate", "--models", *map(str, models[:3]), "--gate", str(pytester.path)]
    assert main(args) == 0, capsys.readouterr().err
    assert "pattern_response_gap_max: values 0, " in capsys.readouterr().out
    data = json.loads((pytester.path / "golden" / PROFILE_FILE).read_text())
    entry = data["bounds"]["pattern"]["pattern_response_gap_max"]
    assert entry["metric"] == "pattern_gap" and entry["direction"] == "max"
    assert entry["values"][0] == 0.0  # the golden's own model: every pattern kept
    widen = 1.5 * max(entry["spread"], MIN_SPREAD)  # the default margin
    assert entry["bound"] == pytest.approx(entry["worst"] + widen, abs=1e-6)
    assert entry["bound"] < 0.65  # these retrains are closer than the built-in bound
    # The next retrain-profile run judges the patterns with the calibrated bound.
    result = pytester.runpytest(
        f"--convviz-model={models[1]}", "--convviz-profile=retrain", "--convviz-results-dir=r"
    )
    result.assert_outcomes(passed=1)
    (judged,) = json.loads((pytester.path / "r" / "report.json").read_text())["entries"]
    assert judged["metrics"]["pattern_gap"]["bound"] == pytest.approx(entry["bound"])
    # A model with unrelated weights (gap about 0.1: under the built-in 0.65) fails it.
    other = pytester.runpytest(f"--convviz-model={models[3]}", "--convviz-profile=retrain")
    other.assert_outcomes(failed=1)
    other.stdout.fnmatch_lines(["*lost a detector: layer 'conv': *"])


def test_worst_values_and_the_profile_take_the_pattern_gap():
    def entry(golden_rel, gap):
        metrics = {"pattern_gap": {"value": gap}, "lost_channels": {"value": 3}}
        return {"profile": "retrain", "golden": golden_rel, "kind": "pattern",
                "status": "passed", "metrics": metrics}  # fmt: skip

    worst, per_check = worst_values({"entries": [entry("t/a", 0.2), entry("t/b", 0.4)]}, "m")
    assert worst == {"pattern_response_gap_max": 0.4}  # the largest gap: an error
    assert per_check["t/a"] == {"pattern_response_gap_max": 0.2}
    measured = [{"pattern_response_gap_max": v} for v in (0.3, 0.4, 0.5)]
    data = build_profile(measured, MODELS, date="2026-12-07")
    gap = data["bounds"]["pattern"]["pattern_response_gap_max"]
    assert gap["bound"] == pytest.approx(0.8) and gap["informative"]  # 0.5 + 1.5 x 0.2
    assert choose_bound([1.5, 1.9, 1.7], "max", 1.5, "pattern_gap")["informative"] is False


def test_measuring_needs_a_results_dir_and_no_update(pytester, monkeypatch):
    monkeypatch.delenv("CI", raising=False)  # CI refuses any update first, for its own reason
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    for args in (["--convviz-measure"], ["--convviz-measure", "--convviz-results-dir=r",
                                          "--convviz-update=missing"]):  # fmt: skip
        result = pytester.runpytest(*args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["*--convviz-measure records every check's metrics*"])


def golden_sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_bad_profile_file_stops_the_run_at_start_up(gate):
    pytester, models = gate
    data = _valid()
    data["bounds"]["activation"]["activation_cka_min"]["bound"] = "high"
    (pytester.path / "golden" / PROFILE_FILE).write_text(json.dumps(data))
    result = pytester.runpytest(f"--convviz-model={models[1]}", "--convviz-profile=retrain")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*Invalid retrain profile *{PROFILE_FILE}: bounds.activation.activation_cka_min.bound "
         "must be a finite number. Received: 'high'*"]
    )  # fmt: skip
    assert not np.any([line.startswith("PASSED") for line in result.outlines])
