"""The golden comparison as a judgment: two values in, one
:class:`~convviz_check.types.Outcome` out, with no file, no pytest and no framework.

A golden check in the pytest plugin is this judgment plus its lifecycle (find the
golden, write it in an update run, record the result): the comparison itself is
:func:`convviz_check.metrics.compare` on the values as they are stored
(:func:`convviz_check.artifacts.comparable`), and the Outcome carries what the report
shows for every judgment. Use it to judge a result against a reference you hold in
memory (a notebook, a script, another test framework).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..artifacts import Artifact, comparable
from ..metrics import compare
from ..tolerances import DEFAULT_PROFILE
from ..types import Box, Outcome, Tolerance


def judge_golden(
    expected: Any,
    obtained: Any,
    kind: str | None = None,
    tolerance: Tolerance | Mapping[str, float] | None = None,
    *,
    profile: str = DEFAULT_PROFILE,
    boxes: Any = None,
    regions: Mapping[str, Box] | None = None,
    cross_backend: bool = False,
) -> Outcome:
    """Judge ``obtained`` against the reference ``expected`` as a golden check does.

    Args:
        expected: the reference value: an array, a dict of arrays (activations per
            layer), a ``GradCAM`` or an :class:`~convviz_check.artifacts.Artifact`
            (e.g. a golden read with :func:`convviz_check.golden.read`).
        obtained: the value just computed, of the same kind.
        kind: ``"activation"``, ``"heatmap"`` or ``"pattern"``; inferred as
            ``convviz.check`` infers it (required for a bare 4-D pattern array).
        tolerance: a :class:`~convviz_check.types.Tolerance` (or a dict of its fields)
            overriding the profile's bounds.
        profile: ``"exact"`` (bounds at numerical noise) or ``"retrain"``.
        boxes: heatmaps: the object box of each image (``retrain``'s box metrics).
        regions: heatmaps: suspect regions by name (``retrain``'s region metrics).
        cross_backend: the two values come from different backends (the exact
            profile's cross-backend column).

    Returns:
        An Outcome with judgment ``"golden"``: status ``"passed"`` or ``"failed"``, the
        comparison's plainest line as its lead, its text as the message, the metrics
        against their bounds and the per-item facts.

    Raises:
        InputError: a value whose kind cannot be inferred (a bare 4-D array) or does
            not fit ``kind``.
        ComparisonError: values that cannot be compared (structure, shapes).

    Example:
        >>> import numpy as np
        >>> a = np.zeros((1, 7, 7), np.float32); a[0, 1, 1] = 1.0
        >>> b = np.zeros((1, 7, 7), np.float32); b[0, 5, 5] = 1.0
        >>> outcome = judge_golden(a, b)
        >>> outcome.status, outcome.lead
        ('failed', 'peak moved 5.66 cells: (row 1, col 1) -> (row 5, col 5)')
    """
    exp = expected if isinstance(expected, Artifact) else Artifact.from_value(expected, kind)
    obt = obtained if isinstance(obtained, Artifact) else Artifact.from_value(obtained, kind)
    if boxes is None and exp.boxes is not None:  # a golden keeps the boxes it was judged on
        boxes = exp.boxes
    extra: dict[str, Any] = {} if regions is None else {"regions": regions}
    comparison = compare(
        comparable(exp),
        comparable(obt),
        obt.kind,
        tolerance,
        cross_backend=cross_backend,
        profile=profile,
        boxes=boxes,
        **extra,
    )
    lines = comparison.text.splitlines()
    per_item = comparison.details.get("per_item") or {}
    items = {str(k): dict(v) for k, v in per_item.items()} if isinstance(per_item, dict) else {}
    return Outcome(
        "golden",
        "passed" if comparison.passed else "failed",
        lines[0] if lines else ("matches" if comparison.passed else "differs"),
        comparison.text,
        dict(comparison.metrics),
        items,
        {},
        {"kind": obt.kind, "profile": profile},
    )


__all__ = ["judge_golden"]
