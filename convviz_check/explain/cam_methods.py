"""The CAM family's weighting rules: one :class:`CamMethod` per paper.

Each method receives the target layer's maps ``A`` (and, where it needs them, the
gradient ``dy/dA`` or a way to score masked inputs) in a :class:`CamInputs` and returns
the raw map; :func:`convviz_check.explain.cam.cam` does everything else (target layer,
score, batching, degenerate rule, normalisation). A new method is a subclass with a
``name``, its options as typed keyword-only ``__init__`` arguments, and ``raw``.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import InputError
from ..render import bilinear_matrix


@dataclass(frozen=True)
class CamInputs:
    """What a method may weigh, for a batch of N images (channels-last, float64).

    Attributes:
        activation: ``A``, ``(N, h, w, k)``.
        gradient: ``dy/dA``, ``(N, h, w, k)``; ``None`` for methods that need none.
        images: ``(N, H, W, C)`` float32, the inputs as the model receives them.
        masked_scores: ``fn(images (M, H, W, C), owner (M,)) -> (M,)``, the target score
            of each image's owner (its class, or the callable) for ``M <= chunk``
            channels-last inputs; ``None`` unless the method asked for it.
        chunk: the number of inputs ``masked_scores`` runs per compiled call.
    """

    activation: np.ndarray
    gradient: np.ndarray | None
    images: np.ndarray
    masked_scores: Callable[[np.ndarray, np.ndarray], np.ndarray] | None
    chunk: int


class CamMethod(ABC):
    """One weighting rule of the CAM family. Subclasses set the class attributes, take
    their options as typed keyword-only ``__init__`` arguments (checked there; an
    :class:`InputError` for a bad value) and implement :meth:`raw`."""

    name: ClassVar[str]
    # The method needs dy/dA (one forward/backward per chunk), or only a forward pass.
    needs_gradient: ClassVar[bool] = True
    # The method runs the model on masked inputs (CamInputs.masked_scores).
    needs_masked_forward: ClassVar[bool] = False
    # The degenerate rule's reference: "score" (|y_c|: the raw map is a gradient times
    # an activation, in units of the score) or "activation" (max |A|: the raw map is a
    # combination of channels, in units of the activations).
    scale: ClassVar[str] = "score"

    @abstractmethod
    def raw(self, data: CamInputs) -> np.ndarray:
        """The raw map ``(N, h, w)`` float64, before ReLU and normalisation (may hold
        non-finite values: the skeleton turns those maps into degenerate zeros)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


METHODS: dict[str, type[CamMethod]] = {}


def _register(cls: type[CamMethod]) -> type[CamMethod]:
    METHODS[cls.name] = cls
    return cls


def _gradient(data: CamInputs) -> np.ndarray:
    """``dy/dA`` of a gradient method (the skeleton computes it for those)."""
    assert data.gradient is not None, "a gradient method was run without a gradient"
    return data.gradient


def _weighted_sum(activation: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``sum_k weights[n, k] A[n, :, :, k]``."""
    return np.einsum("nhwk,nk->nhw", activation, weights)


@_register
class GradCAMMethod(CamMethod):
    # Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    # Gradient-based Localization", ICCV 2017 (arXiv:1610.02391):
    # alpha_k = mean_ij dy/dA_k(i, j); raw = sum_k alpha_k A_k.
    name = "gradcam"

    def raw(self, data: CamInputs) -> np.ndarray:
        return _weighted_sum(data.activation, _gradient(data).mean(axis=(1, 2)))


@_register
class GradCAMPlusPlus(CamMethod):
    # Chattopadhyay et al., "Grad-CAM++: Generalized Gradient-based Visual Explanations
    # for Deep Convolutional Networks", WACV 2018 (arXiv:1710.11063), eq. 19 with the
    # exponential score S = exp(y): the higher derivatives become powers of g = dy/dA,
    #   alpha_kij = g_kij^2 / (2 g_kij^2 + sum_ab A_kab g_kij^3),
    #   w_k = sum_ij alpha_kij ReLU(g_kij); raw = sum_k w_k A_k.
    # alpha = 0 where its denominator is 0 (there g = 0: the cell contributes nothing).
    name = "gradcam++"

    def raw(self, data: CamInputs) -> np.ndarray:
        a, g = data.activation, _gradient(data)
        g2 = g * g
        denominator = 2.0 * g2 + a.sum(axis=(1, 2), keepdims=True) * g2 * g
        safe = np.where(denominator != 0.0, denominator, 1.0)
        alpha = np.where(denominator != 0.0, g2 / safe, 0.0)
        return _weighted_sum(a, (alpha * np.maximum(g, 0.0)).sum(axis=(1, 2)))


@_register
class XGradCAM(CamMethod):
    # Fu et al., "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation
    # of CNNs", BMVC 2020 (arXiv:2008.02312):
    #   w_k = sum_ij (A_kij / sum_ab A_kab) g_kij; raw = sum_k w_k A_k.
    # w_k = 0 for a channel whose activations sum to 0 (its normalised map is undefined).
    name = "xgradcam"

    def raw(self, data: CamInputs) -> np.ndarray:
        a, g = data.activation, _gradient(data)
        total = a.sum(axis=(1, 2))  # (N, k)
        weighted = (a * g).sum(axis=(1, 2))
        safe = np.where(total != 0.0, total, 1.0)
        return _weighted_sum(a, np.where(total != 0.0, weighted / safe, 0.0))


@_register
class HiResCAM(CamMethod):
    # Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of
    # convolutional neural networks", 2020 (arXiv:2011.08891):
    #   raw_ij = sum_k g_kij A_kij (no spatial averaging of the gradient).
    name = "hirescam"

    def raw(self, data: CamInputs) -> np.ndarray:
        return (_gradient(data) * data.activation).sum(axis=-1)


@_register
class LayerCAM(CamMethod):
    # Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for
    # Localization", IEEE TIP 30, 2021: raw_ij = sum_k ReLU(g_kij) A_kij.
    name = "layercam"

    def raw(self, data: CamInputs) -> np.ndarray:
        return (np.maximum(_gradient(data), 0.0) * data.activation).sum(axis=-1)


@_register
class ScoreCAM(CamMethod):
    # Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional
    # Neural Networks", CVPR Workshops 2020 (arXiv:1910.01279):
    #   M_k = s(Up(A_k)) (bilinear to the input size, s = min-max to [0, 1]);
    #   w_k = softmax_k(y(X * M_k)); raw = sum_k w_k A_k.
    # The score y is the target score under the `score` plan (the logit by default,
    # like every method here). The paper weighs by the softmax *probability's* increase
    # over a baseline input, f(X * M_k) - f(X_b); a baseline is the same constant for
    # every channel and the softmax over channels is shift-invariant, so it drops out.
    # Probabilities would squeeze every weight into softmax_k of values in [0, 1] (at
    # most a factor e between channels: nearly uniform weights, a blurred mean map);
    # logits keep the contrast between channels and never saturate.
    # A channel that is constant over the map has no min-max mask (0 / 0): it carries
    # no location, gets weight 0 and costs no forward pass (dead ReLU channels are
    # common in trained networks).
    # max_channels keeps the channels with the highest mean activation per image (as
    # Faster Score-CAM does): the cost is one forward pass per kept channel per image.
    name = "scorecam"
    needs_gradient = False
    needs_masked_forward = True
    scale = "activation"

    def __init__(self, *, max_channels: int | None = None) -> None:
        if max_channels is not None and (
            isinstance(max_channels, bool)
            or not isinstance(max_channels, int | np.integer)
            or max_channels < 1
        ):
            raise InputError(
                f"max_channels must be None (every channel) or an int >= 1. Received: "
                f"max_channels={max_channels!r}."
            )
        self.max_channels = None if max_channels is None else int(max_channels)

    def __repr__(self) -> str:
        return f"ScoreCAM(max_channels={self.max_channels!r})"

    def channels(self, activation: np.ndarray) -> list[np.ndarray]:
        """Per image, the channels that are masked and weighed (non-constant ones, the
        ``max_channels`` highest mean activations first when given)."""
        chosen = []
        for a in activation:  # (h, w, k)
            flat = a.reshape(-1, a.shape[-1])
            varying = np.flatnonzero(flat.max(axis=0) > flat.min(axis=0))
            if self.max_channels is not None and varying.size > self.max_channels:
                order = np.argsort(-flat.mean(axis=0)[varying], kind="stable")
                varying = np.sort(varying[order[: self.max_channels]])
            chosen.append(varying)
        return chosen

    def raw(self, data: CamInputs) -> np.ndarray:
        assert data.masked_scores is not None, "Score-CAM runs masked inputs"
        a, images = data.activation, data.images
        n, h, w, _ = a.shape
        up_rows = bilinear_matrix(h, images.shape[1])
        up_cols = bilinear_matrix(w, images.shape[2])
        chosen = self.channels(a)
        pairs = [(i, int(c)) for i in range(n) for c in chosen[i]]
        scores = np.zeros(len(pairs), np.float64)
        for start in range(0, len(pairs), data.chunk):
            part = pairs[start : start + data.chunk]
            owner = np.array([i for i, _ in part], np.int64)
            maps = np.stack([a[i, :, :, c] for i, c in part])
            masks = np.einsum("Hh,mhw,Ww->mHW", up_rows, maps, up_cols)
            low = masks.min(axis=(1, 2), keepdims=True)
            high = masks.max(axis=(1, 2), keepdims=True)
            masks = (masks - low) / np.where(high > low, high - low, 1.0)
            masked = (images[owner] * masks[..., None]).astype(np.float32)
            scores[start : start + len(part)] = data.masked_scores(masked, owner)
        weights = np.zeros((n, a.shape[-1]), np.float64)
        at = 0
        for i in range(n):
            s = scores[at : at + chosen[i].size]
            at += chosen[i].size
            if s.size:
                e = np.exp(s - s.max())
                weights[i, chosen[i]] = e / e.sum()
        return _weighted_sum(a, weights)


@_register
class EigenCAM(CamMethod):
    # Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal Components",
    # IJCNN 2020 (arXiv:2008.00299): A as an (hw, k) matrix = U S V^T; the map is the
    # projection A v_1 on the first right singular vector. Not centred by default, as
    # in the paper (it factorises A itself): for post-ReLU maps (A >= 0) v_1 can be
    # taken >= 0 (Perron-Frobenius on A^T A), so the map is a positive mix of channels.
    # center=True subtracts each channel's spatial mean first (the principal component
    # of the centred data, as some implementations do). A singular vector's sign is
    # arbitrary: it is fixed so that the map agrees with where the layer is active, a
    # positive inner product with the channel sum sum_k A_k (for A >= 0 uncentred: a
    # positive sum; a centred projection always sums to 0, so its sum cannot decide);
    # where that product is 0, the largest-|value| entry (the first on ties) is positive.
    # Class-agnostic: the map does not depend on the class or the head.
    name = "eigencam"
    needs_gradient = False
    scale = "activation"

    def __init__(self, *, center: bool = False) -> None:
        if not isinstance(center, bool | np.bool_):
            raise InputError(f"center must be True or False. Received: center={center!r}.")
        self.center = bool(center)

    def __repr__(self) -> str:
        return f"EigenCAM(center={self.center!r})"

    def raw(self, data: CamInputs) -> np.ndarray:
        a = data.activation
        n, h, w, k = a.shape
        out = np.full((n, h, w), np.nan)
        for i in range(n):
            m = a[i].reshape(h * w, k)
            if not np.isfinite(m).all():
                continue  # left NaN: the skeleton returns a degenerate zero map
            activity = m.sum(axis=1)
            if self.center:
                m = m - m.mean(axis=0, keepdims=True)
            _, _, vt = np.linalg.svd(m, full_matrices=False)
            projection = m @ vt[0]
            agreement = float(projection @ activity)
            decider = agreement or projection[np.argmax(np.abs(projection))]
            out[i] = (-projection if decider < 0 else projection).reshape(h, w)
        return out


def make_method(method: Any, options: dict[str, Any]) -> CamMethod:
    """The :class:`CamMethod` named ``method`` with ``options``.

    Raises:
        InputError: an unknown method, or an option the method does not take (both
            messages list what is valid), or a bad option value.
    """
    if not isinstance(method, str) or method not in METHODS:
        raise InputError(
            f"Unknown CAM method. Received: method={method!r}. Expected one of {sorted(METHODS)}."
        )
    cls = METHODS[method]
    if not options:  # nothing to check (reading the signature costs ~0.2 ms per call)
        return cls()
    valid = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise InputError(
            f"Unknown option(s) for method {method!r}. Received: {unknown}. Expected "
            + (f"any of {valid}." if valid else "none: this method takes no options.")
        )
    return cls(**options)


def method_options(method: str) -> list[str]:
    """The keyword options ``method`` takes (for messages and docs)."""
    return [
        p.name
        for p in inspect.signature(METHODS[method].__init__).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]


__all__ = ["METHODS", "CamInputs", "CamMethod", "bilinear_matrix", "make_method", "method_options"]
