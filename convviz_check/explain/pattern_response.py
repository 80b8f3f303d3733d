"""The Keras side of the pattern-response judgment: patterns, activations, the judge.

:func:`pattern_response` takes two models; :func:`pattern_response_from_golden` takes
what a golden check stores instead of the golden model (:func:`golden_record`: the
golden patterns, the golden activations on the check's images and the golden ratios).
The statistics and the judgment are NumPy-only, in
:mod:`convviz_check.pattern_response`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..pattern_response import (
    DEFAULT_MIN_RATIO,
    DEFAULT_MIN_SHARE,
    judge_pattern_response,
    match_channels,
    response_ratio,
)
from ..types import Outcome
from .activations import activations
from .filters import filter_patterns

__all__ = ["golden_record", "pattern_response", "pattern_response_from_golden"]


def _layer_acts(model: Any, images: Any, layer: str) -> np.ndarray:
    return activations(model, images, layer)[layer]


def _channels(patterns: np.ndarray, filters: Any, channels: int) -> list[int]:
    if filters is None:
        picked = list(range(channels))
    elif isinstance(filters, int | np.integer):
        picked = [int(filters)]
    else:
        picked = [int(f) for f in filters]
    if len(picked) != len(patterns):
        raise InputError(
            f"One golden pattern per judged filter is needed. Received: {len(patterns)} "
            f"patterns for filters {picked}."
        )
    return picked


def golden_record(
    golden_model: Any,
    layer: str,
    images: Any,
    filters: int | Sequence[int] | None = None,
    **filter_kwargs: Any,
) -> dict[str, Any]:
    """What a golden check keeps to judge pattern response later without the model.

    Args:
        golden_model: the golden Keras model.
        layer: the layer judged (a spatial map, as ``cc.filter_patterns`` takes).
        images: ``(N, H, W, C)`` the check's images, in the model's value range.
        filters: the channels judged (``None``: all of the layer's).
        **filter_kwargs: passed to ``cc.filter_patterns`` (``steps``, ``seed``...).

    Returns:
        ``{"patterns": (F, H, W, C), "activations": (N, h, w, C), "response": (F,),
        "filters": [F indices], "layer": layer}``.
    """
    patterns = filter_patterns(golden_model, layer, filters, **filter_kwargs)
    acts = _layer_acts(golden_model, images, layer)
    chans = _channels(patterns, filters, acts.shape[-1])
    response = response_ratio(_layer_acts(golden_model, patterns, layer), acts, chans)
    return {
        "patterns": patterns,
        "activations": acts,
        "response": response,
        "filters": chans,
        "layer": layer,
    }


def pattern_response_from_golden(
    golden: Mapping[str, Any],
    new_model: Any,
    images: Any,
    *,
    min_ratio: float = DEFAULT_MIN_RATIO,
    min_share: float = DEFAULT_MIN_SHARE,
) -> Outcome:
    """Judge the new model against a stored :func:`golden_record`.

    Args:
        golden: the record (``patterns``, ``activations``, ``response``, ``filters``,
            ``layer``) of the golden model, on the same ``images``.
        new_model: the model judged.
        images: the check's images, the ones the golden activations were taken on.
        min_ratio, min_share: see
            :func:`convviz_check.pattern_response.judge_pattern_response`.

    Returns:
        The :class:`~convviz_check.types.Outcome` of ``judge_pattern_response``.

    Raises:
        InputError: a record without one of its keys, or arrays that disagree.
    """
    missing = [
        k for k in ("patterns", "activations", "response", "filters", "layer") if k not in golden
    ]
    if missing:
        raise InputError(
            f"The golden record lacks {missing}. Received keys: {sorted(golden)}. Expected "
            "what golden_record returns."
        )
    layer = str(golden["layer"])
    chans = [int(c) for c in golden["filters"]]
    new_acts = _layer_acts(new_model, images, layer)
    assignment, corr = match_channels(golden["activations"], new_acts)
    matches = assignment[chans]
    new_on_patterns = _layer_acts(new_model, np.asarray(golden["patterns"]), layer)
    new_response = response_ratio(new_on_patterns, new_acts, matches)
    return judge_pattern_response(
        golden["response"],
        new_response,
        corr[chans],
        channels=chans,
        matches=matches.tolist(),
        layer=layer,
        min_ratio=min_ratio,
        min_share=min_share,
    )


def pattern_response(
    golden_model: Any,
    new_model: Any,
    layer: str,
    images: Any,
    filters: int | Sequence[int] | None = None,
    *,
    min_ratio: float = DEFAULT_MIN_RATIO,
    min_share: float = DEFAULT_MIN_SHARE,
    **filter_kwargs: Any,
) -> Outcome:
    """Do the golden model's filter patterns still excite the new model's matching channels?

    The judgment that makes filter patterns a regression signal across retrains: the
    channels of ``layer`` are matched by activation correlation on ``images``, each
    golden pattern is fed to the new model, and its matched channel must respond well
    above its ordinary level (see :mod:`convviz_check.pattern_response`).

    Args:
        golden_model: the golden (reference) Keras model.
        new_model: the model judged (a retrain, a fine-tune...), same layer name.
        layer: the layer judged (a spatial map).
        images: ``(N, H, W, C)`` ordinary images, in the models' value range: the
            matching and the baseline level are measured on them.
        filters: the golden channels judged (``None``: all).
        min_ratio, min_share: bounds of ``judge_pattern_response`` (defaults measured,
            see docs/reference.md).
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
        golden, new_model, images, min_ratio=min_ratio, min_share=min_share
    )
