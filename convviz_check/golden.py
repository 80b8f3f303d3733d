"""Storage of golden files: paths, atomic and byte-stable writes, sidecars, safe loads.

One check is three files next to each other::

    golden/<test file relative to rootdir>/<test name>[<params>]/<check>.npz
                                                               /<check>.json   (sidecar)
                                                               /<check>.png    (preview)

Per-backend overrides live at ``golden/_backend/<backend>/<same relative path>`` and
are looked up first. The ``.npz`` holds the arrays, the sidecar describes them (sorted
keys; see :func:`build_sidecar`), the preview is for humans and never compared.

Safety and stability rules, each enforced here:
- every path part is sanitized and the final path is checked (resolved) to lie inside
  the golden directory;
- ``np.load(allow_pickle=False)``: object arrays are refused;
- writes go to a temporary file in the same directory and are ``os.replace``-d;
- the zip is written by hand with a fixed timestamp and no compression, so the same
  arrays give the same bytes on any machine (``np.savez`` stamps each entry with the
  current time, checked on numpy 2.4, and deflate output depends on the zlib build).
  Git compresses blobs itself, so storing uncompressed costs little in the repository.

Pure NumPy and the standard library: no Keras, no framework, no pytest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .errors import ConvvizWarning, GoldenError, InputError, describe_array
from .types import GradCAM

FORMAT_VERSION = 1
KINDS = ("activation", "heatmap", "pattern")
LAYOUTS = ("array", "activations", "gradcam")
OVERRIDE_DIR = "_backend"
SUFFIXES = (".npz", ".json", ".png")
# A check over this many stored bytes warns with its size (SPEC 3): large activation
# goldens bloat the repository; float16 and layer subsets keep them small.
LARGE_BYTES = 20 * 1024 * 1024
# Fixed zip entry timestamp (the earliest a zip can store) for byte-stable rewrites.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_NAMES_ENTRY = "__names__"
_GRADCAM_ARRAYS = ("heatmap", "raw", "class_index", "score", "degenerate")
_LFS_MAGIC = b"version https://git-lfs"
# Longest path part we write: file systems allow 255 bytes; keep room for the suffix
# and the temporary-file decorations.
_MAX_PART_BYTES = 180
_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f/\\:<>"|?*]')


# --------------------------------------------------------------------------- paths
def sanitize_part(part: str) -> str:
    """Make one path component safe: no separators, no ``..``, no control characters.

    Unsafe characters become ``_``; ``.`` and ``..`` sequences are broken up; overly
    long parts are shortened and suffixed with a hash so that distinct inputs stay
    distinct. The result is never empty.

    Example:
        >>> sanitize_part("test_a[../x/y]")
        'test_a[_._x_y]'
    """
    if not isinstance(part, str):
        raise InputError(f"A golden path part must be a str. Received: {part!r}")
    text = _UNSAFE_CHARS.sub("_", part)
    # No ".." anywhere (not only as a whole part): a later join or a careless tool
    # must never see a parent reference.
    while ".." in text:
        text = text.replace("..", "_.")
    text = text.strip(" ")
    if text in ("", "."):
        text = "_" + text
    if text.endswith("."):  # Windows drops trailing dots; keep names portable
        text = text[:-1] + "_"
    raw = text.encode("utf-8")
    if len(raw) > _MAX_PART_BYTES:
        digest = hashlib.sha256(part.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        text = raw[: _MAX_PART_BYTES - 13].decode("utf-8", "ignore") + "-" + digest
    return text


def relative_path(test_file: str, test_name: str, check: str) -> PurePosixPath:
    """Golden path of one check relative to the golden dir, without suffix.

    Args:
        test_file: the test file relative to the rootdir (``tests/test_x.py``), with
            ``/`` separators.
        test_name: the test name with parameters (``test_a[1-2]``, or
            ``TestCls.test_a`` for methods).
        check: the check name given to ``convviz.check``.

    Returns:
        ``PurePosixPath("tests/test_x.py/test_a[1-2]/check")``.
    """
    parts = [p for p in str(test_file).replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts:
        raise InputError(f"test_file must name a file. Received: test_file={test_file!r}")
    safe = [sanitize_part(p) for p in parts]
    if safe[0] == OVERRIDE_DIR:  # never collide with the override tree
        safe[0] = OVERRIDE_DIR + "_"
    return PurePosixPath(*safe, sanitize_part(test_name), sanitize_part(check))


def scoped(rel: PurePosixPath, backend: str | None) -> PurePosixPath:
    """``rel`` inside the override tree of ``backend`` (``None``: the neutral tree)."""
    if backend is None:
        return rel
    return PurePosixPath(OVERRIDE_DIR, sanitize_part(backend), rel)


def inside(root: str | os.PathLike, rel: PurePosixPath | str) -> Path:
    """``root / rel``, refused unless its resolved form lies inside resolved ``root``.

    Symlinks are resolved too, so a link pointing out of the golden dir is refused.
    """
    root_resolved = Path(root).resolve()
    target = (Path(root) / Path(str(rel))).resolve()
    if target != root_resolved and root_resolved not in target.parents:
        raise GoldenError(
            f"Refusing a golden path outside the golden directory. Received: {rel!s} "
            f"(resolves to {target}); expected a path inside {root_resolved}."
        )
    return Path(root) / Path(str(rel))


def files_of(base: Path) -> dict[str, Path]:
    """The three files of a check whose path without suffix is ``base``."""
    return {s: base.with_name(base.name + s) for s in SUFFIXES}


def find(
    root: str | os.PathLike, rel: PurePosixPath, backend: str | None
) -> tuple[Path, bool] | None:
    """Locate the golden of ``rel``: the override of ``backend`` first, then neutral.

    Returns:
        ``(base path without suffix, is_override)``, or ``None`` if neither exists
        (a check exists when its ``.npz`` or its sidecar exists).
    """
    candidates = []
    if backend is not None:
        candidates.append((scoped(rel, backend), True))
    candidates.append((rel, False))
    for path, is_override in candidates:
        base = inside(root, path)
        f = files_of(base)
        if f[".npz"].exists() or f[".json"].exists():
            return base, is_override
    return None


def iter_checks(root: str | os.PathLike) -> Iterator[PurePosixPath]:
    """Every stored check under ``root`` (relative, without suffix), sorted."""
    root = Path(root)
    if not root.is_dir():
        return
    seen = set()
    for path in root.rglob("*"):
        if path.suffix in (".npz", ".json") and path.is_file() and not path.name.startswith("."):
            rel = path.relative_to(root).with_suffix("")
            seen.add(PurePosixPath(rel.as_posix()))
    yield from sorted(seen)


def scope_of(rel: PurePosixPath) -> str | None:
    """The backend whose override tree holds ``rel``, or ``None`` for the neutral tree."""
    parts = rel.parts
    if len(parts) >= 2 and parts[0] == OVERRIDE_DIR:
        return parts[1]
    return None


# --------------------------------------------------------------------------- payload
@dataclass
class Golden:
    """The arrays of one check and how to turn them back into a value.

    Attributes:
        kind: ``"activation"``, ``"heatmap"`` or ``"pattern"``.
        layout: ``"array"`` (one array), ``"activations"`` (dict layer -> array) or
            ``"gradcam"`` (the arrays of a :class:`GradCAM`).
        arrays: entry name -> array, as stored (layer names for ``"activations"``).
        attrs: non-array facts needed to rebuild the value (GradCAM layer, ...).
        sidecar: the sidecar dict (filled when loaded or saved).
    """

    kind: str
    layout: str
    arrays: dict[str, np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)
    sidecar: dict[str, Any] = field(default_factory=dict)

    def value(self) -> np.ndarray | dict[str, np.ndarray] | GradCAM:
        """The value to compare. Arrays and activations keep their storage dtype, so that
        ``compare`` sees a float16 golden and widens its bounds by float16 rounding;
        GradCAM fields are widened to float32."""
        if self.layout == "array":
            return self.arrays["value"]
        if self.layout == "activations":
            return dict(self.arrays)
        arrays = {k: _widen(v) for k, v in self.arrays.items()}
        return GradCAM(
            heatmap=arrays["heatmap"],
            raw=arrays["raw"],
            class_index=arrays["class_index"],
            score=arrays["score"],
            score_kind=str(self.attrs.get("score_kind", "")),
            layer=str(self.attrs.get("layer", "")),
            degenerate=arrays["degenerate"].astype(bool),
            image_shape=tuple(int(v) for v in self.attrs.get("image_shape", (0, 0))),
        )

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays.values()))

    def content_sha256(self) -> str:
        return content_sha256(self.arrays)


def _widen(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) if a.dtype == np.float16 else a


def infer_kind(value: Any, kind: str | None) -> str:
    """The kind of ``value``: given, or inferred for dicts (activation), GradCAM
    (heatmap) and 2-D/3-D arrays (heatmaps); a 4-D array needs ``kind``."""
    if kind is not None:
        if kind not in KINDS:
            raise InputError(f"Unknown kind. Received: kind={kind!r}; expected one of {KINDS}.")
        if isinstance(value, Mapping) and kind != "activation":
            raise InputError(
                f"A dict of arrays is a set of activations. Received: kind={kind!r} for a dict."
            )
        if isinstance(value, GradCAM) and kind != "heatmap":
            raise InputError(f"A GradCAM is a heatmap. Received: kind={kind!r} for a GradCAM.")
        return kind
    if isinstance(value, Mapping):
        return "activation"
    if isinstance(value, GradCAM):
        return "heatmap"
    arr = np.asarray(value)
    if arr.ndim in (2, 3):
        return "heatmap"
    raise InputError(
        "kind= is required for this value: a bare array of 4 (or 1, or 5+) dimensions may "
        "be activations or filter patterns. Pass kind='activation', 'heatmap' or 'pattern'. "
        f"Received: {describe_array('value', arr)}"
    )


def from_value(
    value: Any,
    kind: str | None = None,
    *,
    dtype: str | np.dtype | None = None,
    layers: Iterable[str] | None = None,
) -> Golden:
    """Turn a checked value into a :class:`Golden` (arrays as they will be stored).

    Args:
        value: an array, a dict of arrays (activations) or a :class:`GradCAM`.
        kind: the kind; inferred for dicts, GradCAM and 2-D/3-D arrays.
        dtype: storage dtype of floating arrays: ``"float32"`` (default) or
            ``"float16"`` (halves large activation goldens; values must fit).
        layers: for a dict, the subset of keys to keep (in the dict's order).

    Returns:
        The :class:`Golden` to compare against or to save.

    Example:
        >>> g = from_value({"conv": np.ones((1, 4, 4, 2))}, dtype="float16")
        >>> g.arrays["conv"].dtype
        dtype('float16')
    """
    kind = infer_kind(value, kind)
    store = _storage_dtype(dtype)
    attrs: dict[str, Any] = {}
    if isinstance(value, Mapping):
        layout = "activations"
        names = list(value)
        if layers is not None:
            wanted = list(layers)
            unknown = [n for n in wanted if n not in value]
            if unknown:
                raise InputError(
                    f"layers= names keys the value does not have. Received: {unknown}; "
                    f"expected any of {names}."
                )
            names = [n for n in names if n in set(wanted)]
        if not names:
            raise InputError("A dict of activations needs at least one array. Received: {}.")
        for n in names:
            if not isinstance(n, str) or not n:
                raise InputError(f"Activation names must be non-empty str. Received: {n!r}")
        arrays = {n: _as_stored(value[n], store, f"value[{n!r}]") for n in names}
    elif isinstance(value, GradCAM):
        if layers is not None:
            raise InputError("layers= applies to a dict of activations, not to a GradCAM.")
        layout = "gradcam"
        arrays = {
            "heatmap": _as_stored(value.heatmap, store, "cam.heatmap"),
            "raw": _as_stored(value.raw, store, "cam.raw"),
            "class_index": np.asarray(value.class_index, dtype=np.int64),
            # scores are small; keep them float32 even in float16 goldens
            "score": np.asarray(value.score, dtype=np.float32),
            "degenerate": np.asarray(value.degenerate, dtype=bool),
        }
        attrs = {
            "score_kind": str(value.score_kind),
            "layer": str(value.layer),
            "image_shape": [int(v) for v in value.image_shape],
        }
    else:
        if layers is not None:
            raise InputError("layers= applies to a dict of activations, not to an array.")
        layout = "array"
        arrays = {"value": _as_stored(value, store, "value")}
    return Golden(kind=kind, layout=layout, arrays=arrays, attrs=attrs)


def _storage_dtype(dtype: str | np.dtype | None) -> np.dtype:
    if dtype is None:
        return np.dtype(np.float32)
    try:
        d = np.dtype(dtype)
    except TypeError:
        d = None
    if d not in (np.dtype(np.float32), np.dtype(np.float16)):
        raise InputError(
            f"Golden storage dtype must be 'float32' or 'float16'. Received: dtype={dtype!r}"
        )
    return d


def _as_stored(value: Any, store: np.dtype, name: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object:
        raise InputError(
            f"Golden values must be numeric arrays. Received: {describe_array(name, arr)}"
        )
    if arr.dtype.kind in "biu":  # bool and integers are stored as they are
        return np.ascontiguousarray(arr)
    if arr.dtype.kind != "f":
        raise InputError(
            f"Golden values must be real numbers. Received: {describe_array(name, arr)}"
        )
    with np.errstate(over="ignore"):  # float16 overflow is reported below, not warned
        out = np.ascontiguousarray(arr.astype(store))
    if store == np.float16:
        overflow = np.isfinite(arr) & ~np.isfinite(out)
        if overflow.any():
            raise InputError(
                f"{name} does not fit float16 (largest 65504): {int(overflow.sum())} values "
                f"overflow, max |value|={float(np.max(np.abs(arr[np.isfinite(arr)]))):.6g}. "
                "Store it as float32."
            )
    return out


def content_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over entry names, dtypes, shapes and bytes (zip-independent)."""
    h = hashlib.sha256()
    for name, arr in arrays.items():
        a = np.ascontiguousarray(arr)
        h.update(name.encode("utf-8"))
        h.update(a.dtype.str.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _stats(a: np.ndarray) -> dict[str, float | int]:
    if a.size == 0:
        return {"size": 0}
    f = a.astype(np.float64)
    finite = np.isfinite(f)
    vals = f[finite]
    out: dict[str, float | int] = {"size": int(a.size), "nonfinite": int((~finite).sum())}
    if vals.size:
        out.update(
            min=float(vals.min()),
            max=float(vals.max()),
            mean=float(vals.mean()),
            std=float(vals.std()),
        )
    return out


def build_sidecar(golden: Golden, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The sidecar dict of ``golden``.

    Keys (written sorted): ``format_version``, ``kind``, ``layout``, ``names``,
    ``shape``, ``dtype``, ``stats`` (per entry), ``sha256`` (of the array contents),
    ``attrs`` and, from ``meta``: ``backend`` (the writing backend), ``versions``
    (keras and framework), ``cpu`` (instruction set, thread count),
    ``model_fingerprint``, ``tolerance``.
    """
    meta = dict(meta or {})
    side: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": golden.kind,
        "layout": golden.layout,
        "names": list(golden.arrays),
        "shape": {k: list(v.shape) for k, v in golden.arrays.items()},
        "dtype": {k: v.dtype.name for k, v in golden.arrays.items()},
        "stats": {k: _stats(v) for k, v in golden.arrays.items()},
        "sha256": golden.content_sha256(),
        "attrs": golden.attrs,
        "backend": meta.pop("backend", None),
        "versions": meta.pop("versions", {}),
        "cpu": meta.pop("cpu", {}),
        "model_fingerprint": meta.pop("model_fingerprint", None),
        "tolerance": meta.pop("tolerance", {}),
    }
    side.update(meta)
    return side


# --------------------------------------------------------------------------- writing
def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def npz_bytes(golden: Golden) -> bytes:
    """The ``.npz`` bytes of ``golden``: same arrays, same bytes (fixed timestamps)."""
    entries: list[tuple[str, np.ndarray]]
    if golden.layout == "activations":
        names = list(golden.arrays)
        entries = [(_NAMES_ENTRY, np.array(names, dtype=str))]
        entries += [(f"a{i:04d}", golden.arrays[n]) for i, n in enumerate(names)]
    else:
        entries = list(golden.arrays.items())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in entries:
            payload = io.BytesIO()
            np.lib.format.write_array(payload, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            zf.writestr(info, payload.getvalue())
    return buf.getvalue()


def sidecar_bytes(sidecar: Mapping[str, Any]) -> bytes:
    return (json.dumps(sidecar, sort_keys=True, indent=2, allow_nan=True) + "\n").encode()


def save(
    base: str | os.PathLike,
    golden: Golden,
    meta: Mapping[str, Any] | None = None,
    *,
    preview: np.ndarray | None = None,
    warn_large: bool = True,
) -> dict[str, Path]:
    """Write ``golden`` at ``base`` (+ ``.npz``, ``.json``, ``.png``), each atomically.

    If the stored golden already holds the same array contents, nothing is rewritten
    (a re-run on another machine leaves no diff). The preview is rendered by
    :func:`convviz_check.report.render` when ``preview`` is None.

    Returns:
        Suffix -> path of the files of the check.
    """
    base = Path(base)
    paths = files_of(base)
    if warn_large and golden.nbytes > LARGE_BYTES:
        warnings.warn(
            f"Golden {paths['.npz']} holds {golden.nbytes / 2**20:.1f} MB (over "
            f"{LARGE_BYTES / 2**20:.0f} MB). Keep large activation goldens small with "
            "dtype='float16' or layers=[...] in convviz.check.",
            ConvvizWarning,
            stacklevel=2,
        )
    sidecar = build_sidecar(golden, meta)
    golden.sidecar = sidecar
    if paths[".npz"].exists() and paths[".json"].exists():
        try:
            old = json.loads(paths[".json"].read_text())
            if old.get("sha256") == sidecar["sha256"] and _npz_sha(paths[".npz"]) == old["sha256"]:
                return paths
        except (OSError, ValueError, KeyError, GoldenError):
            pass  # unreadable old files are simply replaced
    _write_atomic(paths[".npz"], npz_bytes(golden))
    _write_atomic(paths[".json"], sidecar_bytes(sidecar))
    if preview is None:
        from .report import render

        try:
            preview = render(golden)
        except Exception:  # a preview is a courtesy; never fail a write on it
            preview = None
    if preview is not None:
        from .explain.render import save_png

        save_png(preview, paths[".png"])
    return paths


def _npz_sha(path: Path) -> str:
    arrays, _ = _read_npz(path)
    return content_sha256(arrays)


# --------------------------------------------------------------------------- loading
def _check_lfs(path: Path, head: bytes) -> None:
    if head.startswith(_LFS_MAGIC):
        raise GoldenError(
            f"{path} is a Git LFS pointer file, not the golden data. Fetch the real "
            "files with `git lfs pull` (and install Git LFS where tests run)."
        )


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], list[str] | None]:
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise GoldenError(f"Cannot read golden file {path}: {e}") from None
    _check_lfs(path, head)
    if not head.startswith(b"PK"):
        # np.load would try to unpickle anything that is neither .npz nor .npy and then
        # blame pickling; say what the file really is.
        raise GoldenError(
            f"{path} is corrupt: not a .npz (zip) archive (starts with {head[:8]!r}). Delete "
            "it and rewrite it with --convviz-update=missing, or restore it from version control."
        )
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):
                raise GoldenError(
                    f"{path} is a bare .npy array, not a golden .npz archive. Delete it "
                    "and rewrite it with --convviz-update=missing."
                )
            for key in npz.files:
                arrays[key] = npz[key]
    except GoldenError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise GoldenError(
                f"{path} holds object arrays (pickled Python objects), which are never "
                "loaded (allow_pickle=False: unpickling runs code). Received: an object "
                "array; expected numeric arrays. Delete the file and rewrite it with "
                "--convviz-update=missing."
            ) from None
        raise GoldenError(
            f"{path} is not a valid .npz archive ({e}). Delete and rewrite it."
        ) from None
    except Exception as e:  # BadZipFile, OSError, EOFError, zlib errors...
        raise GoldenError(
            f"{path} is corrupt: cannot be read as .npz ({type(e).__name__}: {e}). Delete it "
            "and rewrite it with --convviz-update=missing, or restore it from version control."
        ) from None
    names = None
    if _NAMES_ENTRY in arrays:
        names = [str(n) for n in arrays.pop(_NAMES_ENTRY).tolist()]
        ordered = {}
        for i, n in enumerate(names):
            key = f"a{i:04d}"
            if key not in arrays:
                raise GoldenError(f"{path} is corrupt: entry {key!r} for layer {n!r} is missing.")
            ordered[n] = arrays.pop(key)
        if arrays:
            raise GoldenError(f"{path} is corrupt: unexpected entries {sorted(arrays)}.")
        arrays = ordered
    for key, arr in arrays.items():
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise GoldenError(
                f"{path} entry {key!r} has dtype {arr.dtype}; expected numeric arrays."
            )
    return arrays, names


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """Parse and validate a sidecar; every problem is a :class:`GoldenError`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise GoldenError(
            f"The sidecar {path} is missing next to its .npz. Restore it from version "
            "control, or delete the .npz and rewrite it with --convviz-update=missing."
        ) from None
    _check_lfs(path, raw[:64])
    try:
        side = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GoldenError(
            f"The sidecar {path} is not valid JSON ({e}). Restore it from version control, "
            "or delete the check's files and rewrite them with --convviz-update=missing."
        ) from None
    if not isinstance(side, dict):
        raise GoldenError(
            f"The sidecar {path} must hold a JSON object. Received: {type(side).__name__}."
        )
    missing = [
        k for k in ("format_version", "kind", "layout", "shape", "dtype", "sha256") if k not in side
    ]
    if missing:
        raise GoldenError(f"The sidecar {path} lacks required keys {missing}.")
    if side["format_version"] != FORMAT_VERSION:
        raise GoldenError(
            f"The sidecar {path} has format_version={side['format_version']!r}; this "
            f"convviz_check reads format_version={FORMAT_VERSION}."
        )
    if side["kind"] not in KINDS or side["layout"] not in LAYOUTS:
        raise GoldenError(
            f"The sidecar {path} has kind={side['kind']!r}, layout={side['layout']!r}; "
            f"expected kind in {KINDS} and layout in {LAYOUTS}."
        )
    return side


def load(base: str | os.PathLike, kind: str | None = None) -> Golden:
    """Load and verify the golden at ``base`` (path without suffix).

    Verifies: not a Git LFS pointer, a valid ``.npz`` without object arrays, a valid
    sidecar, every entry's shape and dtype as the sidecar says, the content sha256,
    and ``kind`` (when given) as the sidecar's. Never changes a file.

    Raises:
        GoldenError: with what was found and what to do.
    """
    paths = files_of(Path(base))
    npz_path, json_path = paths[".npz"], paths[".json"]
    if not npz_path.exists():
        raise GoldenError(f"The golden {npz_path} is missing (its sidecar exists).")
    arrays, _ = _read_npz(npz_path)
    side = read_sidecar(json_path)
    if kind is not None and side["kind"] != kind:
        raise GoldenError(
            f"Kind mismatch for {npz_path}: the golden holds kind={side['kind']!r}; the "
            f"check asks for kind={kind!r}. Rename the check, or delete the golden's files "
            "and rewrite them with --convviz-update=missing."
        )
    want_names = list(side.get("names") or side["shape"])
    if list(arrays) != want_names:
        raise GoldenError(
            f"Entries of {npz_path} do not match its sidecar. Received: {list(arrays)}; "
            f"the sidecar lists {want_names}."
        )
    for name, arr in arrays.items():
        want_shape = tuple(side["shape"].get(name, ()))
        want_dtype = side["dtype"].get(name)
        if tuple(arr.shape) != want_shape:
            raise GoldenError(
                f"Shape mismatch in {npz_path} entry {name!r}: the file holds "
                f"shape={tuple(arr.shape)}, the sidecar says shape={want_shape}."
            )
        if arr.dtype.name != want_dtype:
            raise GoldenError(
                f"Dtype mismatch in {npz_path} entry {name!r}: the file holds "
                f"dtype={arr.dtype.name}, the sidecar says dtype={want_dtype}."
            )
    golden = Golden(
        kind=side["kind"], layout=side["layout"], arrays=arrays, attrs=dict(side.get("attrs") or {})
    )
    if golden.layout == "gradcam" and set(arrays) != set(_GRADCAM_ARRAYS):
        raise GoldenError(
            f"{npz_path} is a GradCAM golden with entries {sorted(arrays)}; expected "
            f"{sorted(_GRADCAM_ARRAYS)}."
        )
    if golden.layout == "array" and list(arrays) != ["value"]:
        raise GoldenError(f"{npz_path} holds entries {sorted(arrays)}; expected ['value'].")
    sha = golden.content_sha256()
    if sha != side["sha256"]:
        raise GoldenError(
            f"Content of {npz_path} does not match its sidecar sha256 (file {sha[:12]}, "
            f"sidecar {str(side['sha256'])[:12]}): one of the two was edited or "
            "half-written. Restore both from version control, or delete them and rewrite "
            "them with --convviz-update=missing."
        )
    golden.sidecar = side
    return golden


def remove(base: str | os.PathLike, root: str | os.PathLike | None = None) -> list[Path]:
    """Delete the files of a check; prune directories left empty (up to ``root``)."""
    removed = []
    for path in files_of(Path(base)).values():
        if path.exists():
            path.unlink()
            removed.append(path)
    if root is not None:
        stop = Path(root).resolve()
        d = Path(base).parent.resolve()
        while d != stop and stop in d.parents:
            try:
                d.rmdir()
            except OSError:
                break
            d = d.parent
    return removed
