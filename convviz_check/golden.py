"""Golden files: where a check's golden lives, what its sidecar says, who may write it.

One check is three files next to each other::

    golden/<test file relative to rootdir>/<test name>[<params>]/<check>.npz
                                                               /<check>.json   (sidecar)
                                                               /<check>.png    (preview)

The ``.npz`` holds the arrays of an :class:`~convviz_check.artifacts.Artifact`, the
sidecar describes them (sorted keys; see :func:`convviz_check.sidecars.build_sidecar`), the preview is for
humans and never compared. Reading and writing go through
:mod:`convviz_check.storage` (byte-stable, atomic, size-limited, never unpickled).

**Ownership** (decided only in :func:`place`): goldens are backend-neutral and written
by one *reference* backend. Under the reference backend a check uses same-backend
bounds and may be rewritten; under another backend it is compared with cross-backend
bounds and rewriting is refused, unless the user asks for an explicit per-backend
override, stored at ``golden/_backend/<backend>/<same relative path>`` and looked up
first (an override is owned by its backend: same-backend bounds).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from . import storage
from .artifacts import Artifact, comparable
from .calibration import PROFILE_FILE
from .errors import ConvvizWarning, GoldenError, InputError, StorageError
from .sidecars import build_sidecar, read_sidecar, sidecar_bytes

OVERRIDE_DIR = "_backend"
SUFFIXES = (".npz", ".json", ".png", ".inputs.png")
# A check over this many stored bytes warns with its size: large activation goldens
# bloat the repository; float16 and layer subsets keep them small.
LARGE_BYTES = 20 * 1024 * 1024
# How much more than its sidecar describes a golden's .npz may unpack before it is
# refused unread (float64 against a float16 sidecar is 4x).
PROPORTION = 8
# ... and never below this (reading a megabyte is harmless, and a small golden whose
# sidecar was edited is then named by the entries check, not by a size limit).
PROPORTION_FLOOR = 1 << 20
_REWRITE_HINT = "rewrite it with --convviz-update=missing, or restore it from version control"


# --------------------------------------------------------------------------- paths
def relative_path(test_file: str, test_name: str, check: str) -> PurePosixPath:
    """Golden path of one check relative to the golden dir, without suffix.

    Args:
        test_file: the test file relative to the rootdir (``tests/test_x.py``).
        test_name: the test name with parameters (``test_a[1-2]``, or
            ``TestCls.test_a`` for methods).
        check: the check name given to ``convviz.check``.

    Returns:
        ``PurePosixPath("tests/test_x.py/test_a[1-2]/check")``.
    """
    parts = [p for p in str(test_file).replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts:
        raise InputError(f"test_file must name a file. Received: test_file={test_file!r}")
    safe = [storage.sanitize_part(p) for p in parts]
    if safe[0] == OVERRIDE_DIR:  # never collide with the override tree
        safe[0] = OVERRIDE_DIR + "_"
    return PurePosixPath(*safe, storage.sanitize_part(test_name), check_file_name(check))


# What a check's own files end with (``cam.inputs.png`` is the thumbnail of ``cam``):
# a check name ending with one of them would share or shadow another check's files.
_RESERVED_ENDINGS = (".inputs", ".npz", ".json", ".png")


def check_file_name(check: str) -> str:
    """The file name (without suffix) a check called ``check`` is stored under: its
    :func:`storage.sanitize_part`, refused when it could collide with or hide from
    other checks.

    Refused: a name starting with ``.`` (a dot-file, which ``golden list``, unused
    judging and pruning skip as hidden or temporary), and a name ending with a golden
    file's suffix, ``.inputs``, ``.npz``, ``.json`` or ``.png`` in any case
    (``check("cam.inputs")`` would write ``cam.inputs.png``, the inputs thumbnail of
    ``check("cam")``). Within one test, two names that give the same file name up to
    case are one check (see the fixture), so case-insensitive file systems agree.

    Raises:
        InputError: naming the received name, why, and a name that works.

    Example:
        >>> check_file_name("cam/left")
        'cam_left'
    """
    safe = storage.sanitize_part(check)
    lowered = safe.lower()
    why = ""
    if safe.startswith("."):
        why = (
            "it starts with '.', so its files would be hidden dot-files that `golden list`, "
            "unused judging and pruning never see"
        )
    else:
        ending = next((e for e in _RESERVED_ENDINGS if lowered.endswith(e)), "")
        if ending:
            stem = safe[: -len(ending)]
            shared = stem + safe[-len(ending) :] + (".png" if ending == ".inputs" else "")
            why = (
                f"it ends with {ending!r}, as the files of other checks do (the check "
                f"{stem!r} stores {shared})"
            )
    if why:
        fixed = safe.lstrip(".").replace(".", "_") or "check"
        raise InputError(
            f"A check name becomes the name of its golden files. Received: name={check!r}; "
            f"{why}. Expected a name that does not start with '.' and does not end with "
            f"{', '.join(_RESERVED_ENDINGS)}, e.g. {fixed!r}."
        )
    return safe


def scoped(rel: PurePosixPath, backend: str | None) -> PurePosixPath:
    """``rel`` inside the override tree of ``backend`` (``None``: the neutral tree)."""
    if backend is None:
        return rel
    return PurePosixPath(OVERRIDE_DIR, storage.sanitize_part(backend), rel)


def scope_of(rel: PurePosixPath) -> str | None:
    """The backend whose override tree holds ``rel``, or ``None`` for the neutral tree."""
    parts = rel.parts
    if len(parts) >= 2 and parts[0] == OVERRIDE_DIR:
        return parts[1]
    return None


def owner_of(rel: PurePosixPath, reference: str) -> str:
    """The backend that owns the stored check ``rel``: its override tree's backend, or
    the reference backend for a neutral golden."""
    return scope_of(rel) or reference


def inside(root: str | os.PathLike[str], rel: PurePosixPath | str) -> Path:
    """``root / rel``, refused (:class:`GoldenError`) when it would leave ``root``."""
    try:
        return storage.inside(root, rel)
    except StorageError as e:
        raise GoldenError(str(e)) from None


def files_of(base: Path) -> dict[str, Path]:
    """The three files of a check whose path without suffix is ``base``."""
    return {s: base.with_name(base.name + s) for s in SUFFIXES}


def exists(base: Path) -> bool:
    """A check exists when its ``.npz`` or its sidecar exists."""
    f = files_of(base)
    return f[".npz"].exists() or f[".json"].exists()


def iter_checks(root: str | os.PathLike[str]) -> Iterator[PurePosixPath]:
    """Every stored check under ``root`` (relative, without suffix), sorted."""
    root = Path(root)
    if not root.is_dir():
        return
    seen = set()
    for path in root.rglob("*"):
        if path.name == PROFILE_FILE and path.parent == root:
            continue  # the calibrated retrain bounds (convviz_check.calibration), no check
        if path.suffix in (".npz", ".json") and path.is_file() and not path.name.startswith("."):
            rel = path.relative_to(root).with_suffix("")
            seen.add(PurePosixPath(rel.as_posix()))
    yield from sorted(seen)


# --------------------------------------------------------------------------- ownership
@dataclass(frozen=True)
class Placement:
    """Where one check's golden is for one backend, and what that backend may do.

    Attributes:
        existing: the golden found (override first, then neutral), or None.
        is_override: ``existing`` is this backend's override.
        cross: compare with cross-backend bounds (the golden was written by another
            backend).
        write_to: where an update writes, or None when this backend may not write.
        target: the golden's path for messages (the existing one, else where the
            reference backend or the override would write it).
        refusal: why writing is refused (empty when allowed).
    """

    existing: Path | None
    is_override: bool
    cross: bool
    write_to: Path | None
    target: Path
    refusal: str = ""


def place(
    root: str | os.PathLike[str],
    rel: PurePosixPath,
    backend: str,
    reference: str,
    allow_override: bool = False,
) -> Placement:
    """Apply the ownership rule to check ``rel`` under ``backend``.

    Args:
        root: the golden directory.
        rel: the check's neutral relative path (:func:`relative_path`).
        backend: the backend that computed the value.
        reference: the backend that owns neutral goldens.
        allow_override: the user asked for per-backend overrides.
    """
    override = inside(root, scoped(rel, backend))
    neutral = inside(root, rel)
    if exists(override):
        return Placement(override, True, False, override, override)
    existing = neutral if exists(neutral) else None
    if backend == reference:
        return Placement(existing, False, False, neutral, neutral)
    if allow_override:
        return Placement(existing, False, True, override, existing or override)
    refusal = (
        f"goldens are owned by the reference backend {reference!r}; under {backend!r} they "
        "are only compared (cross-backend bounds), never rewritten"
    )
    return Placement(existing, False, True, None, neutral, refusal)


# --------------------------------------------------------------------------- sidecars
# --------------------------------------------------------------------------- save / load
@dataclass
class Golden:
    """A stored check: its artifact and its sidecar."""

    artifact: Artifact
    sidecar: dict[str, Any]


def save(
    base: str | os.PathLike[str],
    artifact: Artifact,
    meta: Mapping[str, Any] | None = None,
    *,
    inputs: np.ndarray | None = None,
    warn_large: bool = True,
) -> dict[str, Path]:
    """Write ``artifact`` at ``base`` (+ ``.npz``, ``.json``, ``.png``), each atomically.

    When the stored golden already holds the same array contents nothing is rewritten
    (a re-run on another machine leaves no diff). ``inputs`` is a thumbnail strip of
    the input images (:func:`convviz_check.report.pictures.inputs_thumbnail`), kept as
    ``.inputs.png`` so that reports draw heatmaps over their images. The ``.png``
    preview is drawn by :func:`convviz_check.report.pictures.preview`; a preview that
    cannot be drawn is left out (neither picture is ever compared).

    Returns:
        Suffix -> path of the check's files that exist after the call.
    """
    base = Path(base)
    paths = files_of(base)
    if warn_large and artifact.nbytes > LARGE_BYTES:
        warnings.warn(
            f"Golden {paths['.npz']} holds {artifact.nbytes / 2**20:.1f} MB (over "
            f"{LARGE_BYTES / 2**20:.0f} MB). Keep large activation goldens small with "
            "dtype='float16' or layers=[...] in convviz.check.",
            ConvvizWarning,
            stacklevel=2,
        )
    sidecar = build_sidecar(artifact, meta)
    if _holds(paths, sidecar["sha256"]):
        return {s: p for s, p in paths.items() if p.exists()}
    from .report.pictures import preview

    picture = preview(artifact, inputs)
    # Both files complete (and synced) before either replaces its old one: a full disk
    # or a read-only directory leaves the old golden and sidecar as they were. Renamed
    # data first, its description second: a crash between the two renames leaves a pair
    # whose sha256 disagree, which load() reports as half-written instead of trusting it.
    storage.write_files({paths[".npz"]: artifact.encode(), paths[".json"]: sidecar_bytes(sidecar)})
    written = {".npz": paths[".npz"], ".json": paths[".json"]}
    if picture is not None:
        written[".png"] = storage.write_png(paths[".png"], picture)
    if inputs is not None:
        written[".inputs.png"] = storage.write_png(paths[".inputs.png"], inputs)
    return written


def unwritable(artifact: Artifact, tolerance: Any = None, *, profile: str = "exact") -> str:
    """Why ``artifact`` must not become a golden under ``tolerance``, or ``""``.

    A golden that no later run can pass is worse than none: every run after the update
    fails. So the value is compared with itself, by the same :func:`~convviz_check.
    metrics.compare` every later run uses, before anything is written: whatever that
    comparison refuses (NaN or infinite values, an empty batch, a heatmap of the wrong
    rank, a bound that is not a finite number) is refused here, and so is a bound that
    fails even identical arrays (a negative error bound, a similarity above 1).
    """
    from .errors import ComparisonError, LocalizationError
    from .metrics import compare

    value = comparable(artifact)  # what every comparison of it reads
    try:
        result = compare(
            value, value, artifact.kind, tolerance, profile=profile, boxes=artifact.boxes
        )
    except (ComparisonError, LocalizationError) as e:
        return f"no later run could compare with it: {e}"
    if result.passed:
        return ""
    failing = ", ".join(
        f"{name} {m.value:g} vs bound {m.bound}" for name, m in result.metrics.items() if not m.ok
    )
    return (
        f"its bounds fail even the value compared with itself ({failing}): error bounds "
        "must be >= 0 and similarity bounds <= 1"
    )


def _holds(paths: dict[str, Path], sha: str) -> bool:
    """The stored pair already holds these contents (and is intact)."""
    if not (paths[".npz"].exists() and paths[".json"].exists()):
        return False
    try:
        old = read_sidecar(paths[".json"])
        return bool(
            old["sha256"] == sha and storage.content_sha256(storage.read_npz(paths[".npz"])) == sha
        )
    except (GoldenError, StorageError):
        return False  # unreadable old files are simply replaced


def load(base: str | os.PathLike[str], kind: str | None = None) -> Golden:
    """Load and verify the golden at ``base`` (path without suffix).

    Verifies: a readable ``.npz`` within the storage limits (no object arrays, no
    Git LFS pointer), a valid sidecar, every entry's name, shape and dtype as the
    sidecar says, the content sha256, and ``kind`` (when given). Never changes a file.

    Raises:
        GoldenError: with what was found and what to do.
    """
    paths = files_of(Path(base))
    npz_path = paths[".npz"]
    if not npz_path.exists():
        if not paths[".json"].exists():
            raise GoldenError(
                f"No golden at {Path(base)}: neither {npz_path.name} nor "
                f"{paths['.json'].name} exists there."
            )
        raise GoldenError(f"The golden {npz_path} is missing (its sidecar exists).")
    # The sidecar first (small JSON): the arrays it describes bound what reading the
    # .npz may unpack, so a member far larger than the check it claims to be is
    # refused before it is inflated. An unusable sidecar is reported after the .npz.
    # Read as one pair: a concurrent update replaces both under an exclusive lock.
    with storage.dir_lock(npz_path.parent, shared=True):
        try:
            side: dict[str, Any] | None = read_sidecar(paths[".json"])
            side_error: GoldenError | None = None
        except GoldenError as e:
            side, side_error = None, e
        try:
            arrays = storage.read_npz(npz_path, _limits(side))
        except StorageError as e:
            described = (
                f" Its sidecar describes shape={side.get('shape')}, dtype={side.get('dtype')}."
                if side is not None and "limits are" in str(e)
                else ""
            )
            raise GoldenError(f"{e}{described} Delete it and {_REWRITE_HINT}.") from None
    if side is None:
        assert side_error is not None
        raise side_error
    if kind is not None and side["kind"] != kind:
        raise GoldenError(
            f"Kind mismatch for {npz_path}: the golden holds kind={side['kind']!r}; the "
            f"check asks for kind={kind!r}. Rename the check, or delete the golden's files "
            "and rewrite them with --convviz-update=missing."
        )
    _check_entries(npz_path, arrays, side)
    try:
        artifact = Artifact.decode(
            arrays, side["kind"], side["layout"], dict(side.get("attrs") or {})
        )
    except (StorageError, InputError) as e:
        raise GoldenError(f"{npz_path}: {e}") from None
    sha = artifact.content_sha256()
    if sha != side["sha256"]:
        raise GoldenError(
            f"Content of {npz_path} does not match its sidecar sha256 (file {sha[:12]}, "
            f"sidecar {str(side['sha256'])[:12]}): one of the two was edited or "
            "half-written. Restore both from version control, or delete them and rewrite "
            "them with --convviz-update=missing."
        )
    return Golden(artifact, side)


def _limits(side: dict[str, Any] | None) -> storage.Limits:
    """What reading a golden's ``.npz`` may unpack: the arrays its sidecar describes
    (each entry's shape and dtype, and the names entry of an indexed file), never more
    than :data:`storage.LIMITS`; the storage limits alone without a usable sidecar."""
    if side is None:
        return storage.LIMITS
    try:
        sizes = [
            int(np.prod(shape, dtype=object)) * np.dtype(side["dtype"][name]).itemsize
            for name, shape in side["shape"].items()
        ]
    except (KeyError, TypeError, ValueError):
        return storage.LIMITS  # the entries check names what is wrong
    names = list(side.get("names") or side["shape"])
    # the names entry of an indexed file: one fixed-width unicode string per name
    width = max((len(n) for n in names), default=0)
    names_bytes = 4 * max(width, 1) * len(names)
    # Out of proportion: PROPORTION times what the sidecar describes. Closer mismatches
    # (another dtype, a slightly different shape) are read and named by the entries
    # check; the writer never compresses, so its own goldens are always in proportion.
    return storage.Limits(
        max_members=min(storage.LIMITS.max_members, len(sizes) + 1),
        max_array_bytes=min(
            storage.LIMITS.max_array_bytes,
            max(PROPORTION_FLOOR, PROPORTION * max([names_bytes, *sizes])),
        ),
        max_total_bytes=min(
            storage.LIMITS.max_total_bytes,
            max(PROPORTION_FLOOR, PROPORTION * (sum(sizes) + names_bytes)),
        ),
    )


def _check_entries(path: Path, arrays: dict[str, np.ndarray], side: dict[str, Any]) -> None:
    want_names = list(side.get("names") or side["shape"])
    if list(arrays) != want_names:
        raise GoldenError(
            f"Entries of {path} do not match its sidecar. Received: {list(arrays)}; "
            f"the sidecar lists {want_names}."
        )
    for name, arr in arrays.items():
        want_shape = tuple(side["shape"].get(name) or ())
        want_dtype = side["dtype"].get(name)
        if tuple(arr.shape) != want_shape:
            raise GoldenError(
                f"Shape mismatch in {path} entry {name!r}: the file holds "
                f"shape={tuple(arr.shape)}, the sidecar says shape={want_shape}."
            )
        if arr.dtype.name != want_dtype:
            raise GoldenError(
                f"Dtype mismatch in {path} entry {name!r}: the file holds "
                f"dtype={arr.dtype.name}, the sidecar says dtype={want_dtype}."
            )
        if arr.dtype.kind not in "biuf":
            raise GoldenError(f"{path} entry {name!r} has dtype {arr.dtype}; expected numbers.")


def copy_check(src_base: Path, dest_base: Path) -> list[Path]:
    """Copy the files of a verified check (each file atomically)."""
    written = []
    for suffix, src in files_of(src_base).items():
        if src.exists():
            written.append(storage.write_bytes(files_of(dest_base)[suffix], src.read_bytes()))
    return written


def read_inputs(base: Path) -> np.ndarray | None:
    """The thumbnail strip of a check's inputs, or None when it has none (or it is
    unreadable: it is only a picture)."""
    path = files_of(base)[".inputs.png"]
    if not path.exists():
        return None
    try:
        from PIL import Image

        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError):
        return None


def remove(base: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> list[Path]:
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
