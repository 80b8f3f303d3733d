"""convviz_check.storage: the one npz codec (byte-stable, size-limited, never
unpickled), the one atomic writer (umask, interrupted writes), path names, PNG and JSON;
and the golden loader fuzzed with random and mutated files."""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import sys
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from convviz_check import golden, sidecars, storage
from convviz_check.artifacts import Artifact
from convviz_check.errors import ConvvizError, GoldenError, InputError, StorageError
from convviz_check.types import GradCAM

BUNDLED = Path(__file__).resolve().parents[1] / "golden"
# Sidecar keys that describe the arrays (rebuilt from the artifact), as opposed to the
# facts of the run that wrote them.
ARRAY_KEYS = ("format_version", "kind", "layout", "names", "shape", "dtype", "stats", "sha256")


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, payload in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), payload)
    return buf.getvalue()


def _header_only(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    """An .npy header declaring ``shape`` with no data after it."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


@pytest.fixture
def no_array_read(monkeypatch):
    """Fail if any array data is read (the checks must come first)."""

    def refuse(*args, **kwargs):
        raise AssertionError("array data was read before the member was refused")

    monkeypatch.setattr(np.lib.format, "read_array", refuse)


def _write(tmp_path: Path, data: bytes, name: str = "x.npz") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.rglob("*") if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------ names
@pytest.mark.parametrize(
    "raw",
    ["../../etc/passwd", "a/b\\c", "..", ".", "", "x\x00y\x1fz", "ok..ok", "nul\x7f", "a:b*c?"],
)
def test_sanitize_part_removes_separators_parent_refs_and_control_chars(raw):
    out = storage.sanitize_part(raw)
    assert out and "/" not in out and "\\" not in out and ".." not in out
    assert out not in (".", "..")
    assert all(ord(c) >= 32 and ord(c) != 127 for c in out)


def test_sanitize_part_keeps_plain_names_and_breaks_parent_refs_inside_brackets():
    assert storage.sanitize_part("test_a[1-2]") == "test_a[1-2]"
    assert storage.sanitize_part("test_a[../x/y]") == "test_a[_._x_y]"


def test_sanitize_part_shortens_long_names_keeping_them_distinct():
    a, b = storage.sanitize_part("x" * 400 + "a"), storage.sanitize_part("x" * 400 + "b")
    assert len(a.encode()) <= 180 and a != b


def test_sanitize_part_refuses_a_non_string():
    with pytest.raises(InputError, match="must be a str"):
        storage.sanitize_part(3)  # type: ignore[arg-type]


@given(st.text(max_size=60))
def test_sanitized_parts_never_leave_their_directory(tmp_path_factory, raw):
    root = tmp_path_factory.mktemp("root")
    path = storage.inside(root, storage.sanitize_part(raw)).resolve()
    assert path.parent == root.resolve()


def test_inside_refuses_parent_references(tmp_path):
    with pytest.raises(StorageError, match="outside its directory"):
        storage.inside(tmp_path / "root", PurePosixPath("a/../../x"))


def test_inside_refuses_a_symlink_leading_out_of_its_directory(tmp_path):
    root, outside = tmp_path / "golden", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "tests").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StorageError, match="outside its directory"):
        storage.inside(root, PurePosixPath("tests/test_x.py/test_a/c"))
    assert storage.inside(root, "ok/c") == root / "ok" / "c"


# ---------------------------------------------------------------------------- writing
def test_write_bytes_creates_parents_and_replaces_the_file(tmp_path):
    path = tmp_path / "a" / "b" / "f.bin"
    storage.write_bytes(path, b"one")
    storage.write_bytes(path, b"two" * (1 << 19))  # over one chunk
    assert path.read_bytes() == b"two" * (1 << 19)
    assert _no_temp_files(tmp_path)


def test_an_interrupted_write_leaves_the_old_golden_intact_and_no_temp_file(tmp_path, monkeypatch):
    base = tmp_path / "g" / "t.py" / "test_a" / "cam"
    old = Artifact.from_value(np.eye(5, dtype=np.float32), "heatmap")
    golden.save(base, old, {"backend": "tensorflow"})
    before = {p: p.read_bytes() for p in golden.files_of(base).values() if p.exists()}

    def half_then_fail(f, data):
        f.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage, "_write_chunks", half_then_fail)
    new = Artifact.from_value(np.ones((5, 5), np.float32), "heatmap")
    with pytest.raises(StorageError, match="No space left") as info:
        golden.save(base, new, {"backend": "tensorflow"})
    # the target named (the OS error named no file), why, and what to do
    assert f"Cannot write {base}.npz" in str(info.value) and "Free space" in str(info.value)
    assert {p: p.read_bytes() for p in golden.files_of(base).values() if p.exists()} == before
    assert _no_temp_files(tmp_path)
    monkeypatch.undo()
    assert np.array_equal(golden.load(base).artifact.to_value(), np.eye(5))


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_are_created_with_the_process_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        path = storage.write_bytes(tmp_path / "f.bin", b"x")
        base = tmp_path / "g" / "cam"
        paths = golden.save(base, Artifact.from_value(np.eye(4, dtype=np.float32), "heatmap"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    written = [p for p in paths.values() if p.exists()]
    assert len(written) == 3  # .npz, .json, .png
    for p in written:
        assert stat.S_IMODE(p.stat().st_mode) == mode, p


def test_json_bytes_are_sorted_and_stable(tmp_path):
    data = {"b": 1, "a": {"y": [1, 2], "x": None}}
    assert storage.json_bytes(data) == storage.json_bytes(json.loads(json.dumps(data)))
    text = storage.json_bytes(data).decode()
    assert text.index('"a"') < text.index('"b"') and text.endswith("\n")
    path = storage.write_json(tmp_path / "d.json", data)
    assert storage.read_json(path) == data


def test_read_json_errors_are_storage_errors(tmp_path):
    with pytest.raises(StorageError, match="Cannot read"):
        storage.read_json(tmp_path / "missing.json")
    with pytest.raises(StorageError, match="not valid JSON"):
        storage.read_json(_write(tmp_path, b"{ nope", "a.json"))
    with pytest.raises(StorageError, match="not valid JSON"):
        storage.read_json(_write(tmp_path, b"\xff\xfe", "b.json"))
    with pytest.raises(StorageError, match="git lfs pull"):
        storage.read_json(_write(tmp_path, b"version https://git-lfs.github.com/spec/v1\n", "c"))


# ---------------------------------------------------------------------------- npz codec
def test_same_arrays_give_the_same_bytes_with_fixed_timestamps(tmp_path):
    a = np.linspace(0, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    first = storage.encode_npz({"x": a, "layer/1": a[0]})
    second = storage.encode_npz({"x": np.asfortranarray(a), "layer/1": a[0].copy()})
    assert first == second
    storage.write_npz(tmp_path / "1.npz", {"x": a})
    storage.write_npz(tmp_path / "2.npz", {"x": a.copy()})
    assert (tmp_path / "1.npz").read_bytes() == (tmp_path / "2.npz").read_bytes()
    with zipfile.ZipFile(io.BytesIO(first)) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}


def test_names_that_are_not_identifiers_are_stored_by_index():
    with zipfile.ZipFile(io.BytesIO(storage.encode_npz({"a/b": np.ones(2)}))) as zf:
        assert zf.namelist() == ["__names__.npy", "a0000.npy"]
    with zipfile.ZipFile(io.BytesIO(storage.encode_npz({"plain_1": np.ones(2)}))) as zf:
        assert zf.namelist() == ["plain_1.npy"]
    with zipfile.ZipFile(io.BytesIO(storage.encode_npz({"a": np.ones(2)}, indexed=True))) as zf:
        assert zf.namelist() == ["__names__.npy", "a0000.npy"]


NUMERIC_DTYPES = [
    np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64,
    np.uint64, np.float16, np.float32, np.float64, np.dtype(">f4"), np.dtype(">i8"),
]  # fmt: skip
entry_names = st.one_of(
    st.from_regex(r"[A-Za-z0-9_]{1,10}", fullmatch=True),
    # layer names: slashes, dots, spaces, any letter (no control characters)
    st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=12),
    st.sampled_from(["outer/conv", "../x", "__names__", "a0000", ""]),
)
entry_arrays = st.sampled_from(NUMERIC_DTYPES).flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4))
)


@given(st.dictionaries(entry_names, entry_arrays, max_size=5))
def test_encode_npz_round_trips_names_order_dtypes_and_bits(tmp_path_factory, arrays):
    path = tmp_path_factory.mktemp("npz") / "x.npz"
    path.write_bytes(storage.encode_npz(arrays))
    back = storage.read_npz(path)
    assert list(back) == list(arrays)
    for name, arr in arrays.items():
        assert back[name].dtype == arr.dtype and back[name].shape == arr.shape, name
        assert back[name].tobytes() == np.ascontiguousarray(arr).tobytes(), name
    assert storage.content_sha256(back) == storage.content_sha256(arrays)


@pytest.mark.parametrize("value", [np.array(False), np.array(1.5, np.float32), np.array(3)])
def test_encode_npz_keeps_zero_dimensional_arrays(tmp_path, value):
    back = storage.read_npz(_write(tmp_path, storage.encode_npz({"x": value, "a/b": value})))
    assert back["x"].shape == () and back["a/b"].shape == ()
    assert storage.content_sha256({"x": value}) != storage.content_sha256({"x": value[None]})


def test_read_npz_reads_files_written_by_np_savez(tmp_path):
    path = tmp_path / "s.npz"
    np.savez(path, a=np.arange(3), b=np.eye(2, dtype=np.float32))
    back = storage.read_npz(path)
    assert list(back) == ["a", "b"] and back["b"].dtype == np.float32


def test_encode_npz_refuses_object_arrays():
    with pytest.raises(InputError, match="dtype object"):
        storage.encode_npz({"x": np.array([{"a": 1}], dtype=object)})


def test_content_sha256_depends_on_names_dtypes_shapes_and_values_only():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    sha = storage.content_sha256({"a": a})
    assert sha == storage.content_sha256({"a": np.asfortranarray(a)})
    assert sha != storage.content_sha256({"b": a})
    assert sha != storage.content_sha256({"a": a.astype(np.float64)})
    assert sha != storage.content_sha256({"a": a.reshape(3, 2)})
    assert sha != storage.content_sha256({"a": a + 1})


# ------------------------------------------------------------------------- safe reading
def test_declared_sizes_over_the_limits_are_refused_before_any_data_is_read(
    tmp_path, no_array_read
):
    # 4 TB declared in a file of a few hundred bytes.
    huge = _write(tmp_path, _zip({"value.npy": _header_only((10**6, 10**6))}))
    assert huge.stat().st_size < 1024
    with pytest.raises(StorageError, match=r"declares shape=\(1000000, 1000000\).*limits"):
        storage.read_npz(huge)


def test_a_huge_declared_golden_is_a_golden_error(tmp_path, no_array_read):
    base = tmp_path / "cam"
    golden.save(base, Artifact.from_value(np.eye(3, dtype=np.float32), "heatmap"))
    golden.files_of(base)[".npz"].write_bytes(_zip({"value.npy": _header_only((2**40,))}))
    with pytest.raises(GoldenError, match="limits"):
        golden.load(base)


def test_small_limits_refuse_per_array_total_and_member_count(tmp_path, no_array_read):
    path = _write(
        tmp_path,
        storage.encode_npz({f"a{i}": np.zeros(25, np.float32) for i in range(3)}),  # 100 B each
    )
    with pytest.raises(StorageError, match="100 bytes.*99 bytes per array"):
        storage.read_npz(path, storage.Limits(max_array_bytes=99))
    with pytest.raises(StorageError, match="200 in all so far.*150 in all"):
        storage.read_npz(path, storage.Limits(max_total_bytes=150))
    with pytest.raises(StorageError, match="holds 3 members; at most 2"):
        storage.read_npz(path, storage.Limits(max_members=2))


def test_limits_that_fit_read_the_file(tmp_path):
    arrays = {f"a{i}": np.full(25, i, np.float32) for i in range(3)}
    path = _write(tmp_path, storage.encode_npz(arrays))
    back = storage.read_npz(
        path, storage.Limits(max_members=3, max_array_bytes=100, max_total_bytes=300)
    )
    assert [float(v[0]) for v in back.values()] == [0.0, 1.0, 2.0]


@pytest.mark.parametrize(
    "member", ["../x.npy", "a/b.npy", "/abs.npy", "a\\b.npy", ".hidden.npy", "..npy", "x.txt"]
)
def test_member_names_with_paths_are_refused(tmp_path, member, no_array_read):
    path = _write(tmp_path, _zip({member: _npy(np.ones(2, np.float32))}))
    with pytest.raises(StorageError, match="plain '<name>.npy' members"):
        storage.read_npz(path)


class _Payload:
    """Unpickling this runs code: it writes its marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _object_array_npz(marker: Path) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    return _zip({"value.npy": buf.getvalue()})


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    # Control: the payload really runs code when unpickled.
    control = tmp_path / "control.marker"
    with np.load(_write(tmp_path, _object_array_npz(control), "c.npz"), allow_pickle=True) as z:
        z["value"]
    assert control.exists()
    marker = tmp_path / "refused.marker"
    path = _write(tmp_path, _object_array_npz(marker))
    with pytest.raises(StorageError, match="object arrays are never loaded"):
        storage.read_npz(path)
    assert not marker.exists()


def test_object_array_golden_is_refused_without_unpickling(tmp_path):
    base = tmp_path / "cam"
    golden.save(base, Artifact.from_value(np.eye(3, dtype=np.float32), "heatmap"))
    marker = tmp_path / "golden.marker"
    golden.files_of(base)[".npz"].write_bytes(_object_array_npz(marker))
    with pytest.raises(GoldenError, match="object arrays"):
        golden.load(base)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("arr", "match"),
    [
        (np.zeros(2, dtype=[("a", "<f4")]), "expected numeric arrays"),
        (np.array([1 + 2j]), "expected numeric arrays"),
        (np.array(["text"]), "holds text"),
    ],
)
def test_non_numeric_entries_are_refused(tmp_path, arr, match):
    path = _write(tmp_path, _zip({"value.npy": _npy(arr)}))
    with pytest.raises(StorageError, match=match):
        storage.read_npz(path)


def test_an_unknown_npy_version_is_refused(tmp_path):
    payload = bytearray(_npy(np.ones(2, np.float32)))
    payload[6] = 9  # major version
    with pytest.raises(StorageError):
        storage.read_npz(_write(tmp_path, _zip({"value.npy": bytes(payload)})))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n", "git lfs pull"),
        (b"\x93NUMPY\x01\x00", "not a .npz \\(zip\\) archive"),
        (b"", "not a .npz \\(zip\\) archive"),
        (b"PK\x03\x04 truncated garbage", "corrupt"),
    ],
)
def test_unreadable_archives_are_storage_errors(tmp_path, data, match):
    with pytest.raises(StorageError, match=match):
        storage.read_npz(_write(tmp_path, data))


def test_a_truncated_archive_is_corrupt(tmp_path):
    data = storage.encode_npz({"value": np.arange(100, dtype=np.float32)})
    for cut in (len(data) // 3, len(data) // 2, len(data) - 10):
        with pytest.raises(StorageError, match="corrupt"):
            storage.read_npz(_write(tmp_path, data[:cut]))


@pytest.mark.parametrize(
    ("members", "match"),
    [
        ({"__names__": np.array(["a", "a"]), "a0000": np.ones(1), "a0001": np.ones(1)}, "repeat"),
        ({"__names__": np.array(["a", "b"]), "a0000": np.ones(1)}, "'a0001' for 'b' is missing"),
        ({"__names__": np.array(["a"]), "a0000": np.ones(1), "zz": np.ones(1)}, "unexpected"),
    ],
)
def test_inconsistent_name_index_is_corrupt(tmp_path, members, match):
    path = _write(tmp_path, _zip({k + ".npy": _npy(v) for k, v in members.items()}))
    with pytest.raises(StorageError, match=match):
        storage.read_npz(path)


def test_a_missing_file_is_a_storage_error(tmp_path):
    with pytest.raises(StorageError, match="Cannot read"):
        storage.read_npz(tmp_path / "none.npz")


# ---------------------------------------------------------------------------------- PNG
images = st.one_of(
    hnp.arrays(np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9))),
    hnp.arrays(
        np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9), st.sampled_from([1, 3, 4]))
    ),
)


@given(images)
def test_png_bytes_round_trip_every_pixel(image):
    data = storage.png_bytes(image)
    assert data == storage.png_bytes(image.copy())  # same pixels, same bytes
    back = np.asarray(Image.open(io.BytesIO(data)))
    expected = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    assert back.dtype == np.uint8 and np.array_equal(back, expected)


@pytest.mark.parametrize(
    "image",
    [np.zeros((4, 4), np.float32), np.zeros((4, 4, 2), np.uint8), np.zeros(4, np.uint8)],
)
def test_png_bytes_refuses_what_is_not_an_image(image):
    with pytest.raises(InputError, match="PNG"):
        storage.png_bytes(image)


def test_write_png_writes_a_png_file(tmp_path):
    path = storage.write_png(tmp_path / "i" / "x.png", np.full((3, 5, 3), 200, np.uint8))
    assert path.read_bytes().startswith(b"\x89PNG") and Image.open(path).size == (5, 3)


# ------------------------------------------------------- byte stability (bundled goldens)
BUNDLED_CHECKS = sorted(golden.iter_checks(BUNDLED))


def test_the_repository_bundles_goldens_to_check_stability_against():
    assert len(BUNDLED_CHECKS) >= 5
    assert {golden.load(BUNDLED / c).artifact.layout for c in BUNDLED_CHECKS} == {
        "array",
        "activations",
        "gradcam",
    }


@pytest.mark.parametrize("rel", BUNDLED_CHECKS, ids=lambda r: r.as_posix())
def test_codec_is_byte_identical_to_the_one_that_wrote_the_bundled_goldens(rel):
    base = BUNDLED / rel
    files = golden.files_of(base)
    g = golden.load(base)
    assert g.artifact.encode() == files[".npz"].read_bytes()
    meta = {k: v for k, v in g.sidecar.items() if k not in ARRAY_KEYS and k != "attrs"}
    rebuilt = sidecars.sidecar_bytes(sidecars.build_sidecar(g.artifact, meta))
    assert rebuilt == files[".json"].read_bytes()


# ----------------------------------------------------------------- the loader, fuzzed
def _cam() -> GradCAM:
    heat = np.random.default_rng(3).random((2, 4, 5)).astype(np.float32)
    return GradCAM(
        heatmap=heat / heat.max(axis=(1, 2), keepdims=True),
        raw=heat,
        class_index=np.array([1, 4]),
        score=np.array([0.5, 2.0], np.float32),
        score_kind="logit",
        layer="block/conv",
        degenerate=np.array([False, True]),
        image_shape=(16, 20),
    )


def _template(artifact: Artifact) -> tuple[bytes, bytes]:
    meta = {"backend": "tensorflow", "model_fingerprint": "ab" * 8, "input_fingerprint": "cd"}
    return artifact.encode(), sidecars.sidecar_bytes(sidecars.build_sidecar(artifact, meta))


TEMPLATES = {
    "array": _template(Artifact.from_value(np.eye(4, dtype=np.float32), "heatmap")),
    "activations": _template(
        Artifact.from_value(
            {"outer/conv": np.arange(8.0).reshape(1, 2, 2, 2), "pool": np.ones((1, 1, 1, 2))},
            dtype="float16",
        )
    ),
    "gradcam": _template(Artifact.from_value(_cam())),
    "pattern": _template(
        Artifact.from_value(np.arange(48, dtype=np.uint8).reshape(1, 4, 4, 3), "pattern")
    ),
}


def _load_is_an_error_or_valid(directory: Path, npz: bytes, side: bytes) -> None:
    base = directory / "check"
    files = golden.files_of(base)
    files[".npz"].write_bytes(npz)
    files[".json"].write_bytes(side)
    try:
        g = golden.load(base)
    except ConvvizError:
        return
    # A valid load is usable: its value can be built and compared.
    assert g.artifact.content_sha256() == g.sidecar["sha256"]
    g.artifact.to_value()


@pytest.mark.parametrize("layout", sorted(TEMPLATES))
def test_the_fuzz_templates_load(tmp_path, layout):
    _load_is_an_error_or_valid(tmp_path, *TEMPLATES[layout])
    golden.load(tmp_path / "check")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 10)
    | st.floats(allow_nan=False)
    | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


@given(
    layout=st.sampled_from(sorted(TEMPLATES)),
    target=st.sampled_from(["npz", "json", "both"]),
    noise=st.binary(max_size=300),
    zip_like=st.booleans(),
)
def test_golden_load_of_random_bytes_is_an_error_or_a_valid_load(
    tmp_path_factory, layout, target, noise, zip_like
):
    npz, side = TEMPLATES[layout]
    junk = (b"PK\x03\x04" if zip_like else b"") + noise
    npz = junk if target in ("npz", "both") else npz
    side = junk if target in ("json", "both") else side
    _load_is_an_error_or_valid(tmp_path_factory.mktemp("fuzz"), npz, side)


@given(
    layout=st.sampled_from(sorted(TEMPLATES)),
    in_npz=st.booleans(),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4),
)
def test_golden_load_of_files_with_flipped_bytes_is_an_error_or_a_valid_load(
    tmp_path_factory, layout, in_npz, flips
):
    npz, side = TEMPLATES[layout]
    data = bytearray(npz if in_npz else side)
    for position, xor in flips:
        data[position % len(data)] ^= xor
    npz, side = (bytes(data), side) if in_npz else (npz, bytes(data))
    _load_is_an_error_or_valid(tmp_path_factory.mktemp("fuzz"), npz, side)


@given(layout=st.sampled_from(sorted(TEMPLATES)), in_npz=st.booleans(), keep=st.floats(0, 1))
def test_golden_load_of_truncated_files_is_an_error_or_a_valid_load(
    tmp_path_factory, layout, in_npz, keep
):
    npz, side = TEMPLATES[layout]
    cut = lambda b: b[: int(len(b) * keep)]  # noqa: E731
    npz, side = (cut(npz), side) if in_npz else (npz, cut(side))
    _load_is_an_error_or_valid(tmp_path_factory.mktemp("fuzz"), npz, side)


SIDECAR_PATHS = [
    ("format_version",), ("kind",), ("layout",), ("names",), ("shape",), ("dtype",),
    ("sha256",), ("attrs",), ("stats",), ("shape", "*"), ("dtype", "*"), ("names", 0),
    ("attrs", "image_shape"), ("attrs", "layer"), ("attrs", "score_kind"),
]  # fmt: skip


def _edit(side: dict, path: tuple, value, delete: bool) -> None:
    node = side
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return
    key = path[-1]
    if key == "*" and isinstance(node, dict) and node:
        key = next(iter(node))
    if isinstance(node, dict):
        if delete:
            node.pop(key, None)
        else:
            node[key] = value
    elif isinstance(node, list) and isinstance(key, int) and node:
        node[key] = value


@given(
    layout=st.sampled_from(sorted(TEMPLATES)),
    edits=st.lists(
        st.tuples(st.sampled_from(SIDECAR_PATHS), json_values, st.booleans()),
        min_size=1,
        max_size=3,
    ),
)
# Found by this test under the "dev" profile (100 examples); kept so "ci" runs them too.
@example(layout="array", edits=[(("attrs",), [1, 2], False)])
@example(layout="activations", edits=[(("names",), 5, False)])
def test_golden_load_of_edited_sidecars_is_an_error_or_a_valid_load(
    tmp_path_factory, layout, edits
):
    npz, side_bytes = TEMPLATES[layout]
    side = json.loads(side_bytes)
    for path, value, delete in edits:
        _edit(side, path, value, delete)
    _load_is_an_error_or_valid(
        tmp_path_factory.mktemp("fuzz"), npz, json.dumps(side).encode("utf-8")
    )


@pytest.mark.parametrize(
    ("layout", "key", "value"),
    [
        ("array", "names", 5),
        ("array", "shape", {"value": 5}),
        ("array", "attrs", [1, 2]),
        ("array", "attrs", "xy"),
    ],
)
def test_a_sidecar_with_malformed_fields_is_a_golden_error(tmp_path, layout, key, value):
    npz, side_bytes = TEMPLATES[layout]
    side = json.loads(side_bytes)
    side[key] = value
    base = tmp_path / "check"
    golden.files_of(base)[".npz"].write_bytes(npz)
    golden.files_of(base)[".json"].write_text(json.dumps(side))
    with pytest.raises(GoldenError):
        golden.load(base)


@pytest.mark.parametrize("image_shape", [[7], "ab", None, [1, "x"]])
def test_a_gradcam_sidecar_with_a_malformed_image_shape_is_a_golden_error(tmp_path, image_shape):
    npz, side_bytes = TEMPLATES["gradcam"]
    side = json.loads(side_bytes)
    side["attrs"]["image_shape"] = image_shape
    base = tmp_path / "check"
    golden.files_of(base)[".npz"].write_bytes(npz)
    golden.files_of(base)[".json"].write_text(json.dumps(side))
    with pytest.raises(GoldenError):
        golden.load(base).artifact.to_value()


def test_a_deeply_nested_sidecar_is_a_golden_error(tmp_path):
    base = tmp_path / "check"
    golden.files_of(base)[".npz"].write_bytes(TEMPLATES["array"][0])
    golden.files_of(base)[".json"].write_text("[" * 100_000)
    with pytest.raises(GoldenError):
        golden.load(base)


def _files(base):
    return {p: p.read_bytes() for p in golden.files_of(base).values() if p.exists()}


def test_a_full_disk_while_writing_the_sidecar_keeps_the_old_pair(tmp_path, monkeypatch):
    """The data and its sidecar are both complete before either replaces the old one:
    a write that fails on the second file loses nothing stored."""
    base = tmp_path / "g" / "cam"
    golden.save(base, Artifact.from_value(np.eye(5, dtype=np.float32), "heatmap"))
    before = _files(base)
    calls = []
    real = storage._write_chunks

    def second_fails(f, data):
        calls.append(len(data))
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(f, data)

    monkeypatch.setattr(storage, "_write_chunks", second_fails)
    with pytest.raises(StorageError, match=r"cam\.json: No space left on device \(errno 28\)"):
        golden.save(base, Artifact.from_value(np.ones((5, 5), np.float32), "heatmap"))
    assert len(calls) == 2 and _files(base) == before and _no_temp_files(tmp_path)
    monkeypatch.undo()
    assert np.array_equal(golden.load(base).artifact.to_value(), np.eye(5))


def test_a_read_only_golden_dir_names_the_target_not_a_temp_file(tmp_path, monkeypatch):
    base = tmp_path / "g" / "cam"
    golden.save(base, Artifact.from_value(np.eye(5, dtype=np.float32), "heatmap"))
    before = _files(base)

    def read_only(prefix, suffix, dir):  # noqa: A002 - tempfile's own keyword
        raise OSError(errno.EROFS, "Read-only file system", f"{dir}/{prefix}x1y2{suffix}")

    monkeypatch.setattr(storage.tempfile, "mkstemp", read_only)
    with pytest.raises(StorageError) as info:
        golden.save(base, Artifact.from_value(np.ones((5, 5), np.float32), "heatmap"))
    message = str(info.value)
    assert f"Cannot write {base}.npz: Read-only file system (errno 30)" in message
    assert ".tmp" not in message and "not writable" in message and "elsewhere" in message
    assert _files(base) == before


def test_a_golden_dir_that_is_a_file_is_named_as_such(tmp_path):
    blocker = tmp_path / "golden"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError) as info:
        storage.write_bytes(blocker / "t.py" / "test_a" / "cam.npz", b"x")
    assert f"{blocker} is a file, not a directory" in str(info.value)
    assert blocker.read_text() == "not a directory"


# ----------------------------------------------------------------- declared sizes
def _deflated(name: str, payload: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, payload)
    return buf.getvalue()


@pytest.fixture
def no_member_read(monkeypatch):
    """Fail if a member's header (so its data) is read: the size must be refused from
    the zip directory alone."""

    def refuse(*args, **kwargs):
        raise AssertionError("a member was read before its size was refused")

    monkeypatch.setattr(np.lib.format, "read_magic", refuse)


def test_a_deflated_member_out_of_proportion_to_its_sidecar_is_refused_unread(
    tmp_path, monkeypatch
):
    base = tmp_path / "cam"
    golden.save(base, Artifact.from_value(np.eye(7, dtype=np.float32), "heatmap"))
    # 4 MiB of zeros (stored deflated in a few KiB), declared as a (1024, 1024) float32:
    # consistent in itself, far beyond the 7x7 check its sidecar describes.
    shape = (1024, 1024)
    zeros = _header_only(shape) + bytes(4 * 1024 * 1024)
    data = _deflated("value.npy", zeros)
    assert len(data) < 64 * 1024
    golden.files_of(base)[".npz"].write_bytes(data)

    def refuse(*args, **kwargs):
        raise AssertionError("a member was read before its size was refused")

    monkeypatch.setattr(np.lib.format, "read_magic", refuse)
    with pytest.raises(GoldenError, match=r"'value' unpacks to 4194\d+ bytes") as info:
        golden.load(base)
    # 8 x 7 x 7 x 4 bytes, raised to the 1 MiB floor
    assert "limits are 1048576 bytes per array" in str(info.value)
    assert "Its sidecar describes shape={'value': [7, 7]}" in str(info.value)


def test_a_member_larger_than_its_header_declares_is_corrupt(tmp_path, no_array_read):
    payload = _header_only((7, 7)) + bytes(7 * 7 * 4 + 1024 * 1024)  # 1 MiB too many
    path = _write(tmp_path, _deflated("value.npy", payload))
    with pytest.raises(StorageError, match=r"corrupt: entry 'value' unpacks to \d+ bytes.*196"):
        storage.read_npz(path)


def test_the_zip_directory_size_is_checked_against_the_limits_first(tmp_path, no_member_read):
    path = _write(tmp_path, _deflated("value.npy", _header_only((1 << 18,)) + bytes(1 << 20)))
    with pytest.raises(StorageError, match=r"unpacks to \d+ bytes.*1000 bytes per array"):
        storage.read_npz(path, storage.Limits(max_array_bytes=1000))


def test_goldens_written_here_are_in_proportion_to_their_sidecars(tmp_path):
    acts = {f"layer/{i}": np.ones((1, 3, 3, 2 + i), np.float16) for i in range(3)}
    for value, kind in ((np.eye(7, dtype=np.float32), "heatmap"), (acts, "activation")):
        base = tmp_path / kind
        golden.save(base, Artifact.from_value(value, kind, dtype="float16"))
        assert golden.load(base).artifact.kind == kind


# ----------------------------------------------------------------- concurrent writers
@pytest.mark.skipif(sys.platform == "win32", reason="flock: POSIX only (documented)")
def test_a_pair_is_replaced_under_the_directory_lock(tmp_path):
    """A writer renames a check's data and sidecar only while it holds the directory's
    exclusive lock: a writer (or reader) holding it keeps the stored pair whole."""
    import threading

    base = tmp_path / "cam"
    golden.save(base, Artifact.from_value(np.eye(5, dtype=np.float32), "heatmap"))
    before = {p: p.read_bytes() for p in golden.files_of(base).values() if p.exists()}
    errors: list[BaseException] = []

    def update() -> None:
        try:
            golden.save(base, Artifact.from_value(np.ones((5, 5), np.float32), "heatmap"))
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    with storage.dir_lock(tmp_path):
        writer = threading.Thread(target=update)
        writer.start()
        for _ in range(200):  # both temporary files staged: the writer waits to rename
            if len(list(tmp_path.glob(".cam.*.tmp"))) == 2:
                break
            writer.join(0.05)
        writer.join(1.0)
        assert writer.is_alive(), "the writer renamed while another held the lock"
        assert {p: p.read_bytes() for p in before} == before
    writer.join(60)
    assert not errors and not writer.is_alive()
    assert np.array_equal(golden.load(base).artifact.to_value(), np.ones((5, 5)))
    assert _no_temp_files(tmp_path)
