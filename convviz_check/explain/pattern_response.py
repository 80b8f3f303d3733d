"""The Keras side of the pattern-response judgment: patterns, activations, the record.

:func:`pattern_response` takes two models; :func:`pattern_response_from_golden` takes
what a golden keeps instead of the golden model (:func:`golden_record`);
:func:`attach_record` is what ``convviz.check(name, patterns, images=...)`` calls so
that a filter-pattern golden carries its response record and the ``retrain`` profile
can judge it. The statistics and the judgment are NumPy-only, in
:mod:`convviz_check.pattern_response`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..artifacts import Artifact
from ..errors import InputError
from ..pattern_response import (
    DEFAULT_MAX_GAP,
    DEFAULT_MIN_KEPT,
    DEFAULT_MIN_RATIO,
    judge_records,
    response_record,
)
from ..types import Outcome
from .activations import activations
from .filters import filter_patterns, pattern_call, pattern_note

__all__ = [
    "attach_record",
    "golden_record",
    "pattern_response",
    "pattern_response_from_golden",
    "with_record",
]

Probe = Callable[[np.ndarray], np.ndarray]


def _probe(model: Any, layer: str) -> Probe:
    """``probe(images) -> (N, h, w, C)``: the model's layer, channels-last."""

    def probe(images: np.ndarray) -> np.ndarray:
        return np.asarray(activations(model, images, layer)[layer])

    return probe


def _channels(patterns: np.ndarray, filters: Any, channels: int) -> list[int]:
    if filters is None:
        picked = list(range(channels))
    elif isinstance(filters, int | np.integer):
        picked = [int(filters)]
    else:
        picked = [int(f) for f in filters]
    if len(picked) != len(patterns):
        raise InputError(
            f"One pattern per judged filter is needed. Received: {len(patterns)} "
            f"patterns for filters {picked}."
        )
    return picked


def _images_sha(images: Any) -> str:
    arr = np.ascontiguousarray(np.asarray(images))
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def attach_record(
    artifact: Artifact, model: Any, layer: str, filters: Any, images: Any
) -> tuple[Artifact, Probe]:
    """A filter-pattern artifact with its response record, and the probe that feeds
    other patterns to ``model`` (what the ``retrain`` profile needs of the new model).

    Args:
        artifact: the pattern check's artifact (its ``value``: the patterns as
            ``cc.filter_patterns`` returned them, in the model's input range).
        model: the model the patterns are of.
        layer: their layer.
        filters: the filters they are of (as given to ``cc.filter_patterns``).
        images: ``(N, H, W, C)`` the check's images, in the model's value range.

    Returns:
        ``(artifact with the record's entries and attributes, probe)``.

    Raises:
        InputError: not a float pattern array, or patterns and filters that disagree.
    """
    patterns = artifact.arrays.get("value")
    if artifact.kind != "pattern" or patterns is None or patterns.ndim != 4:
        raise InputError(
            "images= goes with filter patterns as cc.filter_patterns returns them "
            f"((F, H, W, C)). Received: kind={artifact.kind!r}, layout={artifact.layout!r}."
        )
    if not np.issubdtype(patterns.dtype, np.floating):
        raise InputError(
            "images= needs the patterns in the model's input range (float, as "
            "cc.filter_patterns returns them), not deprocessed images. Received: "
            f"dtype {patterns.dtype}."
        )
    probe = _probe(model, layer)
    acts = probe(np.asarray(images))
    chans = _channels(patterns, filters, acts.shape[-1])
    record = response_record(acts, probe(patterns), chans)
    attrs = {
        **artifact.attrs,
        "response_layer": layer,
        "response_images": _images_sha(images),
        "response_map": [int(acts.shape[1]), int(acts.shape[2])],
    }
    return Artifact(artifact.kind, artifact.layout, {**artifact.arrays, **record}, attrs), probe


def with_record(request: Any, value: Any, model: Any, images: Any) -> Any:
    """``convviz.check(..., images=...)``: the check's request with its patterns'
    response record and the probe of their model (without images: ``request`` as it
    is, but for the note below).

    Args:
        request: the :class:`~convviz_check.checks.CheckRequest` of a check.
        value: the checked value: an array ``cc.filter_patterns`` returned (it names
            the model, layer and filters of the patterns).
        model: the check's ``model=`` (None: the model the patterns were computed from).
        images: the check's images, or None.

    The request also takes the patterns' :func:`pattern_note` (dead starts the ascent
    restarted) as its ``note``, which a failure message prints: a restarted pattern
    started from other noise than the others, which may explain why it moved.

    Raises:
        InputError: images given with a value that no ``filter_patterns`` call returned
            (or no longer alive), or with anything but float patterns.
    """
    note = pattern_note(value) if request.obtained.kind == "pattern" else ""
    if note and not request.note:
        request = replace(request, note=f"the filter-pattern ascent had dead starts: {note}")
    if images is None:
        return request
    call = pattern_call(value)
    if call is None:
        raise InputError(
            "images= goes with filter patterns as convviz.filter_patterns (or "
            "cc.filter_patterns) returned them: that call names their model, layer and "
            f"filters. Received: {type(value).__name__} no filter_patterns call returned."
        )
    source, layer, filters = call
    artifact, probe = attach_record(
        request.obtained, model if model is not None else source, layer, filters, images
    )
    return replace(request, obtained=artifact, probe=probe)


def golden_record(
    golden_model: Any,
    layer: str,
    images: Any,
    filters: int | Sequence[int] | None = None,
    **filter_kwargs: Any,
) -> dict[str, Any]:
    """What a golden keeps to judge pattern response later without the model.

    Args:
        golden_model: the golden Keras model.
        layer: the layer judged (a spatial map, as ``cc.filter_patterns`` takes).
        images: ``(N, H, W, C)`` the check's images, in the model's value range.
        filters: the channels judged (``None``: all of the layer's).
        **filter_kwargs: passed to ``cc.filter_patterns`` (``steps``, ``seed``...).

    Returns:
        The record of :func:`convviz_check.pattern_response.response_record` plus
        ``"patterns"`` (F, H, W, C) and ``"layer"``.
    """
    patterns = filter_patterns(golden_model, layer, filters, **filter_kwargs)
    probe = _probe(golden_model, layer)
    acts = probe(np.asarray(images))
    chans = _channels(patterns, filters, acts.shape[-1])
    return {
        **response_record(acts, probe(patterns), chans),
        "patterns": patterns,
        "layer": layer,
    }


def pattern_response_from_golden(
    golden: Mapping[str, Any],
    new_model: Any,
    images: Any,
    *,
    min_ratio: float = DEFAULT_MIN_RATIO,
    min_kept: float = DEFAULT_MIN_KEPT,
    max_gap: float = DEFAULT_MAX_GAP,
) -> Outcome:
    """Judge the new model against a stored :func:`golden_record`.

    Args:
        golden: the golden model's record (with ``patterns`` and ``layer``), on the
            same ``images``.
        new_model: the model judged.
        images: the check's images, the ones the golden record was taken on.
        min_ratio, min_kept, max_gap: see
            :func:`convviz_check.pattern_response.judge_pattern_response`.

    Returns:
        The :class:`~convviz_check.types.Outcome` of ``judge_pattern_response``.

    Raises:
        InputError: a record without one of its keys, or arrays that disagree.
    """
    missing = [k for k in ("patterns", "layer") if k not in golden]
    if missing:
        raise InputError(
            f"The golden record lacks {missing}. Received keys: {sorted(golden)}. Expected "
            "what golden_record returns."
        )
    layer = str(golden["layer"])
    probe = _probe(new_model, layer)
    acts = probe(np.asarray(images))
    patterns = np.asarray(golden["patterns"])
    new_on_golden = probe(patterns)
    # The new record's own-pattern entries are not used: the golden patterns are judged.
    new = response_record(acts, new_on_golden, [0] * len(patterns))
    return judge_records(
        golden,
        new,
        new_on_golden,
        layer=layer,
        min_ratio=min_ratio,
        min_kept=min_kept,
        max_gap=max_gap,
    )


def pattern_response(
    golden_model: Any,
    new_model: Any,
    layer: str,
    images: Any,
    filters: int | Sequence[int] | None = None,
    *,
    min_ratio: float = DEFAULT_MIN_RATIO,
    min_kept: float = DEFAULT_MIN_KEPT,
    max_gap: float = DEFAULT_MAX_GAP,
    **filter_kwargs: Any,
) -> Outcome:
    """Do the golden model's filter patterns still excite the new model's matching channels?

    The judgment that makes filter patterns a regression signal across retrains: the
    channels of ``layer`` are matched by activation correlation on ``images``, each
    golden pattern is fed to the new model, and a channel is lost when its pattern
    drives its match less than it drove the golden channel while its match correlates
    far below the rest of the layer (see :mod:`convviz_check.pattern_response`).

    Args:
        golden_model: the golden (reference) Keras model.
        new_model: the model judged (a retrain, a fine-tune...), same layer name.
        layer: the layer judged (a spatial map).
        images: ``(N, H, W, C)`` ordinary images, in the models' value range: the
            matching and the baseline level are measured on them.
        filters: the golden channels judged (``None``: all).
        min_ratio, min_kept, max_gap: bounds of ``judge_pattern_response`` (defaults
            measured, see docs/feature-visualization.md).
        **filter_kwargs: passed to ``cc.filter_patterns`` (``steps``, ``seed``...).

    Returns:
        An :class:`~convviz_check.types.Outcome` with judgment ``"pattern_response"``.

    Raises:
        GraphError, InputError: as ``cc.filter_patterns`` / ``cc.activations``.

    Example:
        >>> out = pattern_response(golden, retrained, "conv2_relu", images, steps=30)
        >>> out.ok, out.lead
    """
    golden = golden_record(golden_model, layer, images, filters, **filter_kwargs)
    return pattern_response_from_golden(
        golden, new_model, images, min_ratio=min_ratio, min_kept=min_kept, max_gap=max_gap
    )
