"""The one currency between computing, golden files, workers, the export route and
reports: an :class:`Artifact` (kind, arrays, attributes).

:meth:`Artifact.from_value` takes what a user checks (an array, a dict of arrays, a
:class:`~convviz_check.types.GradCAM`); :meth:`Artifact.to_value` gives it back;
:meth:`Artifact.encode` / :meth:`Artifact.decode` are its bytes on disk (golden
files, worker transport and exports all use them). NumPy only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import regions as regions_lib
from . import storage
from .errors import InputError, StorageError, describe_array
from .types import KINDS, LAYOUTS, Box, GradCAM

# The arrays of a GradCAM, in stored order.
GRADCAM_ARRAYS = ("heatmap", "raw", "class_index", "score", "degenerate")
# A GradCAM that knows the model's probability of each explained class stores it after
# GRADCAM_ARRAYS ((N,) float32); goldens written without it (older ones, callable
# targets) hold no such entry and read back as ``probability=None``, their bytes as
# they were. Never part of the compared maps: the retrain profile reads it to judge
# class agreement on the images the golden's model was confident about.
PROBABILITY = "probability"
# A heatmap check given object boxes stores them next to its maps (``(N, 4)`` int64,
# y0, x0, y1, x1 in input-image pixels): part of the golden's content and sha256, so
# changed boxes are a changed golden. Never part of the compared value.
BOXES = "boxes"
Value = np.ndarray | dict[str, np.ndarray] | GradCAM


@dataclass
class Artifact:
    """One computed result, as stored.

    Attributes:
        kind: ``"activation"``, ``"heatmap"`` or ``"pattern"`` (how it is compared).
        layout: ``"array"`` (one array under ``"value"``), ``"activations"`` (layer ->
            array) or ``"gradcam"`` (the arrays of a GradCAM).
        arrays: entry name -> array, as stored.
        attrs: JSON-ready facts that are not arrays (the GradCAM's layer, score kind,
            image shape, method and target; the filter-pattern layer...).
    """

    kind: str
    layout: str
    arrays: dict[str, np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.layout not in LAYOUTS:
            raise InputError(
                f"Unknown artifact. Received: kind={self.kind!r}, layout={self.layout!r}; "
                f"expected kind in {KINDS} and layout in {LAYOUTS}."
            )

    # ------------------------------------------------------------------ value <-> artifact
    @classmethod
    def from_value(
        cls,
        value: Any,
        kind: str | None = None,
        *,
        dtype: str | np.dtype[Any] | None = None,
        layers: Iterable[str] | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> Artifact:
        """Turn a checked value into an artifact (arrays as they will be stored).

        Args:
            value: an array, a dict of arrays (activations) or a ``GradCAM``.
            kind: the kind; inferred for dicts, GradCAM and 2-D/3-D arrays.
            dtype: storage dtype of floating arrays: ``"float32"`` (default) or
                ``"float16"`` (halves large activation goldens; values must fit).
            layers: for a dict, the subset of keys to keep (in the dict's order).
            attrs: extra facts to keep with the arrays.

        Example:
            >>> a = Artifact.from_value({"conv": np.ones((1, 4, 4, 2))}, dtype="float16")
            >>> a.kind, a.layout, a.arrays["conv"].dtype
            ('activation', 'activations', dtype('float16'))
        """
        kind = infer_kind(value, kind)
        store = _storage_dtype(dtype)
        if isinstance(value, Mapping):
            layout, arrays, own = "activations", _activation_arrays(value, store, layers), {}
        elif isinstance(value, GradCAM):
            _no_layers(layers, "a GradCAM")
            layout, arrays, own = "gradcam", _gradcam_arrays(value, store), _gradcam_attrs(value)
        else:
            _no_layers(layers, "an array")
            layout, arrays, own = "array", {"value": _as_stored(value, store, "value")}, {}
        return cls(kind, layout, arrays, {**own, **dict(attrs or {})})

    def to_value(self) -> Value:
        """The value to compare. Arrays and activations keep their storage dtype (so a
        float16 golden widens its bounds by float16 rounding); GradCAM fields are
        widened to float32."""
        if self.layout == "array":
            return self.arrays["value"]
        if self.layout == "activations":
            return dict(self.arrays)
        a = {k: _widen(self.arrays[k]) for k in GRADCAM_ARRAYS}
        return GradCAM(
            heatmap=a["heatmap"],
            raw=a["raw"],
            class_index=a["class_index"],
            score=a["score"],
            score_kind=str(self.attrs.get("score_kind", "")),
            layer=str(self.attrs.get("layer", "")),
            degenerate=a["degenerate"].astype(bool),
            image_shape=_image_shape(self.attrs.get("image_shape", (0, 0))),
            # goldens written before the CAM methods existed hold Grad-CAM maps
            method=str(self.attrs.get("method", "gradcam")),
            target=str(self.attrs.get("target", "")),
            probability=(_widen(self.arrays[PROBABILITY]) if PROBABILITY in self.arrays else None),
        )

    # ------------------------------------------------------------------ object boxes
    @property
    def boxes(self) -> np.ndarray | None:
        """The object boxes stored with a heatmap (``(N, 4)`` int64), or None."""
        return self.arrays.get(BOXES)

    def with_boxes(self, boxes: np.ndarray | None) -> Artifact:
        """A copy holding ``boxes`` (validated by the caller: ``metrics.check_boxes``)
        as its :data:`BOXES` entry, after the value's arrays; None removes them."""
        arrays = {k: v for k, v in self.arrays.items() if k != BOXES}
        if boxes is not None:
            if self.kind != "heatmap" or self.layout not in ("array", "gradcam"):
                raise InputError(
                    "Object boxes go with heatmaps (a GradCAM or an (N, h, w) array). "
                    f"Received: kind={self.kind!r}, layout={self.layout!r}."
                )
            arrays[BOXES] = np.ascontiguousarray(boxes, dtype=np.int64)
        return Artifact(self.kind, self.layout, arrays, dict(self.attrs))

    # ------------------------------------------------------------------ suspect regions
    @property
    def regions(self) -> dict[str, Box] | None:
        """The suspect regions stored with a heatmap (name -> Box), or None."""
        return regions_lib.from_attr(self.attrs.get(regions_lib.ATTR), StorageError)

    def with_regions(self, regions: Mapping[str, Box] | None) -> Artifact:
        """A copy holding ``regions`` (checked by the caller:
        :func:`convviz_check.regions.check_regions`) as its ``regions`` attribute,
        after the other attributes; None removes them. An attribute, not an array: a
        golden without regions keeps its bytes."""
        attrs = {k: v for k, v in self.attrs.items() if k != regions_lib.ATTR}
        if regions:
            if self.kind != "heatmap" or self.layout not in ("array", "gradcam"):
                raise InputError(
                    "Suspect regions go with heatmaps (a GradCAM or an (N, h, w) array). "
                    f"Received: kind={self.kind!r}, layout={self.layout!r}."
                )
            attrs[regions_lib.ATTR] = regions_lib.to_attr(regions)
        return Artifact(self.kind, self.layout, dict(self.arrays), attrs)

    # ------------------------------------------------------------------ facts
    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays.values()))

    def content_sha256(self) -> str:
        """sha256 of the stored array contents (names, dtypes, shapes, bytes)."""
        return storage.content_sha256(self.arrays)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(int(d) for d in v.shape) for k, v in self.arrays.items()}

    # ------------------------------------------------------------------ bytes
    def encode(self) -> bytes:
        """The ``.npz`` bytes (activations always by index: layer names may hold ``/``)."""
        return storage.encode_npz(self.arrays, indexed=self.layout == "activations")

    @classmethod
    def decode(
        cls, arrays: dict[str, np.ndarray], kind: str, layout: str, attrs: Mapping[str, Any]
    ) -> Artifact:
        """Rebuild an artifact from stored arrays, checking they fit the layout.

        Raises:
            StorageError: the entries do not match what the layout needs.
        """
        boxes = BOXES in arrays and kind == "heatmap" and layout in ("array", "gradcam")
        value_arrays = {k: v for k, v in arrays.items() if not (boxes and k == BOXES)}
        if boxes and (arrays[BOXES].dtype != np.int64 or arrays[BOXES].ndim != 2):
            raise StorageError(
                f"The {BOXES!r} entry holds (N, 4) int64 boxes. Received: "
                f"{describe_array(BOXES, arrays[BOXES])}."
            )
        if layout == "gradcam" and set(value_arrays) - {PROBABILITY} != set(GRADCAM_ARRAYS):
            raise StorageError(
                f"A GradCAM artifact holds {sorted(GRADCAM_ARRAYS)} (and optionally "
                f"{PROBABILITY!r}). Received entries {sorted(arrays)}."
            )
        if layout == "gradcam" and PROBABILITY in value_arrays:
            _check_probability(value_arrays[PROBABILITY], value_arrays["score"])
        if layout == "gradcam":
            _check_gradcam_attrs(attrs)
        regions_lib.from_attr(attrs.get(regions_lib.ATTR), StorageError)
        # A filter-pattern golden may keep its response record (pattern_response.py).
        record = [k for k in value_arrays if kind == "pattern" and k.startswith("response_")]
        if layout == "array" and [k for k in value_arrays if k not in record] != ["value"]:
            raise StorageError(
                f"An array artifact holds one entry 'value'. Received: {sorted(arrays)}."
            )
        if kind not in KINDS or layout not in LAYOUTS:
            raise StorageError(
                f"Unknown artifact. Received: kind={kind!r}, layout={layout!r}; expected "
                f"kind in {KINDS} and layout in {LAYOUTS}."
            )
        return cls(kind, layout, dict(arrays), dict(attrs))


def comparable(artifact: Artifact) -> Value:
    """The value every comparison of ``artifact`` reads, the same on every route
    (golden checks, ``convviz-check golden diff``, cross-backend agreement), so one
    table of bounds means one thing.

    Activations and heatmaps: :meth:`Artifact.to_value`. Filter patterns: as they are
    shown, and as their bounds were calibrated (``tolerances.TABLE``): each pattern
    standardized to uint8 with its borders cropped (:func:`convviz_check.render.deprocess_image`);
    raw float patterns have no fixed range and gradient ascent scales them freely. A uint8
    pattern is an image already and is compared as it is.

    Example:
        >>> a = Artifact.from_value(np.linspace(0, 1, 2 * 8 * 8 * 3).reshape(2, 8, 8, 3), "pattern")
        >>> comparable(a).dtype, comparable(a).shape
        (dtype('uint8'), (2, 6, 6, 3))
    """
    value = artifact.to_value()
    if artifact.kind != "pattern" or artifact.layout != "array":
        return value
    return _as_shown(artifact.arrays["value"])


def _as_shown(patterns: np.ndarray) -> np.ndarray:
    from .render import deprocess_image

    if patterns.dtype == np.uint8 or patterns.size == 0:
        return patterns
    if patterns.ndim == 4:  # (F, H, W, C)
        return np.stack([deprocess_image(p) for p in patterns])
    if patterns.ndim == 3:  # one (H, W, C)
        return deprocess_image(patterns)
    if patterns.ndim == 2:  # one (H, W)
        return deprocess_image(patterns[..., None])[..., 0]
    return patterns  # compare refuses other ranks, naming them


def _check_gradcam_attrs(attrs: Mapping[str, Any]) -> None:
    shape = attrs.get("image_shape", (0, 0))
    ok = (
        isinstance(shape, list | tuple)
        and len(shape) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in shape)
        and isinstance(attrs.get("layer", ""), str)
        and isinstance(attrs.get("score_kind", ""), str)
        and isinstance(attrs.get("method", ""), str)
        and isinstance(attrs.get("target", ""), str)
    )
    if not ok:
        raise StorageError(
            "A GradCAM artifact's attrs hold image_shape (two ints), layer, score_kind, "
            f"method and target (str). Received: {dict(attrs)!r}."
        )


def infer_kind(value: Any, kind: str | None) -> str:
    """The kind of ``value``: given, or inferred for dicts (activation), GradCAM
    (heatmap) and 2-D/3-D arrays (heatmaps); a 4-D array needs ``kind``."""
    if kind is not None:
        if kind not in KINDS:
            raise InputError(f"Unknown kind. Received: kind={kind!r}; expected one of {KINDS}.")
        if isinstance(value, Mapping) and kind != "activation":
            raise InputError(
                f"A dict of arrays is a set of activations. Received: kind={kind!r} for a dict."
            )
        if isinstance(value, GradCAM) and kind != "heatmap":
            raise InputError(f"A GradCAM is a heatmap. Received: kind={kind!r} for a GradCAM.")
        return kind
    if isinstance(value, Mapping):
        return "activation"
    if isinstance(value, GradCAM):
        return "heatmap"
    arr = np.asarray(value)
    if arr.ndim in (2, 3):
        return "heatmap"
    raise InputError(
        "kind= is required for this value: a bare array of 4 (or 1, or 5+) dimensions may "
        "be activations or filter patterns. Pass kind='activation', 'heatmap' or 'pattern'. "
        f"Received: {describe_array('value', arr)}"
    )


def _no_layers(layers: Iterable[str] | None, what: str) -> None:
    if layers is not None:
        raise InputError(f"layers= applies to a dict of activations, not to {what}.")


def _activation_arrays(
    value: Mapping[str, Any], store: np.dtype[Any], layers: Iterable[str] | None
) -> dict[str, np.ndarray]:
    names = list(value)
    if layers is not None:
        wanted = list(layers)
        unknown = [n for n in wanted if n not in value]
        if unknown:
            raise InputError(
                f"layers= names keys the value does not have. Received: {unknown}; "
                f"expected any of {names}."
            )
        names = [n for n in names if n in set(wanted)]
    if not names:
        raise InputError("A dict of activations needs at least one array. Received: {}.")
    for n in names:
        # NUL cannot be stored: NumPy strips trailing NULs from the names entry
        if not isinstance(n, str) or not n or "\x00" in n:
            raise InputError(f"Activation names must be non-empty str without NUL. Received: {n!r}")
    return {n: _as_stored(value[n], store, f"value[{n!r}]") for n in names}


def _gradcam_arrays(cam: GradCAM, store: np.dtype[Any]) -> dict[str, np.ndarray]:
    arrays = {
        "heatmap": _as_stored(cam.heatmap, store, "cam.heatmap"),
        "raw": _as_stored(cam.raw, store, "cam.raw"),
        "class_index": np.asarray(cam.class_index, dtype=np.int64),
        # scores are small; keep them float32 even in float16 goldens
        "score": np.asarray(cam.score, dtype=np.float32),
        "degenerate": np.asarray(cam.degenerate, dtype=bool),
    }
    if cam.probability is not None:  # float32 like the scores, even in float16 goldens
        arrays[PROBABILITY] = np.asarray(cam.probability, dtype=np.float32)
        _check_probability(arrays[PROBABILITY], arrays["score"], InputError)
    return arrays


def _check_probability(
    probability: np.ndarray, score: np.ndarray, error: type[Exception] = StorageError
) -> None:
    """A probability per map: ``(N,)`` float32 like the scores, each in [0, 1]."""
    ok = (
        probability.dtype == np.float32
        and probability.shape == score.shape
        and bool(np.all((probability >= 0.0) & (probability <= 1.0)))
    )
    if not ok:
        raise error(
            f"A GradCAM's {PROBABILITY!r} holds one probability in [0, 1] per map, float32 "
            f"of shape {tuple(score.shape)}. Received: "
            f"{describe_array(PROBABILITY, probability)}."
        )


def _gradcam_attrs(cam: GradCAM) -> dict[str, Any]:
    return {
        "score_kind": str(cam.score_kind),
        "layer": str(cam.layer),
        "image_shape": [int(v) for v in cam.image_shape],
        "method": str(cam.method),
        "target": str(cam.target),
    }


def _image_shape(value: Any) -> tuple[int, int]:
    h, w = (int(v) for v in value)
    return h, w


def _widen(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) if a.dtype == np.float16 else a


def _storage_dtype(dtype: str | np.dtype[Any] | None) -> np.dtype[Any]:
    if dtype is None:
        return np.dtype(np.float32)
    try:
        d = np.dtype(dtype)
    except TypeError:
        d = None
    if d not in (np.dtype(np.float32), np.dtype(np.float16)):
        raise InputError(f"Storage dtype must be 'float32' or 'float16'. Received: dtype={dtype!r}")
    assert d is not None
    return d


def _as_stored(value: Any, store: np.dtype[Any], name: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object:
        raise InputError(
            f"Stored values must be numeric arrays. Received: {describe_array(name, arr)}"
        )
    if arr.dtype.kind in "biu":  # bool and integers are stored as they are
        return np.asarray(arr, order="C")  # (0-d arrays stay 0-d)
    if arr.dtype.kind != "f":
        raise InputError(
            f"Stored values must be real numbers. Received: {describe_array(name, arr)}"
        )
    with np.errstate(over="ignore"):  # float16 overflow is reported below, not warned
        out = np.asarray(arr.astype(store), order="C")
    if store == np.float16:
        overflow = np.isfinite(arr) & ~np.isfinite(out)
        if overflow.any():
            raise InputError(
                f"{name} does not fit float16 (largest 65504): {int(overflow.sum())} values "
                f"overflow, max |value|={float(np.max(np.abs(arr[np.isfinite(arr)]))):.6g}. "
                "Store it as float32."
            )
    return out
