"""Golden storage: paths, byte-stable atomic writes, sidecars, and every load error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from convviz_check import golden
from convviz_check.errors import ConvvizWarning, GoldenError, InputError
from convviz_check.types import GradCAM


def _cam(n: int = 2, h: int = 5, w: int = 6) -> GradCAM:
    rng = np.random.default_rng(3)
    heat = rng.random((n, h, w)).astype(np.float32)
    return GradCAM(
        heatmap=heat / heat.max(axis=(1, 2), keepdims=True),
        raw=heat * 3,
        class_index=np.arange(n, dtype=np.int64),
        score=np.linspace(1, 2, n).astype(np.float32),
        score_kind="logit",
        layer="block/conv",
        degenerate=np.zeros(n, bool),
        image_shape=(32, 40),
    )


def _files_bytes(base: Path) -> dict[str, bytes | None]:
    return {s: (p.read_bytes() if p.exists() else None) for s, p in golden.files_of(base).items()}


def _saved(tmp_path: Path, value, kind=None, **kw) -> Path:
    base = tmp_path / "g" / "tests" / "test_x.py" / "test_a" / "check"
    golden.save(base, golden.from_value(value, kind, **kw), {"backend": "jax"})
    return base


# ------------------------------------------------------------------------------ paths
def test_relative_path_follows_the_documented_layout():
    rel = golden.relative_path("tests/test_x.py", "test_a[1-2]", "cam")
    assert rel == PurePosixPath("tests/test_x.py/test_a[1-2]/cam")
    assert golden.scoped(rel, "torch") == PurePosixPath(
        "_backend/torch/tests/test_x.py/test_a[1-2]/cam"
    )


@pytest.mark.parametrize(
    "raw",
    ["../../etc/passwd", "a/b\\c", "..", ".", "", "x\x00y\x1fz", "ok..ok", "nul\x7f", "a:b*c?"],
)
def test_sanitize_part_removes_separators_parent_refs_and_control_chars(raw):
    out = golden.sanitize_part(raw)
    assert out and "/" not in out and "\\" not in out and ".." not in out
    assert out not in (".", "..")
    assert all(ord(c) >= 32 and ord(c) != 127 for c in out)


def test_sanitize_part_shortens_long_names_keeping_them_distinct():
    a, b = golden.sanitize_part("x" * 400 + "a"), golden.sanitize_part("x" * 400 + "b")
    assert len(a.encode()) <= 180 and a != b


def test_override_tree_name_cannot_be_claimed_by_a_test_file():
    rel = golden.relative_path("_backend/torch/test_x.py", "test_a", "c")
    assert golden.scope_of(rel) is None


@given(st.text(max_size=40), st.text(max_size=40), st.text(min_size=1, max_size=40))
def test_golden_paths_never_escape_the_golden_dir(tmp_path_factory, test_file, test_name, check):
    root = tmp_path_factory.mktemp("root")
    try:
        rel = golden.relative_path(test_file, test_name, check)
    except InputError:
        return  # nothing usable as a file path: refused, not escaped
    path = golden.inside(root, rel).resolve()
    assert root.resolve() in path.parents


def test_inside_refuses_a_symlink_leading_out_of_the_golden_dir(tmp_path):
    root, outside = tmp_path / "golden", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "tests").symlink_to(outside, target_is_directory=True)
    with pytest.raises(GoldenError, match="outside the golden directory"):
        golden.inside(root, PurePosixPath("tests/test_x.py/test_a/c"))


def test_find_looks_up_the_backend_override_first(tmp_path):
    rel = golden.relative_path("t.py", "test_a", "c")
    value = golden.from_value(np.ones((3, 3)))
    golden.save(tmp_path / rel, value)
    assert golden.find(tmp_path, rel, "torch") == (tmp_path / rel, False)
    golden.save(tmp_path / golden.scoped(rel, "torch"), value)
    assert golden.find(tmp_path, rel, "torch") == (tmp_path / golden.scoped(rel, "torch"), True)
    assert golden.find(tmp_path, rel, "jax") == (tmp_path / rel, False)
    assert golden.find(tmp_path, golden.relative_path("t.py", "test_b", "c"), "jax") is None


# ----------------------------------------------------------------------- round trips
@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=1, max_dims=4, max_side=6),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
    )
)
def test_round_trip_is_bit_exact_for_any_float32_array(tmp_path_factory, arr):
    base = tmp_path_factory.mktemp("rt") / "c"
    golden.save(base, golden.from_value(arr, "activation"), preview=np.zeros((1, 1), np.uint8))
    back = golden.load(base, kind="activation").value()
    assert back.dtype == np.float32 and back.shape == arr.shape
    assert np.array_equal(back.view(np.uint32), arr.view(np.uint32))


def test_activation_dict_round_trip_keeps_names_with_slashes_and_order(tmp_path):
    acts = {"outer/conv": np.arange(8.0).reshape(1, 2, 2, 2), "pool": np.ones((1, 1, 1, 2))}
    back = golden.load(_saved(tmp_path, acts)).value()
    assert list(back) == ["outer/conv", "pool"]
    assert np.array_equal(back["outer/conv"], acts["outer/conv"].astype(np.float32))


def test_gradcam_round_trip_restores_every_field(tmp_path):
    cam = _cam()
    back = golden.load(_saved(tmp_path, cam), kind="heatmap").value()
    assert isinstance(back, GradCAM)
    assert np.array_equal(back.heatmap, cam.heatmap) and np.array_equal(back.raw, cam.raw)
    assert back.class_index.tolist() == [0, 1] and back.degenerate.dtype == bool
    assert (back.layer, back.score_kind, back.image_shape) == ("block/conv", "logit", (32, 40))


def test_rewrites_are_byte_stable_with_fixed_zip_timestamps(tmp_path):
    value = golden.from_value({"a": np.linspace(0, 1, 24).reshape(1, 2, 3, 4)})
    first, second = tmp_path / "one" / "c", tmp_path / "two" / "c"
    golden.save(first, value, {"backend": "tensorflow"})
    golden.save(second, value, {"backend": "tensorflow"})
    assert _files_bytes(first) == _files_bytes(second)
    with zipfile.ZipFile(golden.files_of(first)[".npz"]) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_saving_identical_content_leaves_existing_files_untouched(tmp_path):
    base = tmp_path / "c"
    golden.save(base, golden.from_value(np.ones((4, 4))), {"backend": "jax", "cpu": {"threads": 1}})
    before = _files_bytes(base)
    # Same arrays from another machine: no rewrite, so version control sees no change.
    golden.save(base, golden.from_value(np.ones((4, 4))), {"backend": "jax", "cpu": {"threads": 8}})
    assert _files_bytes(base) == before


def test_sidecar_has_sorted_documented_keys(tmp_path):
    base = _saved(tmp_path, np.ones((2, 3, 3)), "heatmap")
    text = golden.files_of(base)[".json"].read_text()
    side = json.loads(text)
    for key in (
        "format_version", "kind", "shape", "dtype", "layout", "stats", "sha256", "backend",
        "versions", "cpu", "model_fingerprint", "tolerance",
    ):  # fmt: skip
        assert key in side
    assert list(side) == sorted(side)
    assert side["kind"] == "heatmap" and side["shape"] == {"value": [2, 3, 3]}
    assert side["stats"]["value"]["max"] == 1.0 and side["backend"] == "jax"


def test_preview_png_is_written_next_to_the_golden(tmp_path):
    base = tmp_path / "c"
    golden.save(base, golden.from_value(np.eye(7, dtype=np.float32)))
    assert golden.files_of(base)[".png"].read_bytes().startswith(b"\x89PNG")


# ------------------------------------------------------------------ storage options
def test_float16_option_stores_half_and_loads_it_for_compare(tmp_path):
    acts = {"a": np.linspace(-3, 3, 64, dtype=np.float32).reshape(1, 4, 4, 4)}
    base = _saved(tmp_path, acts, dtype="float16")
    g = golden.load(base)
    # kept float16 so that compare() knows the storage rounding (widens its bounds)
    assert g.arrays["a"].dtype == np.float16 and g.value()["a"].dtype == np.float16
    assert np.allclose(g.value()["a"], acts["a"], atol=2e-3)


def test_float16_refuses_values_that_overflow():
    with pytest.raises(InputError, match="float16"):
        golden.from_value(np.array([[1e6, 0.0]], np.float32), "heatmap", dtype="float16")


def test_unknown_storage_dtype_is_refused():
    with pytest.raises(InputError, match="float32' or 'float16"):
        golden.from_value(np.ones((2, 2)), dtype="int8")


def test_layer_subset_keeps_only_the_named_layers_in_model_order():
    acts = {"c1": np.ones((1, 2, 2, 1)), "c2": np.ones((1, 2, 2, 1)), "c3": np.ones((1, 2, 2, 1))}
    assert list(golden.from_value(acts, layers=["c3", "c1"]).arrays) == ["c1", "c3"]
    with pytest.raises(InputError, match="nope"):
        golden.from_value(acts, layers=["nope"])


def test_bare_4d_array_needs_a_kind():
    with pytest.raises(InputError, match="kind= is required"):
        golden.from_value(np.ones((1, 4, 4, 3)))
    assert golden.infer_kind(np.ones((4, 4)), None) == "heatmap"
    assert golden.infer_kind(_cam(), None) == "heatmap"
    with pytest.raises(InputError, match="GradCAM is a heatmap"):
        golden.infer_kind(_cam(), "pattern")


def test_check_over_20_mb_warns_with_its_size(tmp_path):
    big = {"a": np.zeros((1, 1, 2300, 2300), np.float32)}  # 21.2 MB
    with pytest.warns(ConvvizWarning, match=r"20\.2 MB.*float16"):
        golden.save(tmp_path / "c", golden.from_value(big), preview=np.zeros((1, 1), np.uint8))


# --------------------------------------------------------------------- load errors
def _assert_load_fails_without_changes(base: Path, match: str, kind: str | None = None) -> None:
    before = _files_bytes(base)
    with pytest.raises(GoldenError, match=match):
        golden.load(base, kind=kind)
    assert _files_bytes(base) == before


def test_corrupt_npz_is_a_clear_error(tmp_path):
    base = _saved(tmp_path, np.ones((3, 3)))
    golden.files_of(base)[".npz"].write_bytes(b"PK\x03\x04 truncated garbage")
    _assert_load_fails_without_changes(base, "corrupt")


def test_object_array_npz_is_refused_without_unpickling(tmp_path):
    base = _saved(tmp_path, np.ones((3, 3)))
    with open(golden.files_of(base)[".npz"], "wb") as f:
        np.savez(f, value=np.array([{"evil": 1}], dtype=object))
    _assert_load_fails_without_changes(base, "object arrays")


def test_invalid_sidecar_json_is_a_clear_error(tmp_path):
    base = _saved(tmp_path, np.ones((3, 3)))
    golden.files_of(base)[".json"].write_text("{ not json")
    _assert_load_fails_without_changes(base, "not valid JSON")


def test_missing_sidecar_is_a_clear_error(tmp_path):
    base = _saved(tmp_path, np.ones((3, 3)))
    golden.files_of(base)[".json"].unlink()
    _assert_load_fails_without_changes(base, "sidecar .* is missing")


def test_git_lfs_pointer_tells_the_user_to_pull(tmp_path):
    base = _saved(tmp_path, np.ones((3, 3)))
    golden.files_of(base)[".npz"].write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1234\n"
    )
    _assert_load_fails_without_changes(base, "git lfs pull")


def _edit_sidecar(base: Path, **changes) -> None:
    path = golden.files_of(base)[".json"]
    side = json.loads(path.read_text())
    side.update(changes)
    path.write_text(json.dumps(side))


def test_shape_mismatch_with_sidecar_is_a_clear_error(tmp_path):
    base = _saved(tmp_path, np.ones((3, 3)))
    _edit_sidecar(base, shape={"value": [9, 1]})
    _assert_load_fails_without_changes(base, r"Shape mismatch.*\(3, 3\).*\(9, 1\)")


def test_dtype_mismatch_with_sidecar_is_a_clear_error(tmp_path):
    base = _saved(tmp_path, np.ones((3, 3)))
    _edit_sidecar(base, dtype={"value": "float16"})
    _assert_load_fails_without_changes(base, "Dtype mismatch.*float32.*float16")


def test_kind_mismatch_is_a_clear_error(tmp_path):
    base = _saved(tmp_path, np.ones((3, 3)))
    _assert_load_fails_without_changes(base, "kind='heatmap'.*kind='pattern'", kind="pattern")


def test_content_not_matching_sidecar_hash_is_a_clear_error(tmp_path):
    base = _saved(tmp_path, np.ones((3, 3)))
    _edit_sidecar(base, sha256="0" * 64)
    _assert_load_fails_without_changes(base, "does not match its sidecar sha256")


def test_remove_deletes_the_check_and_prunes_empty_directories(tmp_path):
    base = _saved(tmp_path, np.ones((3, 3)))
    golden.remove(base, tmp_path / "g")
    assert not (tmp_path / "g" / "tests").exists() and (tmp_path / "g").exists()


def test_iter_checks_lists_neutral_and_override_checks(tmp_path):
    rel = golden.relative_path("t.py", "test_a", "c")
    golden.save(tmp_path / rel, golden.from_value(np.ones((2, 2))))
    golden.save(tmp_path / golden.scoped(rel, "jax"), golden.from_value(np.ones((2, 2))))
    checks = list(golden.iter_checks(tmp_path))
    assert checks == [golden.scoped(rel, "jax"), rel]
    assert [golden.scope_of(c) for c in checks] == ["jax", None]


def test_storage_modules_import_without_keras_or_a_framework():
    code = (
        "import sys\n"
        "for m in ('keras', 'tensorflow', 'torch', 'jax', 'pytest'):\n"
        "    sys.modules[m] = None\n"
        "import convviz_check.golden, convviz_check.report, convviz_check.golden_cli\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_float16_activation_golden_compares_within_widened_same_backend_bounds():
    # value() keeps float16 so that compare() widens its bounds by float16 rounding; a
    # float32 obtained equal to the stored values up to that rounding passes.
    from convviz_check.compare import compare

    rng = np.random.default_rng(0)
    acts = {"conv": (rng.normal(size=(1, 8, 8, 4)) * 3).astype(np.float32)}
    stored = golden.from_value(acts, dtype="float16").value()
    assert stored["conv"].dtype == np.float16
    assert compare(stored, acts, "activation").passed
    moved = {"conv": acts["conv"] * 1.01}
    assert not compare(stored, moved, "activation").passed
