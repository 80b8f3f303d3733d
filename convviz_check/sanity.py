"""Model-randomization sanity check for Grad-CAM and the other CAM methods (Adebayo
et al., "Sanity checks for saliency maps", NeurIPS 2018).

An explanation that does not change when the model's learned weights are destroyed
explains the input (edges, colour blobs), not the model. The check re-initializes the
top layers of a *clone* of the model (the user's model is never touched), computes
the maps (``method=``, Grad-CAM by default) for the same images, the same target layer,
the same classes (or callable target) and the same score kind, and asserts that the
maps' Spearman rank correlation with the trained maps drops below a bound.

Eigen-CAM is class-agnostic: its map is a function of the target layer's activations
alone, so re-initializing the head leaves it unchanged (correlation 1) and the check
fails, as it should for an explanation that cannot tell what the head learned.

Re-initialization draws from ``numpy.random.default_rng(seed)`` (Keras'
random initializers differ between backends), mimicking Keras' defaults: kernels
(rank >= 2) from Glorot-uniform with Keras' fan computation; 1-D weights (biases,
normalization scales and statistics) are randomly permuted, which destroys what they
learned while keeping valid values (a permuted moving variance stays positive).

Needs Keras (imported lazily, inside the functions).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import GraphError, InputError
from .judge.sanity import (
    DEFAULT_MAX_CORRELATION,
    DEFAULT_REPEATS,
    RandomizationResult,
    judge_randomization,
)
from .measures import spearman
from .types import Outcome

__all__ = [
    "DEFAULT_MAX_CORRELATION",
    "DEFAULT_REPEATS",
    "RandomizationResult",
    "check_randomization",
    "judge_randomization",
    "randomization_correlation",
    "sanity_check_randomization",
]


def _weighted_records(model: Any) -> list[Any]:
    from .graph import flatten

    seen: set[int] = set()
    out = []
    for record in flatten(model).records:
        weights = list(getattr(record.operation, "weights", []) or [])
        if weights and id(record.operation) not in seen:
            seen.add(id(record.operation))
            out.append(record)
    return out


def _choose_layers(
    model: Any, target_layer: str, layers_to_reinit: int | Sequence[str] | None
) -> list[Any]:
    """Records of the layers to re-initialize (see sanity_check_randomization)."""
    from .graph import flatten

    graph = flatten(model)
    weighted = _weighted_records(model)
    if layers_to_reinit is None:
        target_index = graph.records.index(graph.record(target_layer))
        chosen = [r for r in weighted if graph.records.index(r) > target_index]
        if not chosen:
            raise GraphError(
                f"No layer with weights follows the Grad-CAM layer {target_layer!r}: there "
                "is no head to re-initialize. Pass layers_to_reinit (names, or k for the "
                "top k layers with weights)."
            )
        return chosen
    if isinstance(layers_to_reinit, int | np.integer) and not isinstance(layers_to_reinit, bool):
        k = int(layers_to_reinit)
        if not 1 <= k <= len(weighted):
            raise InputError(
                f"layers_to_reinit as a count must be in [1, {len(weighted)}] (the layers "
                f"with weights). Received: layers_to_reinit={layers_to_reinit!r}"
            )
        return weighted[-k:]
    if isinstance(layers_to_reinit, str) or not isinstance(layers_to_reinit, Sequence):
        raise InputError(
            "layers_to_reinit must be None (the head above the Grad-CAM layer), an int k "
            "(the top k layers with weights) or a list of layer names. Received: "
            f"layers_to_reinit={layers_to_reinit!r}"
        )
    by_name = {r.name: r for r in weighted}
    chosen = []
    for name in layers_to_reinit:
        if name not in by_name:
            graph.record(name)  # unknown name -> GraphError listing the layers
            raise GraphError(
                f"Layer {name!r} has no weights to re-initialize. Expected one of {list(by_name)}"
            )
        chosen.append(by_name[name])
    if not chosen:
        raise InputError("layers_to_reinit is empty. Received: layers_to_reinit=[]")
    return chosen


def _glorot_or_permutation(value: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if not np.issubdtype(value.dtype, np.floating) or value.ndim == 0:
        return value
    if value.ndim == 1:
        return rng.permutation(value)
    # Keras' compute_fans: receptive field = product of the leading (spatial) dims.
    receptive = int(np.prod(value.shape[:-2])) if value.ndim > 2 else 1
    fan_in, fan_out = receptive * value.shape[-2], receptive * value.shape[-1]
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=value.shape).astype(value.dtype)


def _clone(model: Any) -> Any:
    """A structurally identical model with its own variables (weights copied by caller).

    Plain functional and Sequential models go through ``keras.models.clone_model``.
    Subclasses of the functional model (keras-hub task models) are rebuilt from their
    config first: ``clone_model`` turns them into a plain ``Functional`` (measured on
    ``XceptionImageClassifier``), losing their class and what it knows (head, preset).
    """
    import keras

    from .graph import is_plain_functional

    plain = is_plain_functional(model)
    attempts = [keras.models.clone_model] if plain else [_from_config, keras.models.clone_model]
    errors = []
    for attempt in attempts:
        try:
            return attempt(model)
        except Exception as exc:  # noqa: BLE001 - try the next way, report all
            errors.append(f"{attempt.__name__}: {exc!r}")
    raise GraphError(
        f"Cannot clone model {getattr(model, 'name', model)!r} of class "
        f"{type(model).__name__} for the randomization check (the user's model is never "
        f"modified). Received errors: {'; '.join(errors)}"
    )


def _from_config(model: Any) -> Any:
    return type(model).from_config(model.get_config())


def randomized_clone(model: Any, layers: Sequence[Any], seed: int = 0) -> Any:
    """A clone of ``model`` with the weights of ``layers`` (flattened-graph records or
    layer objects) re-initialized and every other weight copied."""
    position = {id(v): i for i, v in enumerate(model.weights)}
    values = [np.array(v) for v in model.get_weights()]
    rng = np.random.default_rng(seed)
    for layer in layers:
        op = getattr(layer, "operation", layer)
        for v in op.weights:
            i = position[id(v)]
            values[i] = _glorot_or_permutation(values[i], rng)
    clone = _clone(model)
    shapes = [tuple(v.shape) for v in clone.weights]
    if shapes != [tuple(v.shape) for v in values]:
        raise GraphError(
            f"The clone of {model.name!r} has other weights than the model. Received: "
            f"{len(shapes)} clone weights vs {len(values)} model weights"
        )
    clone.set_weights(values)
    return clone


def randomization_correlation(
    model: Any,
    images: Any,
    layers_to_reinit: int | Sequence[str] | None = None,
    *,
    class_index: Any = None,
    layer: str | None = None,
    score: str = "auto",
    seed: int = 0,
    repeats: int = DEFAULT_REPEATS,
    max_correlation: float = DEFAULT_MAX_CORRELATION,
    method: str = "gradcam",
    method_options: Mapping[str, Any] | None = None,
) -> RandomizationResult:
    """Measure (without asserting) how much the CAM maps change when the top layers are
    re-initialized; see :func:`sanity_check_randomization` for the arguments."""
    from .explain.cam import cam, make_method

    options = dict(method_options or {})
    make_method(method, options)  # an unknown method or option fails before any work

    if isinstance(max_correlation, bool) or not -1.0 <= float(max_correlation) <= 1.0:
        raise InputError(
            f"max_correlation must be in [-1, 1]. Received: max_correlation={max_correlation!r}"
        )
    if isinstance(repeats, bool) or not isinstance(repeats, int | np.integer) or repeats < 1:
        raise InputError(f"repeats must be a positive int. Received: repeats={repeats!r}")
    trained = cam(
        model, images, method, class_index=class_index, layer=layer, score=score, **options
    )
    if np.any(trained.degenerate):
        bad = np.flatnonzero(trained.degenerate).tolist()
        raise InputError(
            f"The trained model's {method} map is degenerate for images {bad} (layer "
            f"{trained.layer!r}): there is nothing to randomize away. Expected "
            "non-degenerate maps (a trained model, a layer the score depends on)."
        )
    records = _choose_layers(model, trained.layer, layers_to_reinit)
    per_repeat, degenerate = [], np.zeros(len(trained), dtype=np.int64)
    for r in range(int(repeats)):
        clone = randomized_clone(model, records, seed=seed + r)
        randomized = cam(
            clone,
            images,
            method,
            # the classes the trained model explained (a callable target: itself)
            class_index=class_index if callable(class_index) else trained.class_index,
            layer=trained.layer,
            score=trained.score_kind,
            **options,
        )
        degenerate += np.asarray(randomized.degenerate, dtype=np.int64)
        per_repeat.append(
            [
                0.0
                if randomized.degenerate[i]
                else spearman(trained.heatmap[i], randomized.heatmap[i])
                for i in range(len(trained))
            ]
        )
        del clone  # one clone alive at a time
    by_repeat = np.asarray(per_repeat, dtype=np.float64)  # (repeats, N)
    rhos = by_repeat.mean(axis=0)
    mean = float(rhos.mean())
    passed = mean < float(max_correlation)
    names = tuple(r.name for r in records)
    text = (
        f"Model-randomization check (Adebayo et al. 2018) on layer {trained.layer!r}: "
        f"re-initialized {list(names)} {repeats} time(s) (seeds {seed}..{seed + repeats - 1}); "
        f"mean Spearman correlation of the {method} maps with the trained model's "
        f"{mean:.3f} ({'<' if passed else '>='} bound {float(max_correlation):.3f}) over "
        f"{len(rhos)} images; per re-initialization "
        f"{[round(float(v), 3) for v in by_repeat.mean(axis=1)]}; per image min "
        f"{rhos.min():.3f}, max {rhos.max():.3f}; {int(degenerate.sum())} randomized maps "
        "degenerate."
    )
    return RandomizationResult(
        correlations=rhos,
        mean_correlation=mean,
        max_correlation=float(max_correlation),
        passed=passed,
        layers=names,
        target_layer=trained.layer,
        class_index=np.asarray(trained.class_index),
        randomized_degenerate=degenerate > 0,
        per_repeat=by_repeat.mean(axis=1),
        text=text,
        method=method,
    )


def check_randomization(
    model: Any,
    images: Any,
    layers_to_reinit: int | Sequence[str] | None = None,
    *,
    max_correlation: float = DEFAULT_MAX_CORRELATION,
    class_index: Any = None,
    layer: str | None = None,
    score: str = "auto",
    seed: int = 0,
    repeats: int = DEFAULT_REPEATS,
    method: str = "gradcam",
    method_options: Mapping[str, Any] | None = None,
) -> Outcome:
    """:func:`sanity_check_randomization`'s judgment without raising: measure
    (:func:`randomization_correlation`) and judge (:func:`judge_randomization`). Same
    arguments.

    Raises:
        InputError: degenerate trained maps or bad arguments (a map that does not
            change is a failed Outcome).
    """
    result = randomization_correlation(
        model,
        images,
        layers_to_reinit,
        class_index=class_index,
        layer=layer,
        score=score,
        seed=seed,
        repeats=repeats,
        max_correlation=max_correlation,
        method=method,
        method_options=method_options,
    )
    return judge_randomization(result)


def sanity_check_randomization(
    model: Any,
    images: Any,
    layers_to_reinit: int | Sequence[str] | None = None,
    *,
    max_correlation: float = DEFAULT_MAX_CORRELATION,
    class_index: Any = None,
    layer: str | None = None,
    score: str = "auto",
    seed: int = 0,
    repeats: int = DEFAULT_REPEATS,
    method: str = "gradcam",
    method_options: Mapping[str, Any] | None = None,
) -> RandomizationResult:
    """Assert that the CAM maps depend on the learned weights (model-randomization test).

    Re-initializes ``layers_to_reinit`` in a clone of ``model`` (``model`` itself is
    never modified) ``repeats`` times, computes the maps of ``method`` for ``images``
    with the same layer, classes and score kind as the trained model's, and asserts
    that the mean Spearman correlation between the trained and the randomized maps is
    below ``max_correlation``.

    Args:
        model: a trained functional Keras model.
        images: ``(N, H, W, C)`` or one ``(H, W, C)`` image, as ``cc.gradcam`` takes.
        layers_to_reinit: ``None``: every layer with weights above the Grad-CAM layer
            (the classifier head); an int ``k``: the top ``k`` layers with weights
            (cascading randomization from the output down); or layer names.
        max_correlation: bound on the mean correlation (default
            :data:`DEFAULT_MAX_CORRELATION`, measured on the bundled models).
        class_index, layer, score: as for ``cc.cam`` (applied to the trained model;
            the randomized model explains the same classes, or the same callable
            target, at the same layer).
        seed: seed of the first re-initialization (``numpy.random.default_rng``);
            re-initialization ``r`` uses ``seed + r``.
        repeats: independent re-initializations whose correlations are averaged (one
            draw of a 4-class head can happen to resemble the trained one: single
            draws reached 0.73 on the bundled xception, their 3-draw means <= 0.37).
        method: the CAM method (``cc.cam``'s ``method``; default ``"gradcam"``). The
            default bound was measured for Grad-CAM. Eigen-CAM does not depend on the
            head and fails this check by design.
        method_options: the method's options (e.g. ``{"max_channels": 32}``).

    Returns:
        The :class:`RandomizationResult` (on success).

    Raises:
        AssertionError: the maps did not change enough: the method is not explaining
            what the model learned.
        InputError: the trained model's maps are degenerate, or arguments are invalid
            (an unknown method or option included).

    Example:
        >>> result = sanity_check_randomization(model, scenes.floats[:16])  # doctest: +SKIP
        >>> result.mean_correlation  # doctest: +SKIP
        0.05
    """
    __tracebackhide__ = True
    result = randomization_correlation(
        model,
        images,
        layers_to_reinit,
        class_index=class_index,
        layer=layer,
        score=score,
        seed=seed,
        repeats=repeats,
        max_correlation=max_correlation,
        method=method,
        method_options=method_options,
    )
    outcome = judge_randomization(result)
    if not outcome.ok:
        raise AssertionError(outcome.message)
    return result
