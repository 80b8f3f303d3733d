"""Spectral statistics of images (NumPy only): how much of an image's variation is
fine-grained, pixel-level detail. Used to measure the readability of feature
visualizations (docs/feature-visualization.md)."""

from __future__ import annotations

import numpy as np

from .errors import InputError, describe_array

# "High" frequencies: radial frequency above half the Nyquist frequency, i.e. above
# 0.25 cycles per pixel (periods shorter than 4 pixels).
HIGH_FREQUENCY_CUTOFF = 0.25


def high_frequency_share(image: np.ndarray, cutoff: float = HIGH_FREQUENCY_CUTOFF) -> float:
    """Share of an image's spectral energy above ``cutoff`` cycles per pixel.

    Each channel's mean is removed (the DC term carries no pattern), the power
    spectrum ``|FFT2|**2`` is summed over channels, and the energy at radial frequencies
    ``sqrt(fy**2 + fx**2) > cutoff`` is divided by the total. Lower means smoother: white
    noise gives about 0.80 at the default cutoff (the share of the frequency square
    outside the circle of radius 0.25), a natural photograph a few percent.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` finite values.
        cutoff: in cycles per pixel, in ``(0, 0.5 * sqrt(2))``; default 0.25 (half the
            Nyquist frequency).

    Returns:
        The share in ``[0, 1]``; 0.0 for a constant image.

    Raises:
        InputError: not 2-D/3-D, empty or non-finite values, or a cutoff out of range.

    Example:
        >>> x = np.indices((8, 8)).sum(0) % 2  # a checkerboard: all at Nyquist
        >>> high_frequency_share(x)
        1.0
    """
    a = np.asarray(image, dtype=np.float64)
    if a.ndim not in (2, 3) or a.size == 0 or not np.isfinite(a).all():
        raise InputError(
            "image must be a non-empty finite (H, W) or (H, W, C) array. "
            f"Received: {describe_array('image', image)}."
        )
    if not 0 < float(cutoff) < 0.5 * np.sqrt(2):
        raise InputError(
            f"cutoff must be in (0, {0.5 * np.sqrt(2):.3f}) cycles per pixel. "
            f"Received: cutoff={cutoff!r}."
        )
    if a.ndim == 2:
        a = a[:, :, None]
    a = a - a.mean(axis=(0, 1), keepdims=True)
    power = (np.abs(np.fft.fft2(a, axes=(0, 1))) ** 2).sum(axis=2)
    total = float(power.sum())
    if total <= 0.0:
        return 0.0
    fy = np.fft.fftfreq(a.shape[0])[:, None]
    fx = np.fft.fftfreq(a.shape[1])[None, :]
    high = np.sqrt(fy * fy + fx * fx) > cutoff
    return float(power[high].sum() / total)


__all__ = ["HIGH_FREQUENCY_CUTOFF", "high_frequency_share"]
