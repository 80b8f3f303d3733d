"""Robust feature visualization: options, constants and NumPy references.

The chapter's filter patterns (:mod:`convviz_check.explain.filters`) climb the gradient
in pixel space; the result is dominated by high-frequency noise, because a pixel-space
gradient step is white and the network responds strongly to such patterns. Following
Olah, Mordvintsev & Schubert (2017), "Feature Visualization" (Distill) and Mordvintsev,
Pezzotti, Schubert & Olah (2018), "Differentiable Image Parameterizations" (Distill),
the robust ascent changes three things:

- parameterization: the image is the inverse real 2-D FFT of a spectrum whose
  coefficients are scaled by ``1 / max(|f|, 1 / max(H, W)) ** SPECTRUM_DECAY``, so a
  unit step moves low frequencies far more than high ones (a decorrelated, "whitened"
  basis); then a fixed 3x3 colour matrix (:data:`COLOR_SQRT_COV`) maps decorrelated
  channels to RGB, and a sigmoid keeps every pixel inside ``input_range``;
- transforms: every step sees the image padded, jittered, scaled and rotated by a
  random amount (drawn up front from ``numpy.random.default_rng(seed)``), so only
  patterns that survive small changes of position and size are reinforced;
- penalties: a small total-variation term (and optional L1 / L2 terms).

This module holds the options, their checks, the constants and NumPy references of
each piece (the backends compute the same functions with ``keras.ops``;
:mod:`convviz_check.explain.fviz_ascent` does). It imports NumPy only.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ..errors import InputError

PARAMETERIZATIONS = ("pixel", "fft")
OBJECTIVES = ("channel", "neuron")

# Adam on the spectrum (or pixels): 128 steps at 0.2. Measured on the bundled convnet
# (64 px; conv2 and conv3_relu, filters 0-3, TensorFlow CPU; benchmarks/fviz_readability.py
# --sweep prints these): 128 steps at 0.1 reached 77-92% of the activation of 256 steps
# at 0.1, while 128 steps at 0.2 reached 95-102% of it in half the time, with the same
# high-frequency share. Olah et al. (2017) run 512 steps at 0.05 on larger images.
FVIZ_STEPS = 128
FVIZ_LEARNING_RATE = 0.2
ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON = 0.9, 0.999, 1e-8  # Kingma & Ba (2015) defaults
# Standard deviation of the seeded start (before the sigmoid). 0.5, not the 0.01 of
# Olah et al.: a near-uniform grey start left a ReLU channel off everywhere, so it gets
# no gradient at all -- at 0.01, 1 to 4 of conv3_relu's first 4 filters stayed at 0
# (lr 0.05-0.1, 128 steps); at 0.5 every one was excited. The start is a smooth
# (1/f-coloured) random image, the same for every filter.
INIT_STD = 0.5
# 1/f**1 amplitude scaling: natural images have a power spectrum close to 1/f**2
# (amplitude 1/f), so scaling by 1/f makes a white spectrum look like a natural image's.
SPECTRUM_DECAY = 1.0

# Colour decorrelation. The square root of ImageNet's RGB covariance (pixels in [0, 1]):
# U diag(sqrt(lambda)) from the eigen decomposition published for "PCA colour
# augmentation" by Krizhevsky, Sutskever & Hinton (2012) (eigenvalues 0.2175, 0.0188,
# 0.0045; eigenvectors as the columns below), the first column's sign flipped (an
# eigenvector's sign is arbitrary) so that the first decorrelated channel is brightness.
# Olah et al. (2017) use the same matrix (to two decimals) for their colour
# decorrelation. It is divided by its largest column norm so the brightness channel
# has unit gain.
_EIGVAL = np.array([0.2175, 0.0188, 0.0045])
_EIGVEC = np.array(
    [
        [0.5675, 0.7192, 0.4009],
        [0.5808, -0.0045, -0.8140],
        [0.5836, -0.6948, 0.4203],
    ]
)
_SQRT_COV = _EIGVEC * np.sqrt(_EIGVAL)[None, :]
COLOR_SQRT_COV = (_SQRT_COV / np.linalg.norm(_SQRT_COV, axis=0).max()).astype(np.float32)

# Transform ranges of the robust preset. Scale and rotation are Olah et al.'s (2017)
# ranges (x0.9 to x1.1, -10 to +10 degrees); pad and jitter are 1/16 of the image side
# (4 px at the bundled models' 64 px, 8 px at 128 px as in their jitter of 8): a
# choice scaled from theirs, not tuned here.
PRESET_SCALE = (0.9, 1.1)
PRESET_ROTATE = 10.0  # degrees, either way
PRESET_SHIFT_FRACTION = 1 / 16
# Total variation weight of the preset: 0.05 per unit of mean |neighbour difference|
# (pixels as fractions of input_range), a light touch. Measured on the bundled convnet
# (conv2, conv3_relu, filters 0-3, 128 steps at 0.1): against no penalty it lowered the
# high-frequency share by up to 0.025 and the activation reached by at most 2%; a weight
# of 0.5 lowered the share by up to 0.16 but cost conv2's filter 2 18% of its activation.
PRESET_TV = 0.05


@dataclass(frozen=True)
class Transforms:
    """Random transforms applied before each step's forward pass.

    Attributes:
        pad: pixels of mid-range grey added on each side before sampling.
        jitter: largest shift in pixels, either way, on each axis (whole pixels).
        scale: ``(low, high)`` of the uniform random zoom factor.
        rotate: largest rotation in degrees, either way.
    """

    pad: int = 0
    jitter: int = 0
    scale: tuple[float, float] = (1.0, 1.0)
    rotate: float = 0.0

    @property
    def identity(self) -> bool:
        return self.pad == 0 and self.jitter == 0 and self.scale == (1.0, 1.0) and self.rotate == 0


@dataclass(frozen=True)
class Penalties:
    """Weights of the regularizers subtracted from the objective (per image).

    Attributes:
        tv: total variation: mean over pixels of ``|x[y+1,x] - x[y,x]| + |x[y,x+1] -
            x[y,x]|`` summed over channels, pixels as fractions of ``input_range``.
        l1: mean of ``|x - 0.5|`` (distance from mid-range grey).
        l2: mean of ``(x - 0.5) ** 2``.
        diversity: weight of each image's mean cosine similarity to the other images of
            its batch, between the Gram matrices of the layer's activations (Olah et
            al. 2017). With it, the images of a batch start from different draws and
            push each other apart: ``filters=[k] * n`` gives ``n`` variants of filter
            ``k`` (a pattern then depends on its batch).
    """

    tv: float = 0.0
    l1: float = 0.0
    l2: float = 0.0
    diversity: float = 0.0


@dataclass(frozen=True)
class FvizConfig:
    """One resolved configuration of the robust ascent (a compile-cache key)."""

    parameterization: str
    decorrelate: bool
    transforms: Transforms
    penalties: Penalties
    objective: str


def preset_transforms(height: int, width: int) -> Transforms:
    """The robust preset's transforms for an ``height x width`` image: pad and jitter
    of 1/16 of the shorter side (at least 1 px), scale 0.9-1.1, rotation +-10 degrees."""
    shift = max(1, round(min(height, width) * PRESET_SHIFT_FRACTION))
    return Transforms(pad=shift, jitter=shift, scale=PRESET_SCALE, rotate=PRESET_ROTATE)


def _number(value: Any, name: str, expected: str, low: float = 0.0) -> float:
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < low
    ):
        raise InputError(f"{name} must be {expected}. Received: {name}={value!r}.")
    return float(value)


def _int(value: Any, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise InputError(f"{name} must be an int >= 0. Received: {name}={value!r}.")
    return int(value)


def _fields_of(value: Any, cls: type, name: str) -> dict[str, Any]:
    known = [f.name for f in fields(cls)]
    if isinstance(value, cls):
        return {k: getattr(value, k) for k in known}
    if not isinstance(value, Mapping):
        raise InputError(
            f"{name} must be None, False, a {cls.__name__} or a dict with keys {known}. "
            f"Received: {name}={value!r}."
        )
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise InputError(
            f"Unknown {name} key(s) {unknown}. Received: {name}={dict(value)!r}. "
            f"Expected keys among {known}."
        )
    return dict(value)


def resolve_transforms(value: Any, preset: bool, height: int, width: int) -> Transforms:
    """``None``: the preset's (robust) or none; ``False``: none; a dict or
    :class:`Transforms`: those (missing keys take the no-op values)."""
    if value is None:
        return preset_transforms(height, width) if preset else Transforms()
    if value is False:
        return Transforms()
    got = _fields_of(value, Transforms, "transforms")
    scale = got.get("scale", (1.0, 1.0))
    try:
        lo, hi = (float(s) for s in scale)
    except (TypeError, ValueError):
        raise InputError(
            f"transforms scale must be a pair (low, high). Received: scale={scale!r}."
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise InputError(
            f"transforms scale must be finite with 0 < low <= high. Received: scale={scale!r}."
        )
    rotate = _number(got.get("rotate", 0.0), "rotate", "a number of degrees in [0, 180]")
    if rotate > 180:
        raise InputError(f"rotate must be in [0, 180] degrees. Received: rotate={rotate!r}.")
    return Transforms(
        pad=_int(got.get("pad", 0), "pad"),
        jitter=_int(got.get("jitter", 0), "jitter"),
        scale=(lo, hi),
        rotate=rotate,
    )


def resolve_penalties(value: Any, preset: bool) -> Penalties:
    """``None``: the preset's (a TV of :data:`PRESET_TV`) or none; ``False``: none; a
    dict or :class:`Penalties`: those weights (missing keys 0)."""
    if value is None:
        return Penalties(tv=PRESET_TV) if preset else Penalties()
    if value is False:
        return Penalties()
    got = _fields_of(value, Penalties, "penalties")
    return Penalties(**{k: _number(v, k, "a finite weight >= 0", 0.0) for k, v in got.items()})


def resolve_config(
    parameterization: Any,
    decorrelate: Any,
    transforms: Any,
    penalties: Any,
    objective: Any,
    height: int,
    width: int,
) -> FvizConfig | None:
    """The robust configuration asked for, or ``None`` for the chapter's plain ascent
    (pixel parameterization and every other option left at its default).

    Raises:
        InputError: an unknown parameterization or objective, a bad transform or
            penalty value.
    """
    if parameterization not in PARAMETERIZATIONS:
        raise InputError(
            f"Unknown parameterization. Received: parameterization={parameterization!r}. "
            f"Expected one of {PARAMETERIZATIONS}."
        )
    name = objective_name(objective)
    if decorrelate is not None and not isinstance(decorrelate, bool):
        raise InputError(
            f"decorrelate must be None, True or False. Received: decorrelate={decorrelate!r}."
        )
    preset = parameterization == "fft"
    plain = (
        not preset
        and decorrelate is None
        and transforms is None
        and penalties is None
        and name == "channel"
    )
    if plain:
        return None
    return FvizConfig(
        parameterization=parameterization,
        decorrelate=preset if decorrelate is None else decorrelate,
        transforms=resolve_transforms(transforms, preset, height, width),
        penalties=resolve_penalties(penalties, preset),
        objective=name,
    )


def objective_name(objective: Any) -> str:
    """``"channel"``, ``"neuron"``, or ``"direction"`` for an array of directions."""
    if isinstance(objective, str):
        if objective not in OBJECTIVES:
            raise InputError(
                f"Unknown objective. Received: objective={objective!r}. Expected one of "
                f"{OBJECTIVES} or an array of directions (C,) / (F, C)."
            )
        return objective
    if isinstance(objective, list | tuple | np.ndarray):
        return "direction"
    raise InputError(
        f"objective must be a name {OBJECTIVES} or an array of directions (C,) / (F, C). "
        f"Received: objective={objective!r} (type {type(objective).__name__})."
    )


def resolve_directions(objective: Any, filters: Any, channels: int, layer: str) -> np.ndarray:
    """``(F, C)`` float32 unit rows of a direction objective (one pattern per row).

    Raises:
        InputError: ``filters`` given (a direction makes its own pattern), a shape other
            than ``(C,)`` / ``(F, C)`` with ``C`` the layer's channels, non-finite or zero
            rows.
    """
    if filters is not None:
        raise InputError(
            "A direction objective makes one pattern per direction, not per filter. "
            f"Received: filters={filters!r}. Expected filters=None."
        )
    try:
        d = np.asarray(objective, dtype=np.float64)
    except (TypeError, ValueError):
        d = np.empty((0, 0))
    if d.ndim == 1:
        d = d[None, :]
    if d.ndim != 2 or d.shape[0] == 0 or d.shape[1] != channels or not np.isfinite(d).all():
        raise InputError(
            f"A direction objective must be finite of shape (C,) or (F, C) with C = "
            f"{channels}, the channels of layer {layer!r}. Received: objective of shape "
            f"{np.shape(objective)}."
        )
    norms = np.linalg.norm(d, axis=1)
    if (norms == 0).any():
        raise InputError(
            f"A direction must not be zero. Received: zero rows {np.flatnonzero(norms == 0)}."
        )
    return (d / norms[:, None]).astype(np.float32)


# --- the parameterization ---------------------------------------------------------


def spectrum_scale(height: int, width: int, decay: float = SPECTRUM_DECAY) -> np.ndarray:
    """``(H, W // 2 + 1)`` float32 amplitude scale of the rfft2 spectrum:
    ``1 / max(|f|, 1 / max(H, W)) ** decay`` with ``|f|`` in cycles per pixel, divided by
    its root mean square so the image's overall contrast does not depend on the size."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    freq = np.sqrt(fy * fy + fx * fx)
    scale = 1.0 / np.maximum(freq, 1.0 / max(height, width)) ** decay
    return (scale / np.sqrt(np.mean(scale * scale))).astype(np.float32)


def spectrum_to_image(spectrum: np.ndarray, width: int) -> np.ndarray:
    """NumPy reference of the FFT parameterization before colour and sigmoid.

    Args:
        spectrum: ``(B, C, H, width // 2 + 1, 2)`` real and imaginary parts.
        width: the image width (``W // 2 + 1`` bins serve an even and an odd width).

    Returns:
        ``(B, H, W, C)`` float32: ``numpy.fft.irfft2(spectrum_scale * spectrum,
        norm="ortho")``, channels last.
    """
    h = spectrum.shape[2]
    z = (spectrum[..., 0] + 1j * spectrum[..., 1]) * spectrum_scale(h, width)
    img = np.fft.irfft2(z, s=(h, width), norm="ortho")
    return np.ascontiguousarray(np.transpose(img, (0, 2, 3, 1))).astype(np.float32)


def irfft2_bases(height: int, width: int) -> tuple[np.ndarray, ...]:
    """Real matrices computing ``irfft2(X, norm="ortho")`` with four matrix products.

    ``Y = Ch @ X`` (complex, along H) then the real inverse along W:
    ``image = (Ch Xr - Sh Xi) Cw + (Sh Xr + Ch Xi) Sw``. Matrix products run the
    same on every backend (no complex dtype needed) and are exact to float32 rounding.

    Returns:
        ``(Ch, Sh, Cw, Sw)`` float32 of shapes ``(H, H), (H, H), (K, W), (K, W)``,
        ``K = W // 2 + 1``.
    """
    k = width // 2 + 1
    hh = np.arange(height)
    angle_h = 2 * np.pi * np.outer(hh, hh) / height
    ch = np.cos(angle_h) / np.sqrt(height)
    sh = np.sin(angle_h) / np.sqrt(height)
    kk = np.arange(k)[:, None]
    ww = np.arange(width)[None, :]
    # Weight 2 for bins with a mirror image, 1 for DC and (even widths) Nyquist; numpy's
    # irfft ignores the imaginary part of those two, and so does sin(0) = sin(pi w) = 0.
    weight = np.full((k, 1), 2.0)
    weight[0] = 1.0
    if width % 2 == 0:
        weight[-1] = 1.0
    angle_w = 2 * np.pi * kk * ww / width
    cw = weight * np.cos(angle_w) / np.sqrt(width)
    sw = -weight * np.sin(angle_w) / np.sqrt(width)
    return tuple(m.astype(np.float32) for m in (ch, sh, cw, sw))


def to_unit(raw: np.ndarray, decorrelate: bool) -> np.ndarray:
    """Colour matrix (3 channels, when ``decorrelate``) then the sigmoid: ``(B, H, W,
    C)`` values in ``(0, 1)``, the fraction of ``input_range``."""
    x = raw @ COLOR_SQRT_COV.T if decorrelate and raw.shape[-1] == 3 else raw
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def initial_params(
    parameterization: str,
    batch: int,
    height: int,
    width: int,
    channels: int,
    seed: int,
    distinct: bool = False,
) -> np.ndarray:
    """The seeded start: normal(0, :data:`INIT_STD`), the same for every image of the
    batch (so a filter's pattern does not depend on which others were asked for), or
    one draw per image with ``distinct`` (the diversity term).
    ``(B, C, H, W // 2 + 1, 2)`` for "fft", ``(B, H, W, C)`` for "pixel"."""
    rng = np.random.default_rng(seed)
    if parameterization == "fft":
        shape: tuple[int, ...] = (channels, height, width // 2 + 1, 2)
    else:
        shape = (height, width, channels)
    if distinct:
        return rng.normal(0.0, INIT_STD, size=(batch, *shape)).astype(np.float32)
    one = rng.normal(0.0, INIT_STD, size=shape).astype(np.float32)
    return np.broadcast_to(one, (batch, *one.shape)).copy()


def params_to_unit(config: FvizConfig, params: np.ndarray, width: int) -> np.ndarray:
    """NumPy reference of the whole parameterization: ``(B, H, W, C)`` in ``(0, 1)``."""
    raw = spectrum_to_image(params, width) if config.parameterization == "fft" else params
    return to_unit(raw, config.decorrelate)


# --- transforms -------------------------------------------------------------------

SCHEDULE_COLUMNS = ("scale", "angle_radians", "shift_y", "shift_x")


def transform_schedule(transforms: Transforms, steps: int, seed: int) -> np.ndarray:
    """``(steps, 4)`` float32 per-step draws ``(scale, angle in radians, shift y, shift
    x)`` from ``numpy.random.default_rng(seed + 1)`` (another stream than the start's),
    one row per step shared by every image of the batch. Shifts are whole pixels."""
    rng = np.random.default_rng(seed + 1)
    lo, hi = transforms.scale
    scale = rng.uniform(lo, hi, steps) if hi > lo else np.full(steps, lo)
    max_angle = math.radians(transforms.rotate)
    angle = rng.uniform(-max_angle, max_angle, steps) if max_angle > 0 else np.zeros(steps)
    j = transforms.jitter
    shifts = rng.integers(-j, j + 1, size=(steps, 2)) if j > 0 else np.zeros((steps, 2))
    return np.column_stack([scale, angle, shifts]).astype(np.float32)


def sample_coordinates(
    height: int, width: int, pad: int, row: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Source coordinates ``(ys, xs)``, each ``(H * W,)`` float32, in the padded image
    for output pixel ``(y, x)``: the output centre maps to the padded centre plus the
    shift, and offsets from the centre are rotated by ``angle`` and divided by ``scale``
    (a zoom by ``scale``)."""
    scale, angle, dy, dx = (float(v) for v in row)
    gy, gx = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    oy = gy.reshape(-1) - (height - 1) / 2
    ox = gx.reshape(-1) - (width - 1) / 2
    cos, sin = math.cos(angle), math.sin(angle)
    ys = (cos * oy - sin * ox) / scale + (height - 1) / 2 + pad + dy
    xs = (sin * oy + cos * ox) / scale + (width - 1) / 2 + pad + dx
    return ys.astype(np.float32), xs.astype(np.float32)


def pad_image(unit: np.ndarray, pad: int) -> np.ndarray:
    """``(B, H + 2 pad, W + 2 pad, C)``: mid-range grey (0.5) around the image."""
    return np.pad(unit, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=0.5)


def bilinear_sample(padded: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear samples ``(B, N, C)`` of ``padded`` at ``(ys, xs)``; coordinates outside
    are clamped to the edge (the grey padding)."""
    hp, wp = padded.shape[1], padded.shape[2]
    y0 = np.floor(ys)
    x0 = np.floor(xs)
    wy = (ys - y0)[None, :, None]
    wx = (xs - x0)[None, :, None]

    def at(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        yi = np.clip(yy, 0, hp - 1).astype(np.int64)
        xi = np.clip(xx, 0, wp - 1).astype(np.int64)
        return padded[:, yi, xi, :]

    top = at(y0, x0) * (1 - wx) + at(y0, x0 + 1) * wx
    bottom = at(y0 + 1, x0) * (1 - wx) + at(y0 + 1, x0 + 1) * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)


def transform_image(unit: np.ndarray, transforms: Transforms, row: np.ndarray) -> np.ndarray:
    """NumPy reference of one step's transform of ``(B, H, W, C)`` unit images."""
    b, h, w, c = unit.shape
    ys, xs = sample_coordinates(h, w, transforms.pad, row)
    out = bilinear_sample(pad_image(unit, transforms.pad), ys, xs)
    return out.reshape(b, h, w, c)


# --- penalties --------------------------------------------------------------------


def total_variation(unit: np.ndarray) -> np.ndarray:
    """Per image ``(B,)``: mean over pixels of the absolute differences to the lower and
    right neighbours, summed over channels (divided by ``H * W``)."""
    h, w = unit.shape[1], unit.shape[2]
    dy = np.abs(np.diff(unit, axis=1)).sum(axis=(1, 2, 3))
    dx = np.abs(np.diff(unit, axis=2)).sum(axis=(1, 2, 3))
    return ((dy + dx) / (h * w)).astype(np.float32)


def l1_penalty(unit: np.ndarray) -> np.ndarray:
    """Per image ``(B,)``: mean of ``|x - 0.5|``."""
    return np.abs(unit - 0.5).mean(axis=(1, 2, 3)).astype(np.float32)


def gram_similarity(acts: np.ndarray) -> np.ndarray:
    """Per image ``(B,)``: the mean cosine similarity of its Gram matrix ``A^T A / (h w)``
    (``A``: its ``(h w, C)`` activations) to the other images' (0 for a batch of one)."""
    b, h, w, c = acts.shape
    a = acts.reshape(b, h * w, c).astype(np.float64)
    g = np.einsum("bnc,bnd->bcd", a, a).reshape(b, -1) / (h * w)
    g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    sim = g @ g.T
    return ((sim.sum(axis=1) - np.diag(sim)) / max(b - 1, 1)).astype(np.float32)


def l2_penalty(unit: np.ndarray) -> np.ndarray:
    """Per image ``(B,)``: mean of ``(x - 0.5) ** 2``."""
    return np.square(unit - 0.5).mean(axis=(1, 2, 3)).astype(np.float32)


__all__ = [
    "COLOR_SQRT_COV",
    "FvizConfig",
    "Penalties",
    "Transforms",
    "bilinear_sample",
    "gram_similarity",
    "initial_params",
    "irfft2_bases",
    "l1_penalty",
    "l2_penalty",
    "pad_image",
    "params_to_unit",
    "preset_transforms",
    "resolve_config",
    "resolve_directions",
    "sample_coordinates",
    "spectrum_scale",
    "spectrum_to_image",
    "total_variation",
    "transform_image",
    "transform_schedule",
]
