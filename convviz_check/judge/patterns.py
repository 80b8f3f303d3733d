"""The retrain profile's judgment of a filter-pattern golden check.

Two trainings' channels do not correspond, so under ``retrain`` a filter-pattern golden
is not compared image to image: the new model's response to the golden's patterns is
judged instead (:mod:`convviz_check.pattern_response`), when the golden keeps a
response record and the check was given the images it was taken on
(``convviz.check(name, patterns, images=...)``). :func:`judge_retrain` is the step of
:func:`convviz_check.checks.run_check` that decides it: a Comparison (kind
``"pattern"``, metric ``pattern_gap``) or why the check is not judged.

NumPy only: no Keras, no framework, no pytest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from ..pattern_response import DEFAULT_MAX_GAP, RECORD_ENTRIES, RECORD_SAMPLES, judge_records
from ..types import Comparison, MetricResult, Tolerance

__all__ = ["NO_PROBE", "NO_RECORD", "RetrainRun", "judge_retrain"]

# What the retrain profile says of a pattern golden it cannot judge, and what to do.
NO_RECORD = (
    "filter patterns are not judged under the retrain profile without a response record: "
    "the golden has none (it was written without the check's images). Re-accept it from a "
    "check given them, convviz.check(name, patterns, images=images) with "
    "--convviz-update=all, to judge its patterns across retrains"
)
NO_PROBE = (
    "filter patterns are not judged under the retrain profile without the check's images: "
    "pass the images its golden's response record was taken on, "
    "convviz.check(name, patterns, images=images)"
)


class RetrainRun(Protocol):
    """What :func:`judge_retrain` reads of one golden check's run."""

    @property
    def request(self) -> Any:
        """The :class:`~convviz_check.checks.CheckRequest` (its ``obtained`` artifact
        and ``probe``)."""
        ...

    @property
    def unjudged(self) -> str:
        """Why the profile does not judge the check's kind (``""`` when it does)."""
        ...

    @property
    def tolerance(self) -> Tolerance:
        """The resolved bounds: the defaults, a calibrated profile's, the test's own."""
        ...


def judge_retrain(expected: Any, run: RetrainRun) -> tuple[Comparison | None, str]:
    """The retrain profile's judgment of a filter-pattern golden check.

    Called by :func:`convviz_check.checks.run_check` for every check: anything but a
    pattern check its profile does not judge (``run.unjudged`` empty, or another
    kind) comes back as it was. A pattern check is judged when its golden holds a
    response record and the request can feed the new model (``request.probe``, set
    by the pytest fixture from ``images=``). The bound is
    ``run.tolerance.pattern_response_gap_max`` (a test's own, else a calibrated
    profile's, else :data:`~convviz_check.pattern_response.DEFAULT_MAX_GAP`).

    Args:
        expected: the loaded golden (``.artifact``), or None when missing.
        run: the check's run (:class:`RetrainRun`).

    Returns:
        ``(comparison, "")`` when judged (kind ``"pattern"``, metric ``pattern_gap``;
        a layer with fewer channels than its golden had fails on ``lost_channels``),
        else ``(None, reason)`` with why not.
    """
    request, reason = run.request, run.unjudged
    obtained = request.obtained
    if not reason or expected is None or obtained.kind != "pattern":
        return None, reason
    golden = expected.artifact
    if any(k not in golden.arrays for k in RECORD_ENTRIES):
        return None, NO_RECORD
    if getattr(request, "probe", None) is None or RECORD_SAMPLES not in obtained.arrays:
        return None, NO_PROBE
    mismatch = _record_mismatch(golden.attrs, obtained.attrs)
    if mismatch:
        return None, mismatch
    layer = str(golden.attrs.get("response_layer", ""))
    bound = run.tolerance.pattern_response_gap_max
    bound = DEFAULT_MAX_GAP if bound is None else bound
    had = int(golden.arrays[RECORD_SAMPLES].shape[-1])
    now = int(obtained.arrays[RECORD_SAMPLES].shape[-1])
    if now < had:  # matching is one to one: some golden channels cannot have a match
        return narrowed(layer, had, now), ""
    outcome = judge_records(
        golden.arrays,
        obtained.arrays,
        request.probe(np.asarray(golden.arrays["value"])),
        layer=layer,
        max_gap=bound,
    )
    if not outcome.facts["judged"]:
        return None, outcome.lead
    worst = min(outcome.items, key=lambda k: (outcome.items[k]["ok"], -outcome.items[k]["gap"]))
    details = {"per_item": outcome.items, "worst_item": worst, "pattern_response": outcome.facts}
    text = outcome.message or outcome.lead
    return Comparison("pattern", dict(outcome.metrics), outcome.ok, text=text, details=details), ""


def narrowed(layer: str, had: int, now: int) -> Comparison:
    """The failed judgment of a layer that lost channels since its golden.

    Channels are matched one to one, so ``had - now`` golden channels have no channel
    left to match: a judged failure (metric ``lost_channels`` against a bound of 0),
    not an error, so that the report records it like any other failed check.

    Example:
        >>> narrowed("conv", 4, 3).text.splitlines()[0]
        "lost channels: layer 'conv' had 4 channels in the golden, now 3"
    """
    text = (
        f"lost channels: layer {layer!r} had {had} channels in the golden, now {now}\n"
        f"{had - now} of the golden's {had} channels cannot be matched one to one: the layer "
        "was narrowed (if on purpose, re-accept the golden with --convviz-update=failed)"
    )
    metric = MetricResult.judge("lost_channels", had - now, 0, "max")
    facts = {"layer": layer, "golden_channels": had, "channels": now}
    details = {"pattern_response": facts}
    return Comparison("pattern", {"lost_channels": metric}, False, text=text, details=details)


def _record_mismatch(golden: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """Why two records cannot be matched (another layer, images or map), or ``""``."""
    for attr, what in (
        ("response_layer", "layer"),
        ("response_images", "images"),
        ("response_map", "activation map"),
    ):
        if golden.get(attr) != new.get(attr):
            return (
                f"the response record was taken on another {what} than this check's "
                f"(golden {golden.get(attr)!r}, now {new.get(attr)!r}): rewrite the golden "
                "with this check's images and layer to judge its patterns"
            )
    return ""
