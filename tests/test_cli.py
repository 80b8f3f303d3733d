import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_cli_help_works_without_importing_keras():
    code = (
        "import sys; sys.modules['keras'] = None\n"
        "from convviz_check.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "convviz-check" in out.stdout


def test_console_script_is_installed():
    # The entry point pip installs next to the interpreter (not `python -m`).
    script = Path(sys.executable).with_name("convviz-check")
    assert script.exists(), f"no console script at {script}"
    out = subprocess.run(
        [str(script), "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "convviz_check" in out.stdout


def test_package_import_is_lazy():
    code = (
        "import sys; import convviz_check as cc\n"
        "assert 'keras' not in sys.modules, 'import convviz_check imported keras'\n"
        "assert 'load_model' in dir(cc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_no_command_is_a_usage_error_that_prints_the_commands(capsys):
    from convviz_check.cli import main

    assert main([]) == 2
    err = capsys.readouterr().err
    assert "a COMMAND is required" in err and "explain" in err and "agree" in err


def test_prune_says_what_it_did_even_when_there_is_nothing(tmp_path, capsys):
    from convviz_check.cli import main

    assert main(["golden", "prune", "--dry-run", "--golden-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert f"would delete 0 file(s) in {tmp_path}: orphan and temp files" in err
    assert "--report" in err  # how to also prune unused goldens


# --- errors, --debug, --verbose, quiet logs ---------------------------------------------------
def test_debug_and_verbose_are_accepted_before_and_after_the_subcommand():
    from convviz_check.cli import build_parser

    parser = build_parser()
    tail = ["explain", "m.keras", "x.png", "--out", "o"]
    assert parser.parse_args(tail).debug is False
    assert parser.parse_args(["--debug", *tail]).debug is True
    after = parser.parse_args([*tail, "--debug", "--verbose"])
    assert after.debug is True and after.verbose is True
    assert parser.parse_args(["golden", "list", "--debug"]).debug is True  # nested too


def _failing_run(error: BaseException):
    def run(args):
        raise error

    return run


def test_an_unexpected_error_is_one_line_and_the_traceback_needs_debug(monkeypatch, capsys):
    from convviz_check.cli import explain, main

    monkeypatch.setattr(explain, "run", _failing_run(RuntimeError("boom\nsecond line")))
    argv = ["explain", "m.keras", "x.png", "--out", "o"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "convviz-check: error: RuntimeError: boom second line (--debug shows the traceback)"
    ]
    assert main(["--debug", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "RuntimeError: boom" in err


def test_a_convviz_error_is_one_line_without_the_worker_traceback(monkeypatch, capsys):
    from convviz_check.cli import explain, main
    from convviz_check.errors import WorkerError

    error = WorkerError("[torch worker] died (KeyError)\nWorker traceback (last lines):\n  x")
    monkeypatch.setattr(explain, "run", _failing_run(error))
    assert main(["explain", "m.keras", "x.png", "--out", "o"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["convviz-check: error: [torch worker] died (KeyError)"]


def test_framework_deprecation_warnings_are_hidden_unless_verbose(monkeypatch):
    import warnings

    from convviz_check.cli import explain, main

    def run(args):
        warnings.warn_explicit("old keras call", DeprecationWarning, "k.py", 1, module="keras.x")
        warnings.warn_explicit("ours", DeprecationWarning, "c.py", 1, module="convviz_check.x")
        return 0

    monkeypatch.setattr(explain, "run", run)
    for flags, expected in (([], ["ours"]), (["--verbose"], ["old keras call", "ours"])):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            monkeypatch.setattr(sys, "warnoptions", [])
            assert main([*flags, "explain", "m.keras", "x.png", "--out", "o"]) == 0
        assert sorted(str(w.message) for w in caught) == expected


def test_tensorflow_python_warnings_are_hidden_unless_verbose(monkeypatch):
    import logging

    from convviz_check.cli import explain, main

    tf_logger = logging.getLogger("tensorflow")
    monkeypatch.setattr(tf_logger, "level", logging.NOTSET)  # restored afterwards
    seen = []
    monkeypatch.setattr(
        explain, "run", lambda args: seen.append(tf_logger.isEnabledFor(logging.WARNING))
    )
    assert main(["--verbose", "explain", "m.keras", "x.png", "--out", "o"]) == 0
    assert main(["explain", "m.keras", "x.png", "--out", "o"]) == 0
    assert seen == [True, False]


def test_native_start_up_log_lines_are_filtered_from_stderr(capfd):
    import os

    from convviz_check.cli import native_logs_filtered

    noise = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1796099554.460927   19989 port.cc:153] oneDNN custom operations are on.\n"
        "W0000 00:00:1796099554.461208   19989 cudart_stub.cc:31] Could not find cuda drivers\n"
        "E0000 00:00:1796099560.358274   19989 cuda_platform.cc:52] failed call to cuInit: x\n"
    )
    with native_logs_filtered():
        os.write(2, noise.encode())
        os.write(2, b"a real problem\n")
        os.write(2, b"I0000 is not a log line when it has no source location\n")
    err = capfd.readouterr().err
    assert err.splitlines() == [
        "a real problem",
        "I0000 is not a log line when it has no source location",
    ]


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow installed"
)
def test_a_tensorflow_run_prints_no_start_up_logs(tmp_path):
    from convviz_check.examples import model_path

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = "tensorflow"
    proc = subprocess.run(
        [sys.executable, "-m", "convviz_check", "explain", str(model_path("convnet")),
         "--scenes", "1", "--what", "activations", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    assert "\x1b[" not in proc.stdout  # no progress display when stdout is not a terminal


# --------------------------------------------------------------------------- agree --out
def _export_synthetic(root, names_and_shifts):
    from convviz_check.crossbackend.export import export_artifacts
    from tests.test_agreement import synthetic_results

    for name, shift in names_and_shifts:
        base, changed = synthetic_results(shift=shift)
        for backend, results in (("tensorflow", base), ("torch", base), ("jax", changed)):
            export_artifacts(root, backend, name, results, info={})


def test_agree_out_writes_one_page_per_exported_check_and_an_index(tmp_path, capsys):
    from convviz_check import cli

    root, out = tmp_path / "export", tmp_path / "pictures"
    _export_synthetic(root, [("tests/t.py::test_same", 0.0), ("tests/t.py::test_moved", 0.5)])
    assert cli.main(["agree", "--exported", str(root), "--out", str(out)]) == 1
    stdout = capsys.readouterr().out
    assert f"pictures: {out / 'index.html'}" in stdout
    # each diff's scale is printed: the planted 0.5 on jax's layer b, 0 where identical
    assert "activations diff |tensorflow - jax|, scaled to its own max: white = 0.5" in stdout
    assert "gradcam diff |tensorflow - torch|: identical (0 everywhere)" in stdout
    index = (out / "index.html").read_text()
    assert "2 check(s), 1 disagree" in index
    pages = sorted(p.parent.name for p in out.glob("*/index.html"))
    assert len(pages) == 2 and all(f"href='{p}/index.html'" in index for p in pages)
    for page in out.glob("*/index.html"):
        html = page.read_text()
        assert "drawn alone (the export route keeps no input images)" in html
        assert "<a href='../index.html'>all checks</a>" in html
        assert len(list(page.parent.glob("*.png"))) == 6  # 3 techniques x (strip, diff)


@pytest.mark.crossbackend
def test_agree_out_draws_the_three_backends_of_a_model_run_here(
    tmp_path, capsys, monkeypatch, request
):
    import numpy as np

    from convviz_check import cli
    from convviz_check.crossbackend import agreement as ag
    from tests import _worker_ops
    from tests.test_agreement import IMAGE_SHAPE, require_or_skip, tiny_convnet

    require_or_skip()
    pool = _worker_ops.shared_pool(request.config)
    monkeypatch.setattr(ag, "default_pool", lambda: pool)  # the warm session pool
    model = tmp_path / "tiny.keras"
    tiny_convnet().save(model)
    images = np.random.default_rng(1).uniform(0, 1, (3, *IMAGE_SHAPE)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    out = tmp_path / "pictures"
    argv = ["agree", str(model), "--images", str(tmp_path / "images.npy"), "--filters", "2"]
    assert cli.main([*argv, "--filter-steps", "3", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "cross-backend agreement passed" in stdout
    for technique in ("activations", "gradcam", "filters"):
        assert f"  {technique} diff |" in stdout
        assert (out / f"{technique}.png").is_file() and (out / f"{technique}.diff.png").is_file()
    html = (out / "index.html").read_text()
    assert "heatmaps over the input images" in html
    # the table comes first, at full precision, as the text prints it
    assert html.index("&lt;= 0.0001") < html.index("<h2>Pictures</h2>")


# ------------------------------------------------------------------ agree reads photos
def _gray_model_and_photo(tmp_path):
    """A 16x16x1 model that takes [-1, 1] (nothing in it says so) and a 20x20
    grayscale PNG: what a team with its own legacy model has."""
    import numpy as np
    from PIL import Image

    from tests import _models

    model = tmp_path / "gray.keras"
    _models.sequential((16, 16, 1), seed=3, name="gray").save(model)
    pixels = (np.arange(400, dtype=np.uint16).reshape(20, 20) % 256).astype(np.uint8)
    photo = tmp_path / "face.png"
    Image.fromarray(pixels, mode="L").save(photo)
    return model, photo


def _fake_agreement(monkeypatch):
    from convviz_check.crossbackend import agreement as ag

    calls = []

    def fake(model, images, **kwargs):
        calls.append((images, kwargs))
        return ag.AgreementReport(model=model, backends=("tensorflow", "jax"), what=kwargs["what"])

    monkeypatch.setattr(ag, "agreement", fake)
    return calls


def test_agree_reads_a_grayscale_photo_for_a_minus_one_to_one_model_as_explain_does(
    tmp_path, monkeypatch, capsys
):
    import numpy as np

    import convviz_check as cc
    from convviz_check import cli
    from convviz_check.cli import images as img_lib

    model, photo = _gray_model_and_photo(tmp_path)
    calls = _fake_agreement(monkeypatch)
    argv = ["agree", str(model), str(photo), "--input-range", "-1", "1", "--what", "gradcam"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    ((images, kwargs),) = calls
    assert images.shape == (1, 16, 16, 1)  # fitted to the model: size and one channel
    assert images.min() >= -1.0 and images.max() <= 1.0 and images.min() < -0.5
    assert kwargs["input_range"] == (-1.0, 1.0)  # the filter patterns' range too
    # exactly what explain gives the model for the same file and flags
    expected = img_lib.read_for_model(cc.load_model(str(model)), [str(photo)], stated=(-1, 1))
    np.testing.assert_array_equal(images, expected.model_input)
    out = capsys.readouterr().out
    assert "values: [0, 255] pixels mapped linearly to [-1, 1] (--input-range)" in out
    # The deprecated --rescale still reads as before (as given, times the factor), saying so.
    assert cli.main(["agree", str(model), "--images", str(photo), "--rescale", "0.5"]) == 0
    assert calls[-1][0].shape == (1, 20, 20, 1) and float(calls[-1][0].max()) == 127.5
    assert "--rescale is deprecated" in capsys.readouterr().err
    assert cli.main([*argv, "--rescale", "0.5"]) == 2
    assert "cannot be combined" in capsys.readouterr().err


def test_agree_and_explain_share_one_image_argument_module():
    from convviz_check.cli import build_parser

    parser = build_parser()
    actions = {
        name: {a.dest for a in parser._subparsers._group_actions[0].choices[name]._actions}
        for name in ("agree", "explain")
    }
    for dest in ("input_range", "preprocess", "class_names", "image_files"):
        assert dest in actions["agree"] and dest in actions["explain"], dest


@pytest.mark.crossbackend
def test_agree_runs_the_backends_on_a_grayscale_photo_of_a_minus_one_to_one_model(
    tmp_path, capsys, monkeypatch, request
):
    from convviz_check import cli
    from convviz_check.crossbackend import agreement as ag
    from tests import _worker_ops
    from tests.test_agreement import require_or_skip

    require_or_skip(("tensorflow", "jax"))
    pool = _worker_ops.shared_pool(request.config)
    monkeypatch.setattr(ag, "default_pool", lambda: pool)
    model, photo = _gray_model_and_photo(tmp_path)
    argv = ["agree", str(model), str(photo), "--input-range", "-1", "1"]
    argv += ["--backends", "tensorflow,jax", "--filters", "2", "--steps", "3"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert "cross-backend agreement passed" in capsys.readouterr().out
