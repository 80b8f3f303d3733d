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

# Measurements (benchmarks/calibrate_tolerances.py, this 2-core CPU machine, keras 3.15,
# tensorflow-cpu 2.21, torch 2.13 CPU, jax 0.10): 8 scenes (64x64, seed 0); two tiny
# seeded stand-ins, a Conv2D/MaxPooling2D convnet and a keras-hub Xception (separable
# convs, residual adds), loaded from .keras files by every backend (the bundled models
# did not exist yet: re-run the script on them and update). "same" = the worst over
# threads 1 vs 2 and batch 8 vs 1 on each backend; "cross" = the worst of tensorflow vs
# torch and tensorflow vs jax.
#
# kind -> Tolerance field -> (same_backend, cross_backend)
TABLE: dict[str, dict[str, tuple[float, float]]] = {
    "activation": {
        # measured max |e-o| / scale: same 7.9e-7 (torch, xception, batch 8 vs 1),
        # cross 8.5e-7 (tf vs torch, xception); SPEC 6: ~1e-7 typical. Margins 13x / 120x.
        "activation_max_rel": (1e-5, 1e-4),
        # measured mean |e-o| / scale: same 1.05e-7, cross 1.1e-7. Margins 19x / 90x.
        "activation_mean_rel": (2e-6, 1e-5),
        # measured smallest per-layer scale max|e| over all layers: 2.43 (largest
        # 11.3), absolute errors <= 9.5e-6. The floor is 2400x below any live layer so it
        # never changes their scale; it only keeps a dead (all-zero) layer from dividing
        # by zero and from turning 1e-9 noise into a large relative error.
        "activation_scale_floor": (1e-3, 1e-3),
        # report-only ("share of values out of tolerance"): the measured relative noise
        # (7.9e-7 / 8.5e-7) x ~10, so the share is ~0 unless something really moved.
        "pixel_atol": (1e-5, 1e-4),
    },
    "heatmap": {
        # measured max abs: same 9.5e-7, cross 9.5e-7 (tf vs torch/jax, xception).
        # Margins 100x / 10000x (cross stays lenient until the agreement helper
        # measures the bundled trained models; a wrong layout or class moves it > 0.3).
        "heatmap_max_abs": (1e-4, 1e-2),
        # measured RMS: same 3.2e-7, cross 3.7e-7. Margins 60x / 5000x.
        "heatmap_rms": (2e-5, 2e-3),
        # measured Pearson r: > 0.9999999 in every pair (same and cross).
        "heatmap_pearson_min": (0.9999, 0.999),
        # measured SSIM: > 0.9999999 in every pair (same and cross).
        "heatmap_ssim_min": (0.999, 0.99),
        # measured peak shift: 0 cells in every pair. Shifts are 0 or >= 1 cell, so the
        # same-backend bound is 0 (near-ties are absorbed by compare.RANK_RESOLUTION);
        # cross-backend allows one cell to a 4-neighbour for flat-topped maxima.
        "heatmap_peak_shift_cells": (0.0, 1.0),
        # measured top-10% IoU: 1.0 in every pair. One swapped boundary cell of a 7x7
        # map (k = 5) gives 4/6 = 0.67, of 8x8 (k = 7) 6/8 = 0.75, so 0.6 tolerates
        # one tie flip while a moved hot region (IoU ~0) fails; cross allows a little more.
        "heatmap_topk_iou_min": (0.6, 0.5),
        # report-only: heatmaps are in [0, 1]; the max-abs bounds above (measured
        # 9.5e-7 in every pair).
        "pixel_atol": (1e-4, 1e-2),
    },
    "pattern": {
        # Compared deprocessed (uint8). Gradient ascent amplifies float noise: measured
        # SSIM same 0.99924 (torch, xception, batch 8 vs 1; other backends and the
        # convnet: 1.0), cross 0.96078 (tf vs torch, xception; convnet 0.99998).
        # Bounds keep ~13x / ~6x the measured gap to 1.
        "pattern_ssim_min": (0.99, 0.75),
        # measured Pearson r: same 0.99940, cross 0.96650 (same pairs as SSIM; raw
        # float patterns: 0.99949 / 0.97276; SPEC 4: r ~0.999 on other models).
        # Bounds keep ~17x / ~6x the measured gap to 1; an unrelated pattern gives r ~0.
        "pattern_pearson_min": (0.99, 0.8),
        # report-only, a fraction of the range (255): measured cross-backend patterns
        # differ pixel-wise by up to ~40% of the range (SPEC 4), so this share is a
        # fact for the reader, never the verdict.
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
