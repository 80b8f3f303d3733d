"""The one heatmap value every judgment reads: :class:`Heatmaps`, built by
:meth:`Heatmaps.of` from any accepted form, with the one degenerate rule.

NumPy only, like :mod:`convviz_check.types`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConvvizError, InputError, describe_array
from .types import GradCAM


@dataclass(frozen=True, eq=False)
class Heatmaps:
    """The one heatmap value every judgment reads (golden comparison, localization,
    faithfulness, cross-backend agreement), whatever form it was given in.

    Build it with :meth:`Heatmaps.of` from a :class:`GradCAM`, a ``Heatmaps``, a
    mapping with a ``"heatmap"`` entry (and optionally ``"degenerate"``,
    ``"class_index"``, ``"probability"``: a golden's arrays), or a bare ``(N, h, w)`` / ``(h, w)`` array.

    **The degenerate rule** (one rule for every judgment): a map is degenerate when its
    producer said so (a CAM whose class score barely depends on the layer) or when it
    is constant, all zeros included: a constant map ranks no pixel, points nowhere and
    explains nothing, so no metric treats it as a measurement. A degenerate map's
    values are zeros.

    Attributes:
        maps: ``(N, h, w)`` float32, finite; zeros where degenerate.
        degenerate: ``(N,)`` bool.
        class_index: ``(N,)`` int64 when known (a GradCAM, a golden), else None.
        layer, method, target: what made the maps, when known.
        image_shape: ``(H, W)`` of the input images when known, else None.
        probability: ``(N,)`` float32, the model's probability of each map's class
            when known (a GradCAM that recorded it, a golden written with it), else
            None.
    """

    maps: np.ndarray
    degenerate: np.ndarray
    class_index: np.ndarray | None = None
    layer: str | None = None
    method: str | None = None
    target: str | None = None
    image_shape: tuple[int, int] | None = None
    probability: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    def __getitem__(self, i: int | slice) -> Heatmaps:
        idx = slice(i, (i + 1) or None) if isinstance(i, int | np.integer) else i
        return Heatmaps(
            self.maps[idx],
            self.degenerate[idx],
            None if self.class_index is None else self.class_index[idx],
            self.layer,
            self.method,
            self.target,
            self.image_shape,
            None if self.probability is None else self.probability[idx],
        )

    @classmethod
    def of(
        cls,
        value: Any,
        *,
        role: str = "heatmap",
        n: int | None = None,
        error: type[ConvvizError] = InputError,
    ) -> Heatmaps:
        """The heatmaps in ``value`` (see the class docstring for the accepted forms).

        Args:
            value: the maps.
            role: how messages name the value (``"expected"``, ``"cam"``...).
            n: the number of maps expected (one per image), or None for any.
            error: the error class raised for a value that is not a heatmap.

        Raises:
            ``error``: not numeric, not 2-D / 3-D, empty, NaN or inf, or not ``n`` maps.
        """
        if isinstance(value, Heatmaps):
            if n is not None and len(value) != n:
                raise error(f"Expected {n} heatmap(s), one per image. Received: {len(value)}")
            return value
        fields_: dict[str, Any] = {}
        maps: Any
        flagged: Any
        classes: Any
        probability: Any = None
        if isinstance(value, GradCAM):
            maps, flagged, classes = value.heatmap, value.degenerate, value.class_index
            probability = value.probability
            shape = tuple(int(v) for v in value.image_shape)
            fields_ = {
                "layer": value.layer,
                "method": value.method,
                "target": value.target or None,
                # A GradCAM stored without its image shape reads back as (0, 0): unknown.
                "image_shape": shape if len(shape) == 2 and all(shape) else None,
            }
        elif isinstance(value, Mapping):
            if "heatmap" not in value:
                raise error(
                    f"A heatmap given as a mapping needs a 'heatmap' entry. Received: {role} "
                    f"keys={sorted(map(str, value))}"
                )
            maps, flagged, classes, probability = (
                value.get(k) for k in ("heatmap", "degenerate", "class_index", "probability")
            )
        else:
            maps, flagged, classes = value, None, None
        arr = _numeric_maps(maps, role, error)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3 or 0 in arr.shape:
            raise error(
                f"{role} must be non-empty heatmaps (N, h, w) or one (h, w) map. Received: "
                f"{describe_array(role, arr)}"
            )
        count = arr.shape[0]
        if n is not None and count != n:
            raise error(
                f"{role} must hold one map per image ({n}). Received: {describe_array(role, arr)}"
            )
        given = np.zeros(count, bool) if flagged is None else _per_map(flagged, count, role, error)
        flat = arr.reshape(count, -1)
        degenerate = given.astype(bool) | (flat.max(axis=1) == flat.min(axis=1))
        arr = np.where(degenerate[:, None, None], np.float32(0.0), arr).astype(np.float32)
        class_index = None
        if classes is not None:
            class_index = _per_map(classes, count, f"{role} class_index", error).astype(np.int64)
        if probability is not None:
            fields_["probability"] = _probabilities(probability, count, role, error)
        return cls(arr, degenerate, class_index, **fields_)


def _numeric_maps(maps: Any, role: str, error: type[ConvvizError]) -> np.ndarray:
    try:
        arr = np.asarray(maps)
    except Exception as exc:  # noqa: BLE001 - say what was received
        raise error(
            f"{role} must be an array (N, h, w) or a GradCAM. Received: {type(maps).__name__}"
        ) from exc
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise error(
            f"{role} must be a numeric array (N, h, w) or a GradCAM. Received: "
            f"{describe_array(role, arr)}"
        )
    arr = arr.astype(np.float32)
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise error(
            f"{role} contains NaN or inf, so it ranks no pixel. Received: "
            f"{describe_array(role, arr)} with {bad} non-finite value(s)"
        )
    return arr


def _probabilities(value: Any, n: int, role: str, error: type[ConvvizError]) -> np.ndarray:
    """One probability in [0, 1] per map, float32."""
    name = f"{role} probability"
    arr = _per_map(value, n, name, error)
    try:
        out = arr.astype(np.float32)
    except (TypeError, ValueError):
        out = np.full(n, np.nan, np.float32)
    if arr.dtype.kind not in "fiu" or not np.all((out >= 0.0) & (out <= 1.0)):
        raise error(
            f"`{name}` must hold one probability in [0, 1] per heatmap. Received: "
            f"{describe_array(name, arr)} with values {arr[:5].tolist()}"
        )
    return out


def _per_map(value: Any, n: int, name: str, error: type[ConvvizError]) -> np.ndarray:
    arr = np.asarray(value).reshape(-1)
    if arr.shape != (n,):
        raise error(
            f"`{name}` must hold one value per heatmap ({n}). Received: {name}.shape="
            f"{np.shape(value)}"
        )
    return arr
