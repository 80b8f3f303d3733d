"""The one table of default comparison bounds, each with its measurement.

Two columns per kind:

- ``same_backend``: the golden was written by the backend that runs now. Repeats on
  one machine are bit-identical, so the bounds are calibrated by varying what a CI
  machine may legitimately vary: the thread count (1 vs 2) and the batch size (1 vs 8).
- ``cross_backend``: the artifacts come from different backends (a golden written by
  the reference backend checked under another, or ``cc.agreement``).

Every bound sits at a stated safety margin over the worst value measured by
``benchmarks/calibrate_tolerances.py`` on the bundled example models (run it to
re-measure; it prints the worst observed value of every metric per backend and per
backend pair, and what a 1% weight change gives) and below what that real change gives
where the metric can see it. :data:`MEASURED` holds those worst values as numbers. Errors (``*_max``, ``*_rms``, ``*_abs``, ``*_cells``,
``*_rel``) are upper bounds, similarities (``*_min``) lower bounds.

A second profile, ``retrain`` (:data:`RETRAIN`, one column), judges heatmaps on what
survives an independent retraining, calibrated on retrains of the bundled convnet by
``benchmarks/calibrate_retrain.py`` (:data:`RETRAIN_MEASURED`); ``exact`` (the table
above) is the default. :func:`check_profile` names the valid profiles.

``pixel_atol`` feeds only the "share of values out of tolerance" fact in reports, never
the verdict; it is a fraction of the item's scale (activations: the layer scale;
heatmaps: their [0, 1] range; patterns: 255 for uint8 images, else the pair's range).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ComparisonError, ConvvizError
from .types import PROFILE_METRICS, PROFILES, Tolerance

DEFAULT_PROFILE = "exact"

# Measurements: `python benchmarks/calibrate_tolerances.py --backends tensorflow,torch,jax`
# on 2026-11-25, this 2-core CPU machine, keras 3.15, tensorflow-cpu 2.21, torch 2.13 CPU,
# jax 0.10. Models: the bundled examples (`convviz_check.examples.model_path("convnet")`,
# `model_path("xception")`), loaded from their .keras files by every backend. Inputs:
# `make_scenes(8, seed=0)` (64x64). Artifacts as the plugin and cc.agreement compute them:
# activations of every default layer (convnet: 7 layers, xception: 11), Grad-CAM with the
# automatic layer and score (conv4_relu / block4_sepconv1_act, 8x8 maps, none degenerate,
# no class changed anywhere), filter patterns of worker.default_filters_layer (conv3 /
# block3_sepconv2; 4 filters, then 16 with --what filters --filters 16) compared
# deprocessed (uint8 48x48). "same" = the worst of threads 1 vs 2 and batch 8 vs 1 on
# each backend; "cross" = the worst of tf vs torch, tf vs jax, torch vs jax (1 thread,
# batch 8). "1% weights" = the real change the bounds must still catch: every float
# weight times 1 + 0.01 N(0, 1) (seeded), tensorflow, against the unchanged model.
#
# Margins: same-backend errors >= 12x the worst measured (one backend's kernels; only the
# reduction order varies, but a CI machine's CPU may differ from this one); cross-backend
# errors >= 150x (other kernels, and users' models are deeper than these two, so float
# noise grows). Similarities keep their gap to 1 >= 2x the measured gap (patterns) or are
# set where noise is invisible yet the 1% change fails (heatmaps).
#
# kind -> Tolerance field -> (same_backend, cross_backend)
TABLE: dict[str, dict[str, tuple[float, float]]] = {
    "activation": {
        # measured max |e-o| / scale: same 8.4e-7 (torch, convnet, batch 8 vs 1; tf and
        # jax 1.2e-7, xception batch 8 vs 1), cross 6.7e-7 (tf vs torch and tf vs jax,
        # convnet; torch vs jax 4.5e-7). Margins 12x / 150x. 1% weights: 3.8e-2 (xception),
        # 3800x / 380x above the bounds.
        "activation_max_rel": (1e-5, 1e-4),
        # measured mean |e-o| / scale: same 1.9e-8 (torch, convnet, batch 8 vs 1; tf and
        # jax 7e-10), cross 2.2e-8 (tf vs torch, convnet). Margins 52x / 227x. 1% weights:
        # 3.9e-3 (convnet).
        "activation_mean_rel": (1e-6, 5e-6),
        # measured smallest per-layer scale max|e|: 1.49 (xception block1_conv1; convnet
        # conv1 1.55; largest 42.9). The floor is 1500x below any live layer so it never
        # changes their scale; it only keeps a dead (all-zero) layer from dividing by zero
        # and from turning 1e-9 noise into a large relative error.
        "activation_scale_floor": (1e-3, 1e-3),
        # report-only ("share of values out of tolerance"): the max_rel bounds, so the
        # share is 0 whenever max_rel passes (measured noise 8.4e-7 / 6.7e-7).
        "pixel_atol": (1e-5, 1e-4),
    },
    "heatmap": {
        # measured max abs: same 3.9e-7 (torch, convnet, batch 8 vs 1; tf and jax 6.0e-8,
        # xception batch 8 vs 1), cross 3.3e-7 (tf vs torch, convnet; tf vs jax and torch
        # vs jax 3.0e-7). Margins 26x / 300x. 1% weights: 4.2e-2 (xception); a hot spot
        # moved one cell: >= 0.1 (tests/test_tolerances.py).
        "heatmap_max_abs": (1e-5, 1e-4),
        # measured RMS: same 7.0e-8 (torch, convnet, batch 8 vs 1; tf and jax 8.4e-9),
        # cross 9.3e-8 (tf vs torch, xception). Margins 29x / 215x. 1% weights: 1.4e-2.
        "heatmap_rms": (2e-6, 2e-5),
        # measured Pearson r: 1.0 to 10 digits in every same and cross pair. 1% weights:
        # 0.99927 (xception; gap to 1 7.3e-4), so gaps of 1e-5 / 1e-4 still fail it (73x /
        # 7x) while noise of the max_abs bounds moves r by < 1e-6
        # (tests/test_tolerances.py).
        "heatmap_pearson_min": (0.99999, 0.9999),
        # measured SSIM: 1.0 to 10 digits in every same and cross pair. 1% weights:
        # 0.99881 (xception; gap 1.2e-3): fails both bounds (gaps 1e-4 / 1e-3).
        "heatmap_ssim_min": (0.9999, 0.999),
        # measured peak shift: 0 cells in every same and cross pair (1% weights: 1 cell,
        # xception). Shifts are 0 or >= 1 cell, so the same-backend bound is 0 (near-ties
        # are absorbed by compare.RANK_RESOLUTION); cross-backend allows one cell to a
        # 4-neighbour for flat-topped maxima (a real move still fails heatmap_max_abs).
        "heatmap_peak_shift_cells": (0.0, 1.0),
        # measured top-10% IoU: 1.0 in every pair (and for 1% weights: a small change keeps
        # the hot region; the error bounds catch it). One swapped boundary cell of an 8x8
        # map (k = 7) gives 6/8 = 0.75, of 7x7 (k = 5) 4/6 = 0.67, so 0.6 tolerates one tie
        # flip while a moved hot region (IoU ~0) fails; cross allows a little more.
        "heatmap_topk_iou_min": (0.6, 0.5),
        # report-only: heatmaps are in [0, 1]; the max-abs bounds above (measured 3.9e-7
        # same, 3.3e-7 cross).
        "pixel_atol": (1e-5, 1e-4),
    },
    "pattern": {
        # Compared deprocessed (uint8). Gradient ascent amplifies float noise by
        # bifurcation: most filters stay within 2 grey levels (SSIM > 0.999), but some
        # take another path (xception: 4 of 16 filters for torch batch 4 vs 1, 6 of 16
        # for tf vs torch; convnet: none). Measured worst SSIM: same 0.9042 (torch,
        # xception, batch 8 vs 1 (filters 4 vs 1 at once); tf 0.9671, jax 1.0), cross
        # 0.8944 (tf vs torch and tf vs jax, xception; torch vs jax 0.8984). Bounds keep
        # 2.1x / 2.4x the measured gap to 1. 1% weights: 0.285 (xception, worst of 16
        # filters), 0.407 (convnet) fail; but over the convnet's filters 0-3 alone the
        # worst is 0.848, which passes: check many filters to catch small weight changes.
        "pattern_ssim_min": (0.8, 0.75),
        # measured Pearson r: same 0.9329 (torch, xception, batch 8 vs 1; tf 0.9826, jax
        # 1.0), cross 0.9285 (tf vs torch and tf vs jax, xception; torch vs jax 0.9532).
        # Bounds keep 2.2x / 2.8x the measured gap to 1. 1% weights: 0.323 (xception),
        # 0.504 (convnet); an unrelated pattern gives r ~0.
        "pattern_pearson_min": (0.85, 0.8),
        # report-only, a fraction of the range (255): measured, filters that keep their
        # path differ by <= 2 grey levels (0.8%), those that bifurcate by up to 188 (74%,
        # torch batch 4 vs 1) / 165 (65%, tf vs torch), so this share is a fact for the
        # reader, never the verdict.
        "pixel_atol": (1e-2, 0.1),
    },
}

# The worst values measured above, as numbers, for tests/test_tolerances.py (which
# checks every bound keeps its margin over them and still fails the real change).
# kind -> Tolerance field -> (worst same_backend, worst cross_backend, 1% weights)
MEASURED: dict[str, dict[str, tuple[float, float, float]]] = {
    "activation": {
        "activation_max_rel": (8.4e-7, 6.7e-7, 3.8e-2),
        "activation_mean_rel": (1.9e-8, 2.2e-8, 3.9e-3),
    },
    "heatmap": {
        "heatmap_max_abs": (3.9e-7, 3.3e-7, 4.2e-2),
        "heatmap_rms": (7.0e-8, 9.3e-8, 1.4e-2),
        "heatmap_pearson_min": (1.0, 1.0, 0.99927),
        "heatmap_ssim_min": (1.0, 1.0, 0.99881),
        "heatmap_peak_shift_cells": (0.0, 0.0, 1.0),
        "heatmap_topk_iou_min": (1.0, 1.0, 1.0),
    },
    "pattern": {
        "pattern_ssim_min": (0.9042, 0.8944, 0.285),
        "pattern_pearson_min": (0.9329, 0.9285, 0.323),
    },
}


# --------------------------------------------------------------------------------------
# The retrain profile
# --------------------------------------------------------------------------------------
# The bounds above sit at numerical noise: right for a refactor, a Keras upgrade or a
# backend switch (same weights), failed by every retrain. The retrain profile judges a
# heatmap on what an independent retraining keeps (types.RETRAIN_METRICS), activations
# by linear CKA per layer (blind to a permutation or rotation of channels), and filter
# patterns only where the golden holds a response record (channels of two trainings do
# not correspond: each golden channel is matched to its best new one, see
# RETRAIN["pattern"]); a pattern golden without one is left unjudged. One column:
# a retrain's spread dwarfs backend noise (exact cross-backend bounds are 1e-4), so
# the same bounds serve a golden checked under another backend.
#
# Measurements: `python benchmarks/calibrate_retrain.py` on 2026-12-01, this 2-core CPU
# machine, tensorflow. K = 6 retrains of the bundled convnet recipe
# (convviz_check/examples/train.py; seeds 2, 3, 4 on the committed training scenes,
# seeds 5, 6, 7 on freshly drawn training scenes too), all passing the recipe's
# acceptance (accuracy 0.995-1.000, Grad-CAM pointing 0.925-0.975), plus the committed
# model (seed 1): 7 models, 42 ordered (golden, obtained) pairs. Scenes:
# make_scenes(64, seed=31337) (used by no training or acceptance), first object's box;
# every metric also on each disjoint 16-image slice of every pair (168 slices: a gate
# explains a handful of images, where one image weighs more). Every retrain fails the
# exact profile on every heatmap metric (max_abs, rms, pearson, ssim, peak_shift,
# topk_iou). Contrasts the bounds must fail, planted in the committed model's maps: the
# mass moved to the top-left corner in every image ("corner"), and in the images of
# one class only ("one class", 15 of 64 images).
#
# Margins: similarities keep 2.0x (rank agreement) and 1.6x (top-k overlap: halfway to
# the corner contrast) the worst measured gap to 1; energy drops keep >= 2.6x the worst
# measured drop and the mean drop's bound is under a third of the corner's; a retrain
# may lose twice the pointing hits measured.
# Margins are wide on purpose: the corner contrast sits far beyond every bound, and a
# user's model (deeper, other data) retrains less alike than this small convnet.
RETRAIN: dict[str, dict[str, float]] = {
    "activation": {
        # linear CKA of each layer (measures.layer_cka: positions x channels), the worst
        # layer's. Measured worst over 6 honest pairs 0.095 (16 images), 0.112 (one
        # image); shortcut model 0.028. Bound 0.05, about half the worst (see
        # RETRAIN_CKA_MEASURED below).
        "activation_cka_min": 0.05,
        # report facts only (max_rel / mean_rel per layer): as in TABLE, measured smallest
        # live layer scale 1.49, so the floor only keeps a dead layer finite.
        "activation_scale_floor": 1e-3,
        # report-only, never the verdict: share of values that moved by > 0.1 of the
        # layer's scale. Channels of two retrains do not correspond (measured CKA of
        # honest early layers 0.095-0.69), so this share is a fact for the reader.
        "pixel_atol": 0.1,
    },
    "heatmap": {
        # measured mean per-image Spearman rho: worst 0.812 over 64 images, 0.755 over a
        # 16-image slice (median 0.838 over the pairs; single images down to ~0.47).
        # Bound 0.5 keeps 2.0x the worst gap to 1 (0.245). Corner: -0.10.
        "heatmap_spearman_mean_min": 0.5,
        # measured mean per-image top-10% IoU: worst 0.658 over 64 images, 0.563 over a
        # 16-image slice (median 0.710). Corner: 0.012. Bound 0.3, about halfway.
        "heatmap_topk_iou_mean_min": 0.3,
        # measured share of images explaining the golden's class: 1.0 in every pair and
        # slice (the accepted models are 99.5-100% accurate). Two models that pass the
        # recipe's acceptance (accuracy >= 0.95) may disagree on up to 10% of images, so
        # 0.9: on 16 images one changed class passes, two fail.
        "heatmap_class_agreement_min": 0.9,
        # measured drop of the mean energy in the box (golden - obtained; golden mean
        # 0.38): worst 0.015 over 64 images, 0.021 over a 16-image slice (median 0.000).
        # Bound 0.1 is 4.7x the worst. Corner: 0.352 (fails 3.5x over).
        "heatmap_box_energy_drop_mean": 0.1,
        # measured largest per-image drop: worst 0.094 (median over pairs 0.060). Bound
        # 0.25, 2.6x. Corner: 0.604; one class: 0.369 (the images of that class fail it,
        # while every mean above still passes: 0.750 / 0.771 / drop 0.062).
        "heatmap_box_energy_drop": 0.25,
        # measured pointing-game hits lost, as a share of the images: worst 0.047 over 64
        # images (3), 0.125 over a 16-image slice (2 of 16). Bound 0.25: 2x (4 of 16
        # images). Corner: 0.984.
        "heatmap_pointing_drop": 0.25,
        # The evidence of convviz_check.evidence, measured by `python
        # benchmarks/calibrate_retrain.py --shortcut-example` on 2026-12-07 (tensorflow):
        # the 7 models above retrained again (the same recipe and seeds; all accepted,
        # accuracy 0.995-1.000), 42 ordered pairs on the 64 scenes and 168 16-image
        # slices, plus the shortcut example's honest and retrain models (two trainings
        # of one recipe) on the first 64 images of its biased evaluation set, 2 pairs
        # and 8 slices.
        #
        # share of the changed images (confident ones, when the golden knows its
        # probabilities) that now explain one and the same class: CALLED OUT in the
        # "predicts differently" line, NOT judged by default (bound 1.0: a share never
        # exceeds it). Measured: 0 in every pair and slice here (no retrain changed a
        # class), but on a hesitant 4-class model trained on photo-textured images
        # (docs/gate-validation.md) an honest retrain moved its class prior and sent 13 of
        # its 14 changed confident images to one class (share 0.929), the same signature
        # a shortcut leaves. A direction of changes is evidence to read, not a verdict;
        # the counterfactual probe (convviz.check_counterfactual) is the test of a cue.
        # Set it below 1 (e.g. 0.75: 3 of 3 and 4 of 5 fail, 3 of 4 passes) to judge it.
        "heatmap_class_flip_share_max": 1.0,
        # the growth of one image's mass in a corner that region_shift counts (a larger
        # region counts from sqrt(area / corner area) times it: 0.13 in the border ring,
        # ~0.19 outside a box). Measured per-image growth of a corner's mass between
        # honest retrains: 95th percentile 0.010-0.056, largest 0.066-0.155 (one image);
        # border 0.065-0.091 / 0.210, outside the box 0.044-0.070 / 0.140. So 0.05 counts
        # about one honest image in 20-100 by chance, and a partial shortcut's +0.08 in
        # every image it acts on.
        "heatmap_region_growth": 0.05,
        # worst share of a group's images (all, or one golden class with >= 3 images)
        # whose mass in one region grew by more than heatmap_region_growth. Measured:
        # worst 0.267 over 64 images (4 of 15 of a class, top_right, the shortcut
        # example's retrain -> honest; the 42 convnet pairs <= 0.143), 0.5 over a
        # 16-image slice (2 of 4, top_left; the 168 convnet slices <= 0.333). Bound 0.75 (1.5x the worst):
        # 3 of 3, 4 of 4, 6 of 7, 7 of 8 fail. Contrasts: 1.0 for the corner in every
        # image, in one class, +0.08 in the corner of one class (which every other
        # metric passes: spearman 0.986, box drop 0.034) and the shortcut example's
        # shortcut model; 0.0 for that +0.08 scattered over all images (mean 0.019).
        "heatmap_region_shift_share_max": 0.75,
        # report-only (never the verdict; the retrain text leaves it out): share of map
        # values that moved by > 0.1 of the [0, 1] range. Measured 12.6-18.4% over the
        # pairs (corner: 41.9%).
        "pixel_atol": 0.1,
    },
    "pattern": {
        # the largest pattern_gap of a judged channel (convviz_check.pattern_response:
        # a channel is lost when its golden pattern drives its match less than it drove
        # the golden channel and its match correlates this far below the layer's
        # median). Measured over 20 honest pairs of the shortcut recipe: worst 0.49 at
        # conv1_relu, 0.59 at conv2_relu; sabotaged channels of an otherwise unchanged
        # layer sit near 1 (the numbers per sabotage are next to
        # pattern_response.DEFAULT_MAX_GAP, which is this value).
        "pattern_response_gap_max": 0.65,
    },
}

# The values measured above, as numbers, for tests/test_profiles.py (which checks every
# bound covers the worst retrain with its margin and fails the corner contrast).
# Tolerance field -> (worst over 64 images, worst over a 16-image slice, corner, one class)
RETRAIN_MEASURED: dict[str, tuple[float, float, float, float]] = {
    "heatmap_spearman_mean_min": (0.812, 0.755, -0.102, 0.750),
    "heatmap_topk_iou_mean_min": (0.658, 0.563, 0.012, 0.771),
    "heatmap_class_agreement_min": (1.0, 1.0, 1.0, 1.0),
    "heatmap_box_energy_drop_mean": (0.015, 0.021, 0.352, 0.062),
    "heatmap_box_energy_drop": (0.094, 0.094, 0.604, 0.369),
    "heatmap_pointing_drop": (0.047, 0.125, 0.984, 0.234),
    "heatmap_class_flip_share_max": (0.0, 0.0, 0.0, 0.0),
    "heatmap_region_shift_share_max": (0.267, 0.5, 1.0, 1.0),
}


# Activations under retrain: `python benchmarks/calibrate_cka.py` on 2026-12-07, this
# 2-core CPU machine, tensorflow. Models: 4 honest models of the shortcut example's
# recipe (the committed honest and retrain, seeds 11 and 12, and seeds 21 and 22 trained
# by the script; accuracy 0.995-1.0), 6 pairs; images: the gate's (biased_eval_set,
# first 16); layers: the default activation layers (conv1-4, pool1-3). Linear CKA is low
# between honest retrains at the first layers of this narrow convnet (12-32 channels;
# conv1 is read before batch normalization, whose per-channel scale is arbitrary and
# seen by CKA): worst layer 0.095 over 16 images (conv1, honest vs seed 22; the other
# pairs 0.12-0.46), conv1 on one image down to 0.112 (the gate's check: honest vs
# retrain 0.84 on its image). Deeper layers keep 0.66-0.88. Contrasts: the shortcut
# model (same recipe, another cue) gives 0.028 (conv4) and fails; one layer's kernel
# shuffled gives a worst layer of 0.071 (conv1 shuffled), 0.249 (conv2), 0.440 (conv3),
# 0.394 (conv4): within what honest retrains of this model already move, so no bound
# that passes every honest retrain here catches them. Bound 0.05: about half the worst
# honest value. Calibrate on your own retrains (`convviz-check calibrate`): a wider
# model's retrains agree more and its bound can sit far higher.
# Tolerance field -> (worst honest over 16 images, worst honest on one image, conv1
# shuffled, shortcut model)
RETRAIN_CKA_MEASURED: dict[str, tuple[float, float, float, float]] = {
    "activation_cka_min": (0.095, 0.112, 0.071, 0.028),
}


# --------------------------------------------------------------------------------------
# The profiles as data: how each metric is computed from the compared items
# --------------------------------------------------------------------------------------
# A comparison measures each item (a layer, an image, a filter), then combines the
# items' measures into the profile's metrics. How they combine:
#   "worst"      the worst item's value (the largest error, the smallest similarity);
#   "mean"       the mean over the items that have the measure (a degenerate image has
#                none);
#   "mean_drop"  mean expected - mean obtained of an (expected, obtained) fact of
#                every item (energy in the box; a pointing hit counts 1);
#   "share_same" the share of items whose (expected, obtained) fact is equal;
#   "count"      the number of items whose (expected, obtained) fact differs (bound 0);
#   "evidence"   measured on the whole batch by convviz_check.evidence (the worst
#                (region, group) share of grown images; the classes of confident images).
AGGREGATIONS = ("worst", "mean", "mean_drop", "share_same", "count", "evidence")


@dataclass(frozen=True)
class MetricSpec:
    """One metric of a profile: its name in ``Comparison.metrics``, the Tolerance field
    that bounds it (None: a count bounded by 0), its direction, the per-item measure it
    combines and how (one of :data:`AGGREGATIONS`)."""

    name: str
    field: str | None
    direction: str
    measure: str
    aggregate: str


# Counts every heatmap comparison reports: an image whose map became (or stopped
# being) degenerate, an image that explains another class than its golden. Under
# retrain the class is judged as a share (class_agreement) instead.
_COUNTS = {
    "degenerate_changed": MetricSpec("degenerate_changed", None, "max", "degenerate", "count"),
    "class_changed": MetricSpec("class_changed", None, "max", "class_index", "count"),
}
# retrain metric -> (per-item measure, aggregation); names, fields and directions are
# types.RETRAIN_METRICS'.
_RETRAIN_MEASURES = {
    "spearman_mean": ("spearman", "mean"),
    "topk_iou_mean": ("topk_iou", "mean"),
    "class_agreement": ("class_index", "evidence"),
    "class_flip_share": ("class_index", "evidence"),
    "box_energy_drop_mean": ("box_energy", "mean_drop"),
    "box_energy_drop": ("box_energy_drop", "worst"),
    "pointing_drop": ("pointing", "mean_drop"),
    "region_shift": ("region_mass", "evidence"),
    "cka": ("cka", "worst"),
}


def _profile_specs() -> dict[str, dict[str, tuple[MetricSpec, ...]]]:
    exact = {
        kind: tuple(MetricSpec(n, f, d, n, "worst") for n, f, d in metrics)
        for kind, metrics in PROFILE_METRICS["exact"].items()
    }
    retrain = {
        kind: tuple(MetricSpec(n, f, d, *_RETRAIN_MEASURES[n]) for n, f, d in metrics)
        for kind, metrics in PROFILE_METRICS["retrain"].items()
    }
    exact["heatmap"] += (_COUNTS["degenerate_changed"], _COUNTS["class_changed"])
    retrain["heatmap"] += (_COUNTS["degenerate_changed"],)
    return {"exact": exact, "retrain": retrain}


# profile -> kind -> its metrics, in report order (empty: the profile does not judge
# the kind).
PROFILE_SPECS: dict[str, dict[str, tuple[MetricSpec, ...]]] = _profile_specs()


def check_profile(profile: Any, source: str = "profile") -> str:
    """``profile`` when it names a gate profile (:data:`PROFILES`).

    Raises:
        ComparisonError: anything else, naming ``source`` (where the value came from,
            e.g. ``"convviz(profile=...)"``) and the valid profiles.

    Example:
        >>> check_profile("retrain")
        'retrain'
    """
    if isinstance(profile, str) and profile in PROFILES:
        return profile
    raise ComparisonError(
        f"Unknown gate profile in {source}. Expected one of {PROFILES}. Received: {profile!r}"
    )


def default_tolerance(
    kind: str, cross_backend: bool = False, profile: str = DEFAULT_PROFILE
) -> Tolerance:
    """The default bounds for one kind of artifact.

    Args:
        kind: ``"activation"``, ``"heatmap"`` or ``"pattern"``.
        cross_backend: the cross-backend column instead of the same-backend one
            (``exact`` only: the ``retrain`` bounds are far above backend noise).
        profile: ``"exact"`` (the :data:`TABLE`) or ``"retrain"`` (:data:`RETRAIN`).

    Returns:
        A :class:`~convviz_check.types.Tolerance` with that profile's fields for the
        kind (and ``pixel_atol``) set; other fields are None.

    Example:
        >>> default_tolerance("heatmap").heatmap_peak_shift_cells
        0.0
    """
    if kind not in TABLE:
        raise ComparisonError(
            f"Unknown comparison kind. Expected one of {tuple(TABLE)}. Received: kind={kind!r}"
        )
    if check_profile(profile) == "retrain":
        return Tolerance(**RETRAIN[kind])
    column = 1 if cross_backend else 0
    return Tolerance(**{name: pair[column] for name, pair in TABLE[kind].items()})


def as_tolerance(value: Any, source: str = "tolerance") -> Tolerance | None:
    """``value`` as a :class:`Tolerance`: None, a Tolerance, or a dict of its fields.

    Raises:
        ComparisonError: another type, or a dict with unknown fields (``source`` names
            where the value came from, e.g. ``"convviz(tolerance=...)"``).
    """
    if value is None:
        return value
    if isinstance(value, Tolerance):
        return check_bounds(value, source)
    if isinstance(value, Mapping):
        try:
            tol = Tolerance.from_dict(dict(value))
        except (ConvvizError, TypeError, ValueError) as err:
            raise ComparisonError(f"Invalid {source}: {err} Received: {value!r}") from None
        return check_bounds(tol, source)
    raise ComparisonError(
        f"{source} must be a Tolerance, a dict of its fields or None. Received: {value!r} "
        f"(type {type(value).__name__})"
    )


def check_bounds(tol: Tolerance, source: str = "tolerance") -> Tolerance:
    """``tol`` when every field it sets is a bound some comparison can pass: a finite
    number; an error bound (``max``), ``pixel_atol`` >= 0; a similarity bound
    (``min``) <= 1 (identical arrays score 1); ``activation_scale_floor`` > 0.

    Raises:
        ComparisonError: naming ``source``, the field, its value and what it must be
            (a golden written with such a bound would fail every later run).
    """
    directions = {
        name: direction
        for kinds in PROFILE_METRICS.values()
        for metrics in kinds.values()
        for _metric, name, direction in metrics
    }
    for name, value in tol.to_dict().items():
        bad = ""
        if not math.isfinite(value):
            bad = "a finite number"
        elif name == "activation_scale_floor" and value <= 0:
            bad = "> 0"
        elif directions.get(name, "max") == "max" and value < 0:
            bad = ">= 0 (an error bound: identical arrays have error 0)"
        elif directions.get(name) == "min" and value > 1:
            bad = "<= 1 (a similarity bound: identical arrays score 1)"
        if bad:
            raise ComparisonError(
                f"Invalid {source}: the bound {name} must be {bad}. Received: {name}={value!r}"
            )
    return tol


def merge(*overrides: Any) -> Tolerance | None:
    """The overrides merged in order (later fields win); None when none is set."""
    merged: Tolerance | None = None
    for value in overrides:
        tol = as_tolerance(value)
        if tol is not None:
            merged = tol if merged is None else merged.merged(tol)
    return merged


def resolve(
    kind: str, *overrides: Any, cross_backend: bool = False, profile: str = DEFAULT_PROFILE
) -> Tolerance:
    """The bounds one comparison uses: the profile's defaults for ``kind`` (for
    ``exact`` the same- or cross-backend column) with each override's set fields on
    top (later overrides win), resolved once."""
    defaults = default_tolerance(kind, cross_backend=cross_backend, profile=profile)
    return defaults.merged(merge(*overrides))


def profile_fields(kind: str) -> set[str]:
    """Every Tolerance field that bounds ``kind`` under some profile (and
    ``pixel_atol``): what ``convviz_tolerance_<kind>`` may set."""
    fields = set(TABLE[kind]) | set(RETRAIN[kind])
    for metrics in PROFILE_METRICS.values():
        fields |= {field for _name, field, _direction in metrics[kind]}
    return fields


def parse_fields(text: str, source: str, kind: str | None = None) -> Tolerance:
    """A Tolerance from ``"field=value, field=value"`` (commas or whitespace between
    pairs), as ini keys and command-line flags give it.

    Raises:
        ComparisonError: a pair without ``=``, a value that is not a number, an
            unknown field, or (with ``kind``) a field of another kind (``source`` names
            the setting).

    Example:
        >>> parse_fields("heatmap_rms=1e-5, heatmap_pearson_min=0.999", "ini").heatmap_rms
        1e-05
    """
    values: dict[str, float] = {}
    for pair in text.replace(",", " ").split():
        name, sep, value = pair.partition("=")
        if not sep:
            raise ComparisonError(
                f"{source} takes field=value pairs. Received: {pair!r} in {text!r}."
            )
        try:
            values[name.strip()] = float(value)
        except ValueError:
            raise ComparisonError(
                f"{source}: {name.strip()} must be a number. Received: {value!r}."
            ) from None
    tol = as_tolerance(values, source)  # unknown fields are refused here
    assert tol is not None  # a dict always gives a Tolerance
    if kind is not None:
        allowed = profile_fields(kind)
        foreign = sorted(set(values) - allowed)
        if foreign:
            raise ComparisonError(
                f"{source} sets fields of another kind: {foreign}. Expected fields among "
                f"{sorted(allowed)}."
            )
    return tol
