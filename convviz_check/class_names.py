"""Class names: what messages and pages print next to a class index
(``top class changed: neutral (6) -> happy (3)``).

Given as a list of strings, or as a file: a JSON list of strings, or one name per line.
Used by the fixture (``convviz.class_names``, ``check(class_names=...)``, ini
``convviz_class_names``) and the CLI (``--class-names FILE``); a golden check stores
them in its sidecar. No framework, no pytest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import InputError

# A names file is small text; anything larger is not one.
MAX_BYTES = 4 * 1024 * 1024


def check_class_names(names: Any, source: str, num_classes: int | None = None) -> list[str]:
    """``names`` as a list of non-empty strings (one per class, at least as many as
    ``num_classes`` when known).

    Raises:
        InputError: not a list of strings, an empty name, or fewer names than classes.
    """
    if isinstance(names, str | bytes) or not isinstance(names, list | tuple):
        raise InputError(
            f"Class names must be a list of strings, one per class. Received: {source}="
            f"{names!r:.80} (type {type(names).__name__})."
        )
    bad = [i for i, n in enumerate(names) if not isinstance(n, str) or not n.strip()]
    if bad or not names:
        raise InputError(
            f"Class names must be non-empty strings, one per class. Received: {source} with "
            + (
                f"{len(bad)} empty or non-string entries (first at index {bad[0]})"
                if bad
                else "no names"
            )
            + "."
        )
    if num_classes is not None and len(names) < num_classes:
        raise InputError(
            f"Too few class names for the model. Received: {len(names)} names in {source}. "
            f"Expected one per class: {num_classes}."
        )
    return [n.strip() for n in names]


def read_class_names(path: str | os.PathLike[str], num_classes: int | None = None) -> list[str]:
    """The class names in the file ``path``: a JSON list of strings, or one name per
    line (blank lines at the end ignored).

    Raises:
        InputError: the file is missing, unreadable, too large, or holds no valid list.
    """
    path = Path(path)
    source = f"the class names file {path}"
    try:
        if path.stat().st_size > MAX_BYTES:
            raise InputError(
                f"{source} is too large for a names file. Received: {path.stat().st_size} "
                f"bytes. Expected at most {MAX_BYTES} (one name per line, or a JSON list)."
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(
            f"Cannot read {source}: {e}. Expected a UTF-8 text file: one class name per "
            "line, or a JSON list of strings."
        ) from None
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(
                f"{source} starts like a JSON list but is not valid JSON: {e}. Expected a "
                'JSON list of strings (["cat", "dog"]) or one name per line.'
            ) from None
    else:
        names = text.splitlines()
        while names and not names[-1].strip():
            names.pop()
    return check_class_names(names, source, num_classes)


def label(index: int, names: list[str] | None) -> str:
    """``neutral (6)`` where ``names`` knows class ``index``, else ``6``."""
    if names is not None and 0 <= index < len(names):
        return f"{names[index]} ({index})"
    return str(index)


__all__ = ["check_class_names", "label", "read_class_names"]
