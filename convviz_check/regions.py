"""Suspect regions: user-named boxes in input-image pixels (a watermark, a caption
strip, a logo) where a shortcut may hide, the same for every image of a check.

A heatmap check takes them from ``convviz.check(regions=...)``, the marker
``convviz(regions=...)`` or the ini key ``convviz_regions`` (one line per region,
``name = y0, x0, y1, x1``), is stored with its golden (the attribute ``regions`` of
the golden's sidecar) and the ``retrain`` profile measures the share of each map's
mass in each region. NumPy only.
"""

from __future__ import annotations

import keyword
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .errors import LocalizationError
from .types import Box

# Names the comparison gives its own places (the object box, the rest of the image, the
# image border and its corners): a user region of the same name would be confused with
# them in reports and messages.
BUILTIN_NAMES = (
    "box",
    "outside",
    "border",
    "top_left",
    "top_right",
    "bottom_left",
    "bottom_right",
)
# The attribute of a heatmap artifact (and of its golden's sidecar) that holds the
# regions: name -> [y0, x0, y1, x1], in the order given.
ATTR = "regions"
EXPECTED = (
    "a mapping name -> Box(y0, x0, y1, x1) or 4 ints y0, x0, y1, x1 (half-open, input-image "
    "pixels, 0 <= y0 < y1, 0 <= x0 < x1), each name an identifier other than "
    + ", ".join(BUILTIN_NAMES)
)


def check_regions(regions: Any, source: str = "regions") -> dict[str, Box] | None:
    """The suspect regions of ``regions``, checked (names and boxes; whether a box fits
    the image is :func:`regions_inside`'s: the image size is known later).

    Args:
        regions: a mapping name -> :class:`~convviz_check.types.Box` or 4 ints
            ``(y0, x0, y1, x1)``; None or an empty mapping: no regions.
        source: how the caller names the value, for messages (``"the marker
            convviz(regions=...)"``).

    Returns:
        ``{name: Box}`` in the given order, or None for no regions.

    Raises:
        LocalizationError: not a mapping, a name that is not an identifier or is one
            of :data:`BUILTIN_NAMES`, or a box that is not 4 non-negative ints with
            ``y0 < y1`` and ``x0 < x1``.

    Example:
        >>> check_regions({"watermark": (0, 48, 12, 64)})
        {'watermark': Box(y0=0, x0=48, y1=12, x1=64)}
    """
    if regions is None:
        return None
    if not isinstance(regions, Mapping):
        raise LocalizationError(
            f"{source} must be {EXPECTED}. Received: {regions!r} (type {type(regions).__name__})"
        )
    out: dict[str, Box] = {}
    for name, value in regions.items():
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise LocalizationError(
                f"{source}: a region's name must be a Python identifier (letters, digits, "
                f"underscores; e.g. 'watermark'). Received: {name!r}"
            )
        if name in BUILTIN_NAMES:
            raise LocalizationError(
                f"{source}: the region name {name!r} is taken by the comparison's own "
                f"places ({', '.join(BUILTIN_NAMES)}). Received: {name!r}; expected another "
                f"name, e.g. '{name}_region'."
            )
        out[name] = _box(value, f"{source}[{name!r}]")
    return out or None


def _box(value: Any, source: str) -> Box:
    if isinstance(value, Box):
        coords: Any = value.to_tuple()
    elif isinstance(value, str | bytes) or not isinstance(value, Iterable):
        coords = None
    else:
        coords = tuple(value)
    ok = (
        coords is not None
        and len(coords) == 4
        and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in coords)
    )
    if ok:
        y0, x0, y1, x1 = (int(v) for v in coords)
        ok = 0 <= y0 < y1 and 0 <= x0 < x1
    if not ok:
        raise LocalizationError(
            f"{source} must be a Box or 4 ints y0, x0, y1, x1 (half-open, input-image "
            f"pixels, 0 <= y0 < y1, 0 <= x0 < x1). Received: {value!r}"
        )
    return Box(y0, x0, y1, x1)


def regions_inside(
    regions: Mapping[str, Box], image_shape: Iterable[int], source: str = "regions"
) -> None:
    """Refuse a region (partly) outside the ``(H, W)`` image.

    Raises:
        LocalizationError: naming the region, its box and the image size.
    """
    height, width = (int(v) for v in tuple(image_shape)[:2])
    for name, box in regions.items():
        if box.y1 > height or box.x1 > width:
            raise LocalizationError(
                f"{source}[{name!r}] must lie inside the {height}x{width} image (y1 <= "
                f"{height}, x1 <= {width}; input-image pixels). Received: {box}"
            )


def parse_region_lines(lines: Iterable[str], source: str = "ini convviz_regions") -> dict[str, Box]:
    """The regions of the ini key ``convviz_regions``: one ``name = y0, x0, y1, x1``
    per line (blank lines and ``#`` comments ignored), checked as
    :func:`check_regions`.

    Raises:
        LocalizationError: a line of another form, a name given twice, or a bad name
            or box (naming the line).

    Example:
        >>> parse_region_lines(["watermark = 0, 48, 12, 64"])
        {'watermark': Box(y0=0, x0=48, y1=12, x1=64)}
    """
    found: dict[str, Any] = {}
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, rest = line.partition("=")
        name = name.strip()
        parts = [p.strip() for p in rest.split(",")]
        if not sep or len(parts) != 4 or not all(_is_int(p) for p in parts):
            raise LocalizationError(
                f"{source}: each line is 'name = y0, x0, y1, x1' (ints, input-image pixels). "
                f"Received: {raw.strip()!r}"
            )
        if name in found:
            raise LocalizationError(
                f"{source}: the region {name!r} is given twice. Received: {raw.strip()!r} "
                "after an earlier line of the same name; expected each name once."
            )
        found[name] = tuple(int(p) for p in parts)
    return check_regions(found, source) or {}


def _is_int(text: str) -> bool:
    return text.lstrip("+-").isdigit()


def to_attr(regions: Mapping[str, Box]) -> dict[str, list[int]]:
    """The JSON form stored with a golden: name -> [y0, x0, y1, x1]."""
    return {name: list(box.to_tuple()) for name, box in regions.items()}


def from_attr(value: Any, error: type[Exception] = LocalizationError) -> dict[str, Box] | None:
    """The regions of a stored attribute (see :func:`to_attr`); None when absent.

    Raises:
        ``error``: a malformed attribute (not name -> 4 ints).
    """
    if value is None:
        return None
    try:
        return check_regions(value, f"the stored attribute {ATTR!r}")
    except LocalizationError as e:
        raise error(str(e)) from None


def regions_text(regions: Mapping[str, Box] | None) -> str:
    """``watermark (0, 48, 12, 64), logo (...)``, or ``none``."""
    if not regions:
        return "none"
    return ", ".join(f"{name} {box.to_tuple()}" for name, box in regions.items())


def settle(stored: dict[str, Box] | None, given: dict[str, Box] | None) -> tuple[Any, str]:
    """``(the regions both sides are measured in, a plain mismatch or "")`` of a check
    against its golden: a check that gives none inherits the golden's (later runs need
    not repeat them, an update keeps them); other regions than the golden's no longer
    match it; a golden written without regions is measured in the check's."""
    if given is None:
        return stored, ""
    if stored is not None and given != stored:
        return None, (
            f"suspect regions changed: the golden holds {regions_text(stored)}, the check "
            f"gives {regions_text(given)} (rewrite the golden to keep the new regions)"
        )
    return given, ""


def attach_regions(artifact: Any, regions: Any, source: str = "regions") -> Any:
    """``artifact`` (an :class:`~convviz_check.artifacts.Artifact`) holding the suspect
    regions, checked against its input size (a GradCAM's ``image_shape``, a bare
    ``(N, h, w)`` array's own ``(h, w)``); None leaves it as it is.

    Raises:
        LocalizationError: regions on something other than heatmaps, or a bad name or
            box (see :func:`check_regions`, :func:`regions_inside`).
    """
    checked = check_regions(regions, source)
    if checked is None:
        return artifact
    _, shape = heatmap_maps_and_shape(artifact, source)
    regions_inside(checked, shape, source)
    return artifact.with_regions(checked)


def heatmap_maps_and_shape(artifact: Any, source: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """The maps of a heatmap artifact and the input size its boxes and regions are in
    (a GradCAM's ``image_shape``; a bare ``(N, h, w)`` array, or a GradCAM without its
    input size, the maps' own ``(h, w)``): one rule for object boxes and regions.

    Raises:
        LocalizationError: ``artifact`` is no heatmap (``source`` names the argument).
    """
    if artifact.kind != "heatmap" or artifact.layout not in ("array", "gradcam"):
        raise LocalizationError(
            f"{source} go with heatmap checks (a GradCAM or an (N, h, w) array). "
            f"Received: a {artifact.kind} check."
        )
    maps = artifact.arrays["heatmap" if artifact.layout == "gradcam" else "value"]
    shape = tuple(artifact.attrs.get("image_shape") or ()) or tuple(maps.shape[-2:])
    if not all(shape):  # a GradCAM without its input size: the maps' own
        shape = tuple(maps.shape[-2:])
    return maps, shape
