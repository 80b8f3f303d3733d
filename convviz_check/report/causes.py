"""The cause of a golden check's failure, first: what the check computed differently
from its golden (target layer, score kind, target, CAM method) and the classes that
changed come before the fingerprint verdicts ("same model and inputs: the code or a
library changed") and the metrics, so a person reads why before how much.

Plain text in, plain text out (no framework, no pytest).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..artifacts import Artifact

# What a check computed differently from its golden: the cause, so it leads the message.
_SETUP = (("layer", "target layer"), ("score_kind", "score kind"), ("target", "target"))
_CAUSES = (
    "target layer changed",
    "score kind changed",
    "target changed",
    "cannot be compared with its golden: method changed",
    "top class changed",
    "the explained class changed",
)
_SAME_CODE = "same model and inputs: the code or a library changed"
# The retrain profile's two verdicts (convviz_check.evidence.VERDICTS), as lines start.
_VERDICTS = ("predicts differently:", "looks elsewhere:", "lost a detector:")


def cause_first(
    expected: Artifact,
    obtained: Artifact,
    lines: list[str],
    names: Any = None,
    verdict_first: bool = False,
) -> list[str]:
    """``lines`` with the cause first: a changed target layer, score kind or target
    (from the two artifacts' attrs), a changed CAM method and changed classes, before
    the fingerprint verdicts and the metrics. When the check itself computes something
    else, "the code or a library changed" is not the verdict; classes are named by
    ``names`` (a list of class names) where given.

    ``verdict_first`` (the retrain profile): the retrain verdicts ("predicts
    differently: ...", "looks elsewhere: ...") lead, before everything else: a retrain
    changes the weights by definition, so "model fingerprint changed" is no news there."""
    setup = []
    for key, label in _SETUP:
        old, new = expected.attrs.get(key), obtained.attrs.get(key)
        if old and new and old != new:
            setup.append(f"{label} changed: {old!r} -> {new!r}")
    lines = [class_named(line, names) for line in lines]
    lines = [line for line in lines if not (setup and line.startswith("target layer changed"))]
    if setup:
        lines = [
            "same model and inputs: the change above explains the difference"
            if line.startswith(_SAME_CODE)
            else line
            for line in lines
        ]
    causes = [line for line in lines if line.startswith(_CAUSES)]
    ordered = setup + causes + [line for line in lines if line not in causes]
    if not verdict_first:
        return ordered
    verdicts = [line for line in ordered if line.startswith(_VERDICTS)]
    return verdicts + [line for line in ordered if line not in verdicts]


def class_named(line: str, names: Any) -> str:
    """``top class changed: 6 -> 3`` as ``top class changed: neutral (6) -> happy (3)``."""
    found = re.match(r"top class changed: (-?\d+) -> (-?\d+)(.*)$", line)
    if not found or not isinstance(names, list | tuple):
        return line

    def named(k: int) -> str:
        return f"{names[k]} ({k})" if 0 <= k < len(names) else str(k)

    before, after = int(found.group(1)), int(found.group(2))
    return f"top class changed: {named(before)} -> {named(after)}{found.group(3)}"


__all__ = ["cause_first", "class_named"]


_CHANGED = {
    "model_fingerprint": "the model's weights are not those the golden was written with",
    "input_fingerprint": "the images are not those the golden was written with",
}


def what_changed(sidecar: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """Plain lines naming what differs between the golden's run and this one: the
    model, the inputs, or (both known and equal) the code or a library."""
    lines = []
    known_same = []
    for key, why in _CHANGED.items():
        old, new = sidecar.get(key), meta.get(key)
        if old and new and old != new:
            name = key.replace("_", " ")
            lines.append(f"{name} changed: golden {str(old)[:12]}, now {str(new)[:12]} ({why})")
        elif old and new:
            known_same.append(key)
    if not lines and len(known_same) == len(_CHANGED):
        lines.append(
            "same model and inputs: the code or a library changed (golden written with "
            f"{_versions(sidecar.get('versions'))}; now {_versions(meta.get('versions'))})"
        )
    return lines


def boxes_text(boxes: np.ndarray) -> str:
    rows = [tuple(int(v) for v in row) for row in boxes.tolist()]
    shown = ", ".join(str(r) for r in rows[:3]) + (", ..." if len(rows) > 3 else "")
    return f"{len(rows)} box(es) {shown}"


def _versions(versions: Any) -> str:
    if not isinstance(versions, dict) or not versions:
        return "unknown versions"
    return ", ".join(f"{k} {v}" for k, v in sorted(versions.items()) if k != "backend")
