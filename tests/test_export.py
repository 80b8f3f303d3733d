"""The export route (convviz_check/crossbackend/export.py): each backend environment
exports, ``convviz-check agree --exported DIR`` compares.

The end-to-end test exports the running backend in-process and the other two from
subprocesses (what each backend environment does with ``--convviz-export``), so it is
marked ``crossbackend``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from convviz_check import cli, storage
from convviz_check.artifacts import Artifact
from convviz_check.crossbackend import export as ex
from convviz_check.errors import InputError, StorageError
from tests import _worker_ops
from tests.test_agreement import require_or_skip, synthetic_results, tiny_convnet

ALL = ("tensorflow", "torch", "jax")
ROOT = Path(__file__).resolve().parents[1]
IMAGES = np.random.default_rng(1).uniform(0, 1, (2, 24, 24, 3)).astype(np.float32)
FAST = {"filters": 2, "filter_steps": 3}


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "tiny.keras"
    tiny_convnet().save(path)
    return path


def test_export_dirnames_are_safe_and_distinct() -> None:
    names = ["tests/a.py::t[x]", "tests/a.py::t[y]", "../../etc", "ok-name", "a/b", "a_b"]
    dirs = [ex.export_dirname(n) for n in names]
    assert len(set(dirs)) == len(dirs)
    assert all("/" not in d and ".." not in d and d == storage.sanitize_part(d) for d in dirs)
    assert ex.export_dirname("ok-name") == "ok-name"
    assert len(ex.export_dirname("x/" * 200).encode()) <= 180


def test_exported_artifacts_read_back_unchanged(tmp_path: Path) -> None:
    base, _ = synthetic_results()
    out = ex.export_artifacts(tmp_path, "torch", "tests/t.py::c", base, info={"model": "m.keras"})
    assert out == tmp_path / ex.export_dirname("tests/t.py::c") / "torch"
    # every file written whole (no temporary file left behind)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{t}.{s}" for t in base for s in ("json", "npz")] + ["info.json"]
    )
    ((infos, results),) = ex.load_exported(tmp_path).values()
    assert infos["torch"] == {
        "model": "m.keras",
        "name": "tests/t.py::c",
        "backend": "torch",
        "format": ex.EXPORT_FORMAT,
    }
    for technique, artifact in base.items():
        back = results["torch"][technique]
        assert (back.kind, back.layout, back.attrs) == (
            artifact.kind,
            artifact.layout,
            artifact.attrs,
        )
        assert back.content_sha256() == artifact.content_sha256()


def test_plain_values_are_exported_as_artifacts(tmp_path: Path) -> None:
    base, _ = synthetic_results()
    values = {t: a.to_value() for t, a in base.items()}
    ex.export_artifacts(tmp_path, "jax", "c", values)
    ((_, results),) = ex.load_exported(tmp_path).values()
    assert results["jax"]["filters"].attrs == {"filters": [0, 1, 2]}
    assert results["jax"]["gradcam"].to_value().layer == "b"
    assert list(results["jax"]["activations"].arrays) == ["a", "b"]


def test_export_refuses_unknown_backends_techniques_and_kinds(tmp_path: Path) -> None:
    base, _ = synthetic_results()
    with pytest.raises(InputError, match="Unknown backend"):
        ex.export_artifacts(tmp_path, "mxnet", "c", base)
    with pytest.raises(InputError, match="Unknown technique"):
        ex.export_artifacts(tmp_path, "jax", "c", {"saliency": base["filters"]})
    with pytest.raises(InputError, match="kind 'activation'"):
        ex.export_artifacts(tmp_path, "jax", "c", {"activations": base["filters"]})
    flat = Artifact.from_value(np.zeros((1, 4, 4), np.float32), "heatmap")
    with pytest.raises(InputError, match="layout 'gradcam'"):
        ex.export_artifacts(tmp_path, "jax", "c", {"gradcam": flat})


def test_exports_of_another_format_or_layout_are_refused(tmp_path: Path) -> None:
    base, _ = synthetic_results()
    out = ex.export_artifacts(tmp_path, "jax", "c", base)
    described = storage.read_json(out / "gradcam.json")
    storage.write_json(out / "gradcam.json", {**described, "layout": "array"})
    with pytest.raises(StorageError, match="gradcam.json"):
        ex.load_exported(tmp_path)
    storage.write_json(out / "info.json", {"name": "c", "backend": "jax", "format": 1})
    with pytest.raises(StorageError, match="export format 1"):
        ex.load_exported(tmp_path)


def test_missing_or_empty_export_dirs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="Export directory not found"):
        ex.compare_exported(tmp_path / "nowhere")
    with pytest.raises(InputError, match="No exported checks found"):
        ex.compare_exported(tmp_path)


def test_exported_check_from_one_backend_only_fails_naming_the_missing(tmp_path: Path) -> None:
    base, _ = synthetic_results()
    ex.export_artifacts(tmp_path, "torch", "only_torch", base)
    (report,) = ex.compare_exported(tmp_path).values()
    assert not report.passed
    assert "missing: ['tensorflow', 'jax']" in str(report)


def test_exported_heatmaps_of_different_classes_fail_plainly(tmp_path: Path) -> None:
    base, _ = synthetic_results()
    other, _ = synthetic_results(classes=(1, 2))
    ex.export_artifacts(tmp_path, "tensorflow", "c", base)
    ex.export_artifacts(tmp_path, "jax", "c", other)
    report = ex.compare_exported(tmp_path)["c"]
    assert not report.passed
    assert "top class differs on image 0: tensorflow=0, jax=1" in str(report)


def test_compare_exported_restricts_and_orders_the_backends(tmp_path: Path) -> None:
    base, changed = synthetic_results(shift=0.5)
    ex.export_artifacts(tmp_path, "tensorflow", "c", base, info={"model": "m.keras"})
    ex.export_artifacts(tmp_path, "torch", "c", base)
    ex.export_artifacts(tmp_path, "jax", "c", changed)
    report = ex.compare_exported(tmp_path, backends="torch,tensorflow")["c"]
    assert report.passed and report.backends == ("torch", "tensorflow")
    assert report.model == "c" and report.subjects["check"] == "c"  # torch named no model
    everything = ex.compare_exported(tmp_path)["c"]
    assert everything.backends == ALL and not everything.passed
    assert everything.model == "m.keras"  # the reference backend's info names it


# -- the running backend, in-process ---------------------------------------------------------
def test_export_current_backend_computes_here_and_exports(tiny_path: Path, tmp_path: Path) -> None:
    import keras

    import convviz_check as cc

    backend = keras.config.backend()
    out = ex.export_current_backend(
        tmp_path, "t.py::x", tiny_path, IMAGES, what=("activations", "filters"), **FAST, pool=None
    )
    assert out == tmp_path / ex.export_dirname("t.py::x") / backend
    ((infos, results),) = ex.load_exported(tmp_path).values()
    model = cc.load_model(tiny_path)
    assert infos[backend]["fingerprint"] == cc.model_fingerprint(model)
    assert infos[backend]["model"] == str(tiny_path) and infos[backend]["versions"]["keras"]
    assert set(results[backend]) == {"activations", "filters"}
    here = cc.activations(model, IMAGES)
    for name, value in here.items():
        np.testing.assert_allclose(results[backend]["activations"].arrays[name], value, rtol=1e-6)
    assert results[backend]["filters"].attrs == {"layer": "c2", "filters": [0, 1]}


def test_export_current_backend_refuses_unknown_arguments(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"Unknown keyword argument\(s\) \['filter_count'\]"):
        ex.export_current_backend(tmp_path, "x", "m.keras", IMAGES, filter_count=3)
    with pytest.raises(InputError, match="Unknown technique"):
        ex.export_current_backend(tmp_path, "x", "m.keras", IMAGES, what=("saliency",))


EXPORT_IN_SUBPROCESS = textwrap.dedent(
    """
    import sys
    import numpy as np
    from convviz_check.crossbackend.export import export_current_backend
    directory, name, source, images = sys.argv[1:5]
    export_current_backend(directory, name, source, np.load(images), filters=2, filter_steps=3)
    """
)


def _export_with(backend: str, directory: Path, name: str, source: Path, images: Path) -> None:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    argv = [sys.executable, "-c", EXPORT_IN_SUBPROCESS, str(directory), name, str(source)]
    proc = subprocess.run(
        [*argv, str(images)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{backend} export failed:\n{proc.stderr[-3000:]}"


@pytest.mark.crossbackend
def test_export_route_end_to_end(tiny_path, tmp_path, capsys) -> None:
    require_or_skip()
    import keras

    here = keras.config.backend()
    root, name = tmp_path / "export", "tests/test_m.py::test_agree"
    np.save(tmp_path / "images.npy", IMAGES)
    for backend in ALL:  # what each backend env writes with --convviz-export
        if backend == here:
            ex.export_current_backend(root, name, tiny_path, IMAGES, **FAST)
        else:
            _export_with(backend, root, name, tiny_path, tmp_path / "images.npy")
    json_path = tmp_path / "report.json"
    assert cli.main(["agree", "--exported", str(root), "--json", str(json_path)]) == 0
    out = capsys.readouterr().out
    assert "cross-backend agreement passed" in out and "1 check(s) agree" in out
    assert json.loads(json_path.read_text())[name]["passed"] is True
    # Re-export this backend from a changed model: the comparison fails and names c2.
    model = keras.saving.load_model(tiny_path)
    _worker_ops.perturb_weights(model, "c2", 0.05, seed=0)
    changed = tmp_path / "changed.keras"
    model.save(changed)
    ex.export_current_backend(root, name, changed, IMAGES, what=("activations",))
    assert cli.main(["agree", "--exported", str(root)]) == 1
    captured = capsys.readouterr()
    assert "activations disagree: worst layer c2" in captured.out
    assert "model fingerprint differs" in captured.out
    assert "1 of 1 check(s) disagree" in captured.err


# --------------------------------------------------------------------- typed parameters
def test_technique_parameters_have_their_defaults_written_once():
    import inspect

    from convviz_check.crossbackend import agreement as agreement_mod
    from convviz_check.crossbackend import requests as req

    # agreement() and artifact_params() take their defaults from the parameter classes
    for fn in (agreement_mod.agreement, req.artifact_params):
        signature = inspect.signature(fn).parameters
        assert signature["filters"].default == req.FiltersParams.filters
        assert signature["filter_steps"].default == req.FiltersParams.steps
        assert signature["batch_size" if fn is req.artifact_params else "layers"].default == (
            req.ActivationsParams.batch_size
            if fn is req.artifact_params
            else req.ActivationsParams.layers
        )
    # the JSON a worker receives reads back as the same parameters
    params = req.artifact_params(class_index=[3, 1], filters=[0, 2], filter_size=(20, 20))
    for technique, data in params.items():
        typed = req.from_json(technique, json.loads(json.dumps(data)))
        assert req.to_json(typed) == data
    assert req.from_json("gradcam", params["gradcam"]).class_index == (3, 1)
    assert req.from_json("filters", {}) == req.FiltersParams()


def test_a_misspelt_technique_parameter_is_refused_not_ignored():
    from convviz_check.crossbackend import requests as req

    with pytest.raises(InputError, match=r"Unknown filters parameter\(s\) \['step'\]"):
        req.from_json("filters", {"step": 5})
