"""convviz_check.golden: paths, the ownership rule (place), sidecars, save / load of a
check's files and every load error. The codec and the atomic writer are tested in
test_storage.py, values <-> artifacts in test_artifacts.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from convviz_check import golden, sidecars
from convviz_check.artifacts import Artifact
from convviz_check.errors import ConvvizWarning, GoldenError, InputError, StorageError
from convviz_check.types import GradCAM
from tests._models import gradcam_result


def _files_bytes(base: Path) -> dict[str, bytes | None]:
    return {s: (p.read_bytes() if p.exists() else None) for s, p in golden.files_of(base).items()}


def _saved(tmp_path: Path, value, kind=None, **kw) -> Path:
    base = tmp_path / "g" / "tests" / "test_x.py" / "test_a" / "check"
    golden.save(base, Artifact.from_value(value, kind, **kw), {"backend": "jax"})
    return base


# ------------------------------------------------------------------------------ paths
def test_relative_path_follows_the_documented_layout():
    rel = golden.relative_path("tests/test_x.py", "test_a[1-2]", "cam")
    assert rel == PurePosixPath("tests/test_x.py/test_a[1-2]/cam")
    assert golden.scoped(rel, "torch") == PurePosixPath(
        "_backend/torch/tests/test_x.py/test_a[1-2]/cam"
    )
    assert golden.scoped(rel, None) == rel
    assert golden.relative_path("tests\\win\\test_x.py", "t", "c") == PurePosixPath(
        "tests/win/test_x.py/t/c"
    )


def test_relative_path_sanitizes_every_part():
    rel = golden.relative_path("../tests/test_x.py", "test_a[../x/y]", "a/b")
    assert rel == PurePosixPath("__/tests/test_x.py/test_a[_._x_y]/a_b")
    assert all(part not in ("..", ".") and "/" not in part for part in rel.parts)


def test_relative_path_needs_a_test_file():
    with pytest.raises(InputError, match="test_file must name a file"):
        golden.relative_path("./", "test_a", "c")


def test_override_tree_name_cannot_be_claimed_by_a_test_file():
    rel = golden.relative_path("_backend/torch/test_x.py", "test_a", "c")
    assert golden.scope_of(rel) is None
    assert rel.parts[0] == "_backend_"


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
    with pytest.raises(GoldenError, match="outside its directory"):
        golden.inside(root, PurePosixPath("tests/test_x.py/test_a/c"))


# ------------------------------------------------------------------------ ownership
REL = PurePosixPath("t.py/test_a/c")


def _store(root: Path, rel: PurePosixPath, value=None) -> Path:
    base = root / rel
    golden.save(base, Artifact.from_value(np.ones((3, 3)) if value is None else value))
    return base


def test_place_under_the_reference_backend_may_write_the_neutral_golden(tmp_path):
    p = golden.place(tmp_path, REL, "tensorflow", "tensorflow")
    assert (p.existing, p.is_override, p.cross) == (None, False, False)
    assert p.write_to == p.target == tmp_path / REL and p.refusal == ""
    _store(tmp_path, REL)
    p = golden.place(tmp_path, REL, "tensorflow", "tensorflow")
    assert p.existing == tmp_path / REL and not p.cross and p.write_to == tmp_path / REL


def test_place_under_another_backend_compares_cross_backend_and_refuses_writes(tmp_path):
    p = golden.place(tmp_path, REL, "torch", "tensorflow")
    assert p.existing is None and p.cross and p.write_to is None
    assert p.target == tmp_path / REL
    assert "owned by the reference backend 'tensorflow'" in p.refusal
    assert "under 'torch'" in p.refusal
    _store(tmp_path, REL)
    p = golden.place(tmp_path, REL, "torch", "tensorflow")
    assert p.existing == tmp_path / REL and p.cross and p.write_to is None


def test_place_with_allow_override_writes_the_backends_own_tree(tmp_path):
    override = tmp_path / "_backend" / "torch" / REL
    p = golden.place(tmp_path, REL, "torch", "tensorflow", allow_override=True)
    assert p.existing is None and p.cross and p.write_to == override and p.target == override
    _store(tmp_path, REL)
    p = golden.place(tmp_path, REL, "torch", "tensorflow", allow_override=True)
    # Until the override exists, the neutral golden is what is compared (cross-backend).
    assert p.existing == tmp_path / REL and p.cross and p.write_to == override
    assert p.target == tmp_path / REL


def test_an_existing_override_is_looked_up_first_and_owned_by_its_backend(tmp_path):
    _store(tmp_path, REL)
    override = _store(tmp_path, golden.scoped(REL, "torch"))
    for allow in (False, True):
        p = golden.place(tmp_path, REL, "torch", "tensorflow", allow_override=allow)
        assert (p.existing, p.is_override, p.cross) == (override, True, False)
        assert p.write_to == override and p.refusal == ""
    # jax has no override: the neutral golden, cross-backend.
    p = golden.place(tmp_path, REL, "jax", "tensorflow")
    assert p.existing == tmp_path / REL and not p.is_override and p.cross


def test_a_sidecar_alone_counts_as_an_existing_check(tmp_path):
    base = _store(tmp_path, REL)
    golden.files_of(base)[".npz"].unlink()
    assert golden.exists(base)
    assert golden.place(tmp_path, REL, "tensorflow", "tensorflow").existing == base


def test_owner_of_is_the_override_backend_or_the_reference():
    assert golden.owner_of(REL, "tensorflow") == "tensorflow"
    assert golden.owner_of(golden.scoped(REL, "jax"), "tensorflow") == "jax"
    assert golden.scope_of(golden.scoped(REL, "jax")) == "jax"
    assert golden.scope_of(REL) is None


def test_place_refuses_a_path_leaving_the_golden_dir(tmp_path):
    with pytest.raises(GoldenError, match="outside its directory"):
        golden.place(tmp_path, PurePosixPath("../x/c"), "tensorflow", "tensorflow")


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
    golden.save(base, Artifact.from_value(arr, "activation"))
    back = golden.load(base, kind="activation").artifact.to_value()
    assert back.dtype == np.float32 and back.shape == arr.shape
    assert np.array_equal(back.view(np.uint32), arr.view(np.uint32))


def test_activation_dict_round_trip_keeps_names_with_slashes_and_order(tmp_path):
    acts = {"outer/conv": np.arange(8.0).reshape(1, 2, 2, 2), "pool": np.ones((1, 1, 1, 2))}
    g = golden.load(_saved(tmp_path, acts))
    back = g.artifact.to_value()
    assert list(back) == ["outer/conv", "pool"] and g.sidecar["names"] == ["outer/conv", "pool"]
    assert np.array_equal(back["outer/conv"], acts["outer/conv"].astype(np.float32))


def test_gradcam_round_trip_restores_every_field(tmp_path):
    cam = gradcam_result()
    back = golden.load(_saved(tmp_path, cam), kind="heatmap").artifact.to_value()
    assert isinstance(back, GradCAM)
    assert np.array_equal(back.heatmap, cam.heatmap) and np.array_equal(back.raw, cam.raw)
    assert back.class_index.tolist() == [0, 1] and back.degenerate.dtype == bool
    assert (back.layer, back.score_kind, back.image_shape) == ("block/conv", "logit", (32, 40))


def test_rewrites_are_byte_stable(tmp_path):
    value = Artifact.from_value({"a": np.linspace(0, 1, 24).reshape(1, 2, 3, 4)})
    first, second = tmp_path / "one" / "c", tmp_path / "two" / "c"
    golden.save(first, value, {"backend": "tensorflow"})
    golden.save(second, value, {"backend": "tensorflow"})
    assert _files_bytes(first) == _files_bytes(second)
    assert _files_bytes(first)[".npz"] == value.encode()


def test_saving_identical_content_leaves_existing_files_untouched(tmp_path):
    base = tmp_path / "c"
    meta = {"backend": "jax", "cpu": {"threads": 1}}
    golden.save(base, Artifact.from_value(np.ones((4, 4))), meta)
    before = _files_bytes(base)
    # Same arrays from another machine: no rewrite, so version control sees no change.
    golden.save(base, Artifact.from_value(np.ones((4, 4))), {**meta, "cpu": {"threads": 8}})
    assert _files_bytes(base) == before


def test_a_broken_old_pair_is_replaced_by_a_save(tmp_path):
    base = tmp_path / "c"
    golden.save(base, Artifact.from_value(np.ones((4, 4))))
    golden.files_of(base)[".json"].write_text("{ broken")
    golden.save(base, Artifact.from_value(np.ones((4, 4))))
    assert golden.load(base).sidecar["shape"] == {"value": [4, 4]}


def test_sidecar_has_sorted_documented_keys(tmp_path):
    base = tmp_path / "c"
    meta = {"backend": "jax", "model_fingerprint": "ab12", "input_fingerprint": "cd34"}
    golden.save(base, Artifact.from_value(np.ones((2, 3, 3)), "heatmap"), meta)
    text = golden.files_of(base)[".json"].read_text()
    side = json.loads(text)
    for key in (
        "format_version", "kind", "shape", "dtype", "layout", "names", "stats", "sha256",
        "attrs", "backend", "versions", "cpu", "model_fingerprint", "tolerance",
    ):  # fmt: skip
        assert key in side
    assert list(side) == sorted(side)
    assert side["kind"] == "heatmap" and side["shape"] == {"value": [2, 3, 3]}
    assert side["stats"]["value"]["max"] == 1.0 and side["backend"] == "jax"
    # any other fact given is kept as is
    assert (side["model_fingerprint"], side["input_fingerprint"]) == ("ab12", "cd34")
    assert golden.files_of(base)[".json"].read_bytes() == sidecars.sidecar_bytes(side)


def test_sidecar_stats_of_non_finite_and_empty_entries():
    art = Artifact.from_value({"a": np.array([1.0, np.nan, 3.0]), "e": np.zeros((0, 2))})
    stats = sidecars.build_sidecar(art)["stats"]
    assert stats["a"] == {
        "size": 3,
        "nonfinite": 1,
        "min": 1.0,
        "max": 3.0,
        "mean": 2.0,
        "std": 1.0,
    }
    assert stats["e"] == {"size": 0}


def test_preview_png_is_written_next_to_the_golden(tmp_path):
    base = tmp_path / "c"
    golden.save(base, Artifact.from_value(np.eye(7, dtype=np.float32)))
    assert golden.files_of(base)[".png"].read_bytes().startswith(b"\x89PNG")
    assert not golden.files_of(base)[".inputs.png"].exists()  # no inputs given
    assert golden.read_inputs(base) is None


def test_an_inputs_thumbnail_is_kept_next_to_the_golden(tmp_path):
    from convviz_check.report.pictures import inputs_thumbnail

    strip = inputs_thumbnail(np.random.default_rng(0).random((2, 12, 12, 3)))
    base = tmp_path / "c"
    golden.save(base, Artifact.from_value(np.eye(7, dtype=np.float32)[None]), inputs=strip)
    assert np.array_equal(golden.read_inputs(base), strip)
    golden.files_of(base)[".inputs.png"].write_bytes(b"not a png")
    assert golden.read_inputs(base) is None  # only a picture: unreadable is absent


def test_a_preview_that_cannot_be_drawn_is_left_out(tmp_path, monkeypatch):
    from convviz_check.report import pictures

    def broken(*args, **kwargs):
        raise ValueError("no picture")

    monkeypatch.setattr(pictures, "picture", broken)
    base = tmp_path / "c"
    golden.save(base, Artifact.from_value(np.eye(7, dtype=np.float32)))
    assert not golden.files_of(base)[".png"].exists()
    golden.load(base)


def test_float16_golden_loads_as_float16_for_compare(tmp_path):
    acts = {"a": np.linspace(-3, 3, 64, dtype=np.float32).reshape(1, 4, 4, 4)}
    g = golden.load(_saved(tmp_path, acts, dtype="float16"))
    # kept float16 so that compare() knows the storage rounding (widens its bounds)
    assert g.artifact.arrays["a"].dtype == np.float16
    assert g.artifact.to_value()["a"].dtype == np.float16
    assert g.sidecar["dtype"] == {"a": "float16"}
    assert np.allclose(g.artifact.to_value()["a"], acts["a"], atol=2e-3)


def test_float16_activation_golden_compares_within_widened_same_backend_bounds():
    # to_value() keeps float16 so that compare() widens its bounds by float16 rounding;
    # a float32 obtained equal to the stored values up to that rounding passes.
    from convviz_check.metrics import compare

    rng = np.random.default_rng(0)
    acts = {"conv": (rng.normal(size=(1, 8, 8, 4)) * 3).astype(np.float32)}
    stored = Artifact.from_value(acts, dtype="float16").to_value()
    assert stored["conv"].dtype == np.float16
    assert compare(stored, acts, "activation").passed
    moved = {"conv": acts["conv"] * 1.01}
    assert not compare(stored, moved, "activation").passed


def test_check_over_20_mb_warns_with_its_size(tmp_path, monkeypatch):
    from convviz_check.report import pictures

    monkeypatch.setattr(pictures, "preview", lambda *a, **k: None)  # not what is tested
    big = {"a": np.zeros((1, 1, 2300, 2300), np.float32)}  # 21.2 MB
    with pytest.warns(ConvvizWarning, match=r"20\.2 MB.*float16"):
        golden.save(tmp_path / "c", Artifact.from_value(big))


# --------------------------------------------------------------------- load errors
def _assert_load_fails_without_changes(base: Path, match: str, kind: str | None = None) -> None:
    before = _files_bytes(base)
    with pytest.raises(GoldenError, match=match):
        golden.load(base, kind=kind)
    assert _files_bytes(base) == before


def test_golden_errors_are_storage_errors():
    assert issubclass(GoldenError, StorageError)


def test_corrupt_npz_is_a_clear_error(tmp_path):
    base = _saved(tmp_path, np.ones((3, 3)))
    golden.files_of(base)[".npz"].write_bytes(b"PK\x03\x04 truncated garbage")
    _assert_load_fails_without_changes(base, "corrupt.*--convviz-update=missing")


def test_an_npz_that_is_not_a_zip_is_a_clear_error(tmp_path):
    base = _saved(tmp_path, np.ones((3, 3)))
    golden.files_of(base)[".npz"].write_bytes(b"\x00garbage")
    _assert_load_fails_without_changes(base, r"not a \.npz \(zip\) archive")


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


def test_missing_npz_next_to_its_sidecar_is_a_clear_error(tmp_path):
    base = _saved(tmp_path, np.ones((3, 3)))
    golden.files_of(base)[".npz"].unlink()
    _assert_load_fails_without_changes(base, r"is missing \(its sidecar exists\)")


def test_git_lfs_pointer_tells_the_user_to_pull(tmp_path):
    base = _saved(tmp_path, np.ones((3, 3)))
    golden.files_of(base)[".npz"].write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1234\n"
    )
    _assert_load_fails_without_changes(base, "git lfs pull")


def test_git_lfs_pointer_sidecar_tells_the_user_to_pull(tmp_path):
    base = _saved(tmp_path, np.ones((3, 3)))
    golden.files_of(base)[".json"].write_text("version https://git-lfs.github.com/spec/v1\n")
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


def test_entry_names_not_matching_the_sidecar_are_a_clear_error(tmp_path):
    base = _saved(tmp_path, {"a": np.ones((1, 2)), "b": np.ones((1, 2))})
    _edit_sidecar(base, names=["b", "a"])
    _assert_load_fails_without_changes(base, "Entries of .* do not match its sidecar")


def test_kind_mismatch_is_a_clear_error(tmp_path):
    base = _saved(tmp_path, np.ones((3, 3)))
    _assert_load_fails_without_changes(base, "kind='heatmap'.*kind='pattern'", kind="pattern")


def test_content_not_matching_sidecar_hash_is_a_clear_error(tmp_path):
    base = _saved(tmp_path, np.ones((3, 3)))
    _edit_sidecar(base, sha256="0" * 64)
    _assert_load_fails_without_changes(base, "does not match its sidecar sha256")


def test_a_half_written_pair_is_reported_not_trusted(tmp_path):
    # The .npz of a newer save next to the sidecar of the older one.
    base = _saved(tmp_path, np.ones((3, 3)))
    golden.files_of(base)[".npz"].write_bytes(Artifact.from_value(np.zeros((3, 3))).encode())
    _assert_load_fails_without_changes(base, "edited or half-written")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"format_version": 99}, "format_version=99"),
        ({"kind": "heatmaps"}, "kind='heatmaps'"),
        ({"layout": "grid"}, "layout='grid'"),
        ({"shape": [3, 3]}, "malformed 'shape'"),
    ],
)
def test_invalid_sidecar_fields_are_clear_errors(tmp_path, changes, match):
    base = _saved(tmp_path, np.ones((3, 3)))
    _edit_sidecar(base, **changes)
    _assert_load_fails_without_changes(base, match)


def test_sidecar_lacking_keys_or_not_an_object_is_a_clear_error(tmp_path):
    base = _saved(tmp_path, np.ones((3, 3)))
    golden.files_of(base)[".json"].write_text(json.dumps({"kind": "heatmap"}))
    _assert_load_fails_without_changes(base, "lacks required keys")
    golden.files_of(base)[".json"].write_text("[1, 2]")
    _assert_load_fails_without_changes(base, "must hold a JSON object")


def test_a_layout_whose_entries_do_not_fit_is_a_clear_error(tmp_path):
    base = _saved(tmp_path, {"value": np.ones((3, 3))})
    _edit_sidecar(base, layout="gradcam")
    _assert_load_fails_without_changes(base, "GradCAM artifact holds")


# ------------------------------------------------------------------- maintenance
def test_remove_deletes_the_check_and_prunes_empty_directories(tmp_path):
    base = _saved(tmp_path, np.ones((3, 3)))
    removed = golden.remove(base, tmp_path / "g")
    assert sorted(p.suffix for p in removed) == [".json", ".npz", ".png"]
    assert not (tmp_path / "g" / "tests").exists() and (tmp_path / "g").exists()


def test_iter_checks_lists_neutral_and_override_checks(tmp_path):
    rel = golden.relative_path("t.py", "test_a", "c")
    golden.save(tmp_path / rel, Artifact.from_value(np.ones((2, 2))))
    golden.save(tmp_path / golden.scoped(rel, "jax"), Artifact.from_value(np.ones((2, 2))))
    (tmp_path / "t.py" / "test_a" / ".c.npz.x.tmp").write_bytes(b"half")
    checks = list(golden.iter_checks(tmp_path))
    assert checks == [golden.scoped(rel, "jax"), rel]
    assert [golden.scope_of(c) for c in checks] == ["jax", None]
    assert list(golden.iter_checks(tmp_path / "nothing")) == []


def test_copy_check_copies_every_file_of_a_check(tmp_path):
    src = _saved(tmp_path, np.eye(3))
    dest = tmp_path / "other" / "copied"
    written = golden.copy_check(src, dest)
    assert len(written) == 3
    assert _files_bytes(dest) == _files_bytes(src)
    golden.load(dest)


def test_storage_modules_import_without_keras_or_a_framework():
    code = (
        "import sys\n"
        "for m in ('keras', 'tensorflow', 'torch', 'jax', 'pytest'):\n"
        "    sys.modules[m] = None\n"
        "import convviz_check.golden, convviz_check.storage, convviz_check.artifacts\n"
        "import convviz_check.checks, convviz_check.report, convviz_check.cli.golden\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize(
    "name, problem",
    [
        (".hidden", "starts with '.'"),
        (".x/y", "starts with '.'"),
        ("cam.inputs", "ends with '.inputs'"),
        ("cam.Inputs", "ends with '.inputs'"),
        ("cam.npz", "ends with '.npz'"),
        ("cam.json", "ends with '.json'"),
        ("cam.png", "ends with '.png'"),
    ],
)
def test_check_names_that_would_collide_or_hide_are_refused(name, problem):
    with pytest.raises(InputError, match=problem) as info:
        golden.relative_path("tests/test_x.py", "test_a", name)
    assert repr(name) in str(info.value) and "Expected" in str(info.value)


@pytest.mark.parametrize("name", ["cam", "cam.v2", "layer/conv", "a..b", "cam.inputs2"])
def test_other_check_names_keep_their_sanitized_file_name(name):
    rel = golden.relative_path("tests/test_x.py", "test_a", name)
    assert rel.name == golden.check_file_name(name)
    assert not rel.name.startswith(".")
