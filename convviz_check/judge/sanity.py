"""The model-randomization judgment, pure NumPy: did the maps change enough when the
model's top layers were re-initialized (Adebayo et al., "Sanity checks for saliency
maps", NeurIPS 2018)?

:func:`judge_randomization` takes a :class:`RandomizationResult` already measured (by
:mod:`convviz_check.sanity`, which re-initializes a clone of the model and computes the
maps) and returns an :class:`~convviz_check.types.Outcome`. No Keras, no framework: the
judgment can be replayed and tested on plain arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..types import MetricResult, Outcome

__all__ = [
    "DEFAULT_MAX_CORRELATION",
    "DEFAULT_REPEATS",
    "RandomizationResult",
    "judge_randomization",
]

# Bound on the mean Spearman correlation between trained and randomized-head maps,
# averaged over DEFAULT_REPEATS re-initializations. Measured on the bundled models
# (16 scenes of make_scenes(64, seed=777); TensorFlow, torch and JAX identical to 3
# decimals): single re-initializations (seeds 0..9) gave -0.11..0.52 (convnet) and
# -0.27..0.73 (xception); means over 3 consecutive seeds at most 0.314 / 0.371 (0.314
# / 0.371 for the default seeds 0..2). A Grad-CAM that cannot depend on the head gives
# 1.0 (the one-channel control in tests/test_sanity.py). 0.5 separates the two with
# ~0.13 margin on the trained side.
DEFAULT_MAX_CORRELATION = 0.5
DEFAULT_REPEATS = 3


@dataclass(frozen=True)
class RandomizationResult:
    """Outcome of the model-randomization check.

    Attributes:
        correlations: ``(N,)`` Spearman rank correlation per image between the trained
            and the randomized models' heatmaps, averaged over the re-initializations
            (0 where a randomized map is constant, e.g. degenerate: nothing of the
            trained map is left).
        mean_correlation: mean of ``correlations``.
        max_correlation: the bound the mean must stay below.
        passed: ``mean_correlation < max_correlation``.
        layers: the re-initialized layers (flattened-graph names).
        target_layer: the CAM target layer (the same for both models).
        class_index: ``(N,)`` classes explained (the trained model's).
        randomized_degenerate: ``(N,)`` images whose map was degenerate for at least
            one randomized model.
        per_repeat: ``(repeats,)`` mean correlation of each re-initialization.
        text: a summary for messages.
        method: the CAM method whose maps were compared.
    """

    correlations: np.ndarray
    mean_correlation: float
    max_correlation: float
    passed: bool
    layers: tuple[str, ...]
    target_layer: str
    class_index: np.ndarray
    randomized_degenerate: np.ndarray
    per_repeat: np.ndarray
    text: str
    method: str = "gradcam"


def judge_randomization(result: RandomizationResult) -> Outcome:
    """The verdict on a measured :class:`RandomizationResult`, as an
    :class:`~convviz_check.types.Outcome` (judgment ``"randomization"``);
    :func:`convviz_check.sanity.sanity_check_randomization` raises when it is not ok.

    Passes when the mean correlation is strictly below its bound (a map that does not
    change at all correlates 1). Metrics: ``mean_correlation`` (bound
    ``max_correlation``, ``"max"``); per image its correlation, class and whether a
    randomized map was degenerate; facts: the method, the target layer, the layers
    re-initialized, the re-initializations and their seeds, each one's mean.
    """
    mean, bound = float(result.mean_correlation), float(result.max_correlation)
    passed = mean < bound  # NaN never passes
    repeats = len(result.per_repeat)
    metric = MetricResult(
        "mean_correlation",
        mean,
        bound,
        passed,
        "max",
        f"Spearman, trained vs re-initialized maps; mean of {repeats} re-initialization(s), "
        "strictly below the bound",
    )
    items = {
        f"image {i}": {
            "correlation": float(result.correlations[i]),
            "class_index": int(result.class_index[i]),
            "randomized_degenerate": bool(result.randomized_degenerate[i]),
        }
        for i in range(len(result.correlations))
    }
    facts = {
        "method": result.method,
        "target_layer": result.target_layer,
        "layers": list(result.layers),
        "repeats": repeats,
        "per_repeat": [float(v) for v in result.per_repeat],
        "images": len(result.correlations),
        "randomized_degenerate": int(np.count_nonzero(result.randomized_degenerate)),
    }
    if passed:
        lead = (
            f"The {result.method} map changes when the model's top layers "
            f"{list(result.layers)} are re-initialized: mean Spearman correlation {mean:.3f} "
            f"< {bound:.3f} over {repeats} re-initialization(s)."
        )
        return Outcome("randomization", "passed", lead, "", {metric.name: metric}, items, {}, facts)
    lead = (
        f"The {result.method} map barely changes when the model's top layers are "
        "re-initialized: it explains the input rather than what the model learned."
    )
    return Outcome(
        "randomization",
        "failed",
        lead,
        f"{lead}\n  {result.text}",
        {metric.name: metric},
        items,
        {},
        facts,
    )
