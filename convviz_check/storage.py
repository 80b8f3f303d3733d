"""The one place where convviz_check reads and writes files.

- **One array codec** (:func:`encode_npz` / :func:`read_npz`): a ``.npz`` (zip) written
  by hand with a fixed timestamp and no compression, so the same arrays give the same
  bytes on any machine (``np.savez`` stamps each entry with the current time, and
  deflate output depends on the zlib build; git compresses blobs itself). Names that
  are not plain identifiers (layer names may hold ``/``) are stored under index keys
  ``a0000, a0001, ...`` with the real names in a ``__names__`` entry.
- **Safe reading**: every member is checked before a byte of its data is read: plain
  ``<name>.npy`` member names (no directories, no ``..``), numeric dtypes only (object
  arrays would need unpickling: never), and the sizes the headers declare within
  :data:`LIMITS`. Every problem is a :class:`~convviz_check.errors.StorageError`.
- **One atomic writer** (:func:`write_bytes`, :func:`write_files` for files that go
  together): a temporary file in the target's directory, then ``os.replace``; readers
  see the old file or the new one, never half of one, and a failed write (a full disk,
  a read-only directory) is a :class:`StorageError` naming the target and what to do,
  with the old file left as it was. Files get the mode ``0666 & ~umask`` like any file the process creates
  (``tempfile`` alone would leave them ``0600``, unreadable for a CI artifact reader or
  a shared cache running as another user).
- **One name sanitizer** (:func:`sanitize_part`) and one containment check
  (:func:`inside`) for every path built from user text (test ids, check names).

NumPy, Pillow and the standard library only.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .errors import InputError, StorageError


@dataclass(frozen=True)
class Limits:
    """What :func:`read_npz` accepts before reading any array data.

    The defaults hold any golden this package writes with room to spare (the largest
    bundled golden is under 1 MB; a check over 20 MB already warns when written) while
    refusing a crafted archive whose headers declare more memory than a CI machine has.
    """

    max_members: int = 4096
    max_array_bytes: int = 2 * 1024**3
    max_total_bytes: int = 4 * 1024**3


LIMITS = Limits()
# Room for a member's .npy header above its array bytes (a version 1.0 header is at
# most 65535 bytes after its 10-byte preamble).
NPY_HEADER_ROOM = 65536 + 10
NAMES_ENTRY = "__names__"
# The earliest timestamp a zip can store, for byte-stable rewrites.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_LFS_MAGIC = b"version https://git-lfs"
# Longest path part written: file systems allow 255 bytes; keep room for a suffix and
# the temporary-file decorations.
_MAX_PART_BYTES = 180
_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f/\\:<>"|?*]')
_CHUNK = 1 << 20


# --------------------------------------------------------------------------- names
def sanitize_part(part: str) -> str:
    """Make one path component safe: no separators, no ``..``, no control characters.

    Unsafe characters become ``_``; ``..`` sequences are broken up; overly long parts
    are shortened and suffixed with a hash so that distinct inputs stay distinct. The
    result is never empty.

    Example:
        >>> sanitize_part("test_a[../x/y]")
        'test_a[_._x_y]'
    """
    if not isinstance(part, str):
        raise InputError(f"A path part must be a str. Received: {part!r}")
    text = _UNSAFE_CHARS.sub("_", part)
    # No ".." anywhere (not only as a whole part): a later join or a careless tool must
    # never see a parent reference.
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


def inside(root: str | os.PathLike[str], rel: PurePosixPath | str) -> Path:
    """``root / rel``, refused unless its resolved form lies inside resolved ``root``.

    Symlinks are resolved too, so a link pointing out of ``root`` is refused.
    """
    root_resolved = Path(root).resolve()
    target = (Path(root) / Path(str(rel))).resolve()
    if target != root_resolved and root_resolved not in target.parents:
        raise StorageError(
            f"Refusing a path outside its directory. Received: {rel!s} (resolves to "
            f"{target}); expected a path inside {root_resolved}."
        )
    return Path(root) / Path(str(rel))


# --------------------------------------------------------------------------- writing
def _umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (brief, process-wide)
    os.umask(mask)
    return mask


def _write_chunks(f: Any, data: bytes) -> None:
    for start in range(0, len(data), _CHUNK):
        f.write(data[start : start + _CHUNK])


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + ``os.replace``), creating the
    parent directories; the file's mode honours the umask.

    Raises:
        StorageError: the file cannot be written (a full disk, a read-only directory,
            a part of the path that is a file...), naming the path, the reason and what
            to do; the file that was there is left as it was.
    """
    return write_files({Path(path): data})[0]


def write_files(files: Mapping[Path, bytes]) -> list[Path]:
    """Write several files as one step: every temporary file is written and synced
    first, and only when all of them are complete are they renamed over their targets
    (in the given order). A failure while writing (a full disk) leaves every target as
    it was; only a crash between the renames (no space or data is needed there) can
    leave some renamed and some not.

    Raises:
        StorageError: see :func:`write_bytes`.
    """
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in files.items():
            staged.append((_stage(Path(path), data), Path(path)))
        with ExitStack() as locks:  # sorted: two writers never wait for each other
            for directory in sorted({path.parent for _tmp, path in staged}):
                locks.enter_context(dir_lock(directory))
            for tmp, path in staged:
                try:
                    os.replace(tmp, path)
                except OSError as e:
                    raise write_error(path, e) from None
    except BaseException:
        for tmp, _path in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    return [path for _tmp, path in staged]


@contextmanager
def dir_lock(directory: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold an advisory lock on ``directory`` (``flock``): exclusive while files that go
    together are renamed into it (:func:`write_files`), shared while they are read
    (``golden.load``), so that concurrent writers of one golden directory leave each
    check as one writer's complete pair and a reader never sees half of an update.

    Where the OS or the file system has no ``flock`` (Windows, some network file
    systems) nothing is locked; a golden's sha256 check still reports a mismatched
    pair as half-written."""
    fd = None
    try:
        import fcntl

        fd = os.open(directory, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
    except (ImportError, OSError):
        pass  # unlocked (see above); an fd opened before a failed flock is closed below
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def _stage(path: Path, data: bytes) -> str:
    """A complete, synced temporary copy of ``data`` next to ``path``; its name."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            _write_chunks(f, data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise
    return tmp


def write_error(path: Path, e: OSError) -> StorageError:
    """A :class:`StorageError` for a failed write of ``path``: the target (an OS error
    names a temporary file or no file at all), the reason, and what to do."""
    reason = f"{e.strerror or e} (errno {e.errno})" if e.errno else str(e)
    blocker = file_in_the_way(path)
    if blocker is not None:
        hint = (
            f"{blocker} is a file, not a directory. Expected a directory there: move the "
            "file away, or write elsewhere (e.g. --convviz-golden-dir / --golden-dir)."
        )
    elif e.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = (
            f"The disk holding {path.parent} is full (or over quota). Free space there and "
            "run again."
        )
    elif e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = (
            f"The directory {path.parent} is not writable (a read-only file system, or no "
            "permission). Make it writable, or write elsewhere (e.g. --convviz-golden-dir "
            "/ --golden-dir)."
        )
    else:
        hint = "Check the path and the file system, then run again."
    return StorageError(
        f"Cannot write {path}: {reason}. Nothing there was replaced: the file that was there "
        f"is as it was. {hint}"
    )


def file_in_the_way(path: Path) -> Path | None:
    """The first ancestor of ``path`` that exists and is not a directory, if any."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def json_bytes(data: Any) -> bytes:
    """Sorted, indented JSON (stable bytes for the same data)."""
    return (json.dumps(data, sort_keys=True, indent=2, default=str) + "\n").encode("utf-8")


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    return write_bytes(path, json_bytes(data))


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def png_bytes(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``
    image (no timestamp or other varying chunk: the same pixels give the same bytes)."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise InputError(
            f"A PNG needs a uint8 (H, W) or (H, W, C) image. Received: shape={arr.shape}, "
            f"dtype={arr.dtype}"
        )
    if arr.ndim == 3:
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
        elif arr.shape[-1] not in (3, 4):
            raise InputError(
                f"A PNG needs 1, 3 or 4 channels. Received: shape={arr.shape} "
                f"({arr.shape[-1]} channels)"
            )
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    return write_bytes(path, png_bytes(image))


# --------------------------------------------------------------------------- npz codec
def encode_npz(arrays: Mapping[str, np.ndarray], *, indexed: bool | None = None) -> bytes:
    """The ``.npz`` bytes of ``arrays`` (same arrays, same bytes).

    Args:
        arrays: entry name -> numeric array (bool, integer or float).
        indexed: store entries under ``a0000, a0001...`` with the names in
            ``__names__``; default: only when a name is not a plain identifier.
    """
    names = list(arrays)
    if indexed is None:
        indexed = not all(_PLAIN_NAME.match(n) and n != NAMES_ENTRY for n in names)
    entries: list[tuple[str, np.ndarray]]
    if indexed:
        entries = [(NAMES_ENTRY, np.array(names, dtype=str))]
        entries += [(f"a{i:04d}", np.asarray(arrays[n])) for i, n in enumerate(names)]
    else:
        entries = [(n, np.asarray(arrays[n])) for n in names]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in entries:
            if arr.dtype == object:
                raise InputError(
                    f"Only numeric arrays are stored. Received: {name!r} with dtype object."
                )
            payload = io.BytesIO()
            # asarray(order="C"), not ascontiguousarray: a 0-d array stays 0-d
            np.lib.format.write_array(payload, np.asarray(arr, order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            zf.writestr(info, payload.getvalue())
    return buf.getvalue()


def write_npz(
    path: str | os.PathLike[str],
    arrays: Mapping[str, np.ndarray],
    *,
    indexed: bool | None = None,
) -> Path:
    return write_bytes(path, encode_npz(arrays, indexed=indexed))


def read_npz(path: str | os.PathLike[str], limits: Limits = LIMITS) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` written by :func:`encode_npz` (or ``np.savez``), in
    stored order, with index keys turned back into their names.

    Raises:
        StorageError: not a zip, a Git LFS pointer, a member that is not a plain
            ``.npy`` name, an object or non-numeric array, declared sizes over
            ``limits``, or a truncated or inconsistent archive. Nothing is unpickled.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise StorageError(f"Cannot read {path}: {e}") from None
    if head.startswith(_LFS_MAGIC):
        raise StorageError(
            f"{path} is a Git LFS pointer file, not the data. Fetch the real files with "
            "`git lfs pull` (and install Git LFS where tests run)."
        )
    if not head.startswith(b"PK"):
        raise StorageError(f"{path} is not a .npz (zip) archive (it starts with {head[:8]!r}).")
    try:
        with zipfile.ZipFile(path) as zf:
            arrays = _read_members(zf, path, limits)
    except StorageError:
        raise
    except Exception as e:  # BadZipFile, EOFError, OSError, ValueError, zlib errors...
        raise StorageError(
            f"{path} is corrupt: it cannot be read as .npz ({type(e).__name__}: {e})."
        ) from None
    return _named(arrays, path)


def _read_members(zf: zipfile.ZipFile, path: Path, limits: Limits) -> dict[str, np.ndarray]:
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise StorageError(
            f"{path} holds {len(infos)} members; at most {limits.max_members} are read."
        )
    headers = []
    total = 0
    unpacked = 0
    for info in infos:
        key = _member_key(info.filename, path)
        # The zip directory's uncompressed size caps what reading the member inflates
        # (zipfile stops there): checked before a byte of the member is decompressed,
        # so a small deflated member cannot expand into gigabytes first.
        unpacked += info.file_size
        if (
            info.file_size > limits.max_array_bytes + NPY_HEADER_ROOM
            or unpacked > limits.max_total_bytes + NPY_HEADER_ROOM * len(infos)
        ):
            raise StorageError(
                f"{path} entry {key!r} unpacks to {info.file_size} bytes ({unpacked} in all "
                f"so far; {info.compress_size} stored); the limits are "
                f"{limits.max_array_bytes} bytes per array and {limits.max_total_bytes} in "
                "all (plus room for the .npy headers)."
            )
        with zf.open(info) as member:
            shape, dtype = _npy_header(member, path, key)
            header_end = member.tell()
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        total += nbytes
        if nbytes > limits.max_array_bytes or total > limits.max_total_bytes:
            raise StorageError(
                f"{path} entry {key!r} declares shape={shape}, dtype={dtype} "
                f"({nbytes} bytes, {total} in all so far); the limits are "
                f"{limits.max_array_bytes} bytes per array and {limits.max_total_bytes} in all."
            )
        if info.file_size != header_end + nbytes:
            raise StorageError(
                f"{path} is corrupt: entry {key!r} unpacks to {info.file_size} bytes, but its "
                f"header declares shape={shape}, dtype={dtype}: {header_end} + {nbytes} bytes."
            )
        headers.append((info, key))
    arrays: dict[str, np.ndarray] = {}
    for info, key in headers:
        with zf.open(info) as member:
            arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
    return arrays


def _member_key(filename: str, path: Path) -> str:
    key = filename[:-4] if filename.endswith(".npy") else ""
    if not key or "/" in key or "\\" in key or ".." in key or key.startswith("."):
        raise StorageError(
            f"{path} holds a member named {filename!r}; expected plain '<name>.npy' members "
            "(no directories, no '..')."
        )
    return key


def _npy_header(member: Any, path: Path, key: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise StorageError(f"{path} entry {key!r} has unsupported .npy version {version}.")
    if dtype.hasobject or dtype.kind not in "biufU":
        raise StorageError(
            f"{path} entry {key!r} has dtype {dtype}; expected numeric arrays (object "
            "arrays are never loaded: unpickling runs code)."
        )
    if dtype.kind == "U" and key != NAMES_ENTRY:
        raise StorageError(f"{path} entry {key!r} holds text; expected numeric arrays.")
    return tuple(int(d) for d in shape), dtype


def _named(arrays: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    if NAMES_ENTRY not in arrays:
        return arrays
    names = [str(n) for n in arrays.pop(NAMES_ENTRY).reshape(-1).tolist()]
    if len(set(names)) != len(names):
        raise StorageError(f"{path} is corrupt: its entry names repeat: {names}.")
    ordered = {}
    for i, name in enumerate(names):
        key = f"a{i:04d}"
        if key not in arrays:
            raise StorageError(f"{path} is corrupt: entry {key!r} for {name!r} is missing.")
        ordered[name] = arrays.pop(key)
    if arrays:
        raise StorageError(f"{path} is corrupt: unexpected entries {sorted(arrays)}.")
    return ordered


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parsed JSON; an unreadable or invalid file is a :class:`StorageError`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise StorageError(f"Cannot read {path}: {e}") from None
    if raw.startswith(_LFS_MAGIC):
        raise StorageError(f"{path} is a Git LFS pointer file; fetch it with `git lfs pull`.")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StorageError(f"{path} is not valid JSON ({e}).") from None
    except RecursionError:
        raise StorageError(f"{path} is not usable JSON: nested too deeply.") from None


def content_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over entry names, dtypes, shapes and bytes (independent of the zip)."""
    h = hashlib.sha256()
    for name, arr in arrays.items():
        a = np.asarray(arr, order="C")
        h.update(name.encode("utf-8"))
        h.update(a.dtype.str.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()
