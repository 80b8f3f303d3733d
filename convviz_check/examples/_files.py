"""The trained example models' files: their names, the manifest, and the rule for writing.

The shortcut example and the vision-transformer example each keep a folder of ``.keras``
files and a ``models.json`` manifest (per model its file, sha256, size, seed and the
numbers measured when it was accepted). Both train into a temporary folder inside the
output folder and move the files into place only when the whole set passes its
acceptance, so a failed or interrupted run leaves the committed models and the manifest
as they were: that rule lives here once.

Importing this module imports the standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..models import file_sha256

MANIFEST = "models.json"

__all__ = ["MANIFEST", "file_entry", "model_file", "publish", "read_manifest", "training_parser"]


def model_file(models_dir: Path, stem: str, name: str, names: Sequence[str], what: str) -> Path:
    """``models_dir/<stem>.keras`` once ``name`` is one of ``names``.

    Raises:
        InputError: ``name`` is not a model of this example (``what`` names the example).
    """
    if name not in names:
        raise InputError(
            f"Unknown {what} model. Received: name={name!r}. Expected one of {tuple(names)}."
        )
    return models_dir / f"{stem}.keras"


def read_manifest(models_dir: Path) -> dict[str, Any]:
    """The folder's ``models.json``: per model its sha256 and its accepted numbers."""
    data: dict[str, Any] = json.loads((models_dir / MANIFEST).read_text(encoding="utf-8"))
    return data


def file_entry(path: Path) -> dict[str, Any]:
    """The manifest fields every example records of a saved model file."""
    return {"file": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size}


def training_parser(
    prog: str, description: str, default_out: Path, names: Sequence[str], only_help: str
) -> argparse.ArgumentParser:
    """The training command's common options: ``--out``, ``--threads`` and ``--only``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--out", type=Path, default=default_out, help="output directory")
    parser.add_argument("--threads", type=int, default=0, help="pin threads (0: all)")
    parser.add_argument("--only", choices=tuple(names), default=None, help=only_help)
    return parser


def publish(
    staged: Mapping[Path, Path], out: Path, payload: Mapping[str, Any], names: Sequence[str]
) -> None:
    """Move each accepted file from the staging folder to its place, then write the
    manifest: called only after the acceptance passed (``staged``: staged -> final)."""
    for source, target in staged.items():
        os.replace(source, target)
    (out / MANIFEST).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    print(f"written: {', '.join(names)} and {MANIFEST} in {out}")
