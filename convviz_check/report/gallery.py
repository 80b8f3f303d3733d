"""Every image of a failing heatmap check, one picture each (golden | now | diff).

The expected / obtained / diff strips of a check show its 8 worst images; a retrain
that flips 13 of 64 images leaves five failing images without a picture, and the
message names them. So a failing heatmap check also gets one small picture per image
(``<check>.each/image_<i>.png``, written next to the strips): every failing image is
shown open in the report, the failing ones first, up to :data:`FAILING_SHOWN`; the
others (and failing ones past the cap) are folded under a ``<details>`` and load only
when it is opened (``loading=lazy``).

The pictures are files in the results folder, never inlined: a 64-image check's
pictures weigh about 0.9 MB as PNGs (96 x 296 px each, over photos), which as base64
would make report.html about 1.2 MB larger and be decoded before the page shows; as
files the page grows by about 12 kB (14.5 kB -> 27 kB, measured).

NumPy and Pillow only (through :mod:`convviz_check.report.pictures`).
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Unpack

import numpy as np

from .. import storage
from ..artifacts import Artifact
from .classes import failing, image_index, worst_first
from .pictures import (
    MAX_TILES,
    ImageSources,
    _heatmaps,
    _hstack,
    diff_image,
    picture,
    under_tiles,
    write_check_images,
)

# Failing images pictured open, at most. 32 pictures at 296 px are 8 rows of 4 on a
# 1200 px page (about 1000 px of height: one screen of scrolling), enough for every
# failing image of the checks seen so far (13 of 64 for a partial shortcut); more
# failing images than this are a wholesale change the strips and the class table
# already show, and the rest stay one click away.
FAILING_SHOWN = 32
# Images pictured at all: the per-image table's length (the entry keeps the facts of
# 64 images), so every row of the table has its picture.
MAX_PICTURED = 64
_GAP_GREY = 255  # white gaps: the diff tile is mostly black


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def each_order(per_item: Mapping[str, Mapping[str, Any]], metrics: Any, n: int) -> list[int]:
    """All images of a check worst first (the failing ones first, then the least
    alike), the ones the per-image facts do not list after them, at most
    :data:`MAX_PICTURED`.

    Example:
        >>> each_order({"image 1": {"class_index": [0, 2]}}, {}, 3)
        [1, 0, 2]
    """
    order = [i for i in worst_first(per_item, metrics) if 0 <= i < n]
    seen = set(order)
    return (order + [i for i in range(n) if i not in seen])[:MAX_PICTURED]


def image_picture(
    expected: Artifact,
    obtained: Artifact,
    index: int,
    was: np.ndarray | None,
    now: np.ndarray | None,
) -> np.ndarray:
    """One image's golden map, obtained map and diff side by side (uint8 RGB): each
    over its input tile (``was``: the golden's, ``now``: this run's) with the image's
    object box and suspect regions drawn, the diff on the check's own scale."""
    tiles = [
        picture(expected, order=[index], under=[was], marks=True),
        picture(obtained, order=[index], under=[now], marks=True),
    ]
    diff = diff_image(expected, obtained, order=[index])
    if diff is not None:
        tiles.append(diff[0])
    return _hstack(tiles, _GAP_GREY)


def write_each_image(
    out_base: str | os.PathLike[str],
    expected: Artifact,
    obtained: Artifact,
    details: Mapping[str, Any],
    metrics: Any,
    *,
    inputs: np.ndarray | None = None,
    expected_inputs: np.ndarray | None = None,
    images: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Write one picture per image of a heatmap check (:func:`image_picture`) as
    ``<out_base>.each/image_<i>.png``, worst first (:func:`each_order`).

    Args:
        out_base: where the check's strips are written (``images/<check>``).
        expected, obtained: the golden's and this run's heatmap artifacts.
        details, metrics: the comparison's (``details["per_item"]`` ranks the images
            and says which fail).
        inputs, expected_inputs: this run's and the golden's thumbnail strips.
        images: the checked images, when at hand (each image's own tile).

    Returns:
        ``[{"image": "image 4", "path": ..., "failing": bool}, ...]``, worst first;
        empty for another kind or maps that cannot be aligned.
    """
    if obtained.kind != "heatmap" or expected.kind != "heatmap":
        return []
    maps, old = _heatmaps(obtained), _heatmaps(expected)
    if maps.shape != old.shape:
        return []
    per_item = details.get("per_item") or {}
    order = each_order(per_item, metrics, int(maps.shape[0]))
    # A thumbnail strip holds 8 tiles: the images' own tiles are made 8 at a time.
    now, current = [], []
    for k in range(0, len(order), MAX_TILES):
        now += under_tiles(order[k : k + MAX_TILES], inputs, images)
        current += under_tiles(order[k : k + MAX_TILES], None, images)
    stored = under_tiles(order, expected_inputs)
    was = [s if s is not None else c for s, c in zip(stored, current, strict=True)]
    folder = Path(out_base)
    folder = folder.with_name(f"{folder.name}.each")
    out = []
    for k, index in enumerate(order):
        path = folder / f"image_{index}.png"
        storage.write_png(path, image_picture(expected, obtained, index, was[k], now[k]))
        facts = per_item.get(f"image {index}") or {}
        out.append(
            {"image": f"image {index}", "path": str(path), "failing": bool(failing(facts, metrics))}
        )
    return out


def write_pictures(
    out_base: str | os.PathLike[str],
    obtained: Artifact,
    expected: Artifact | None = None,
    layer: str | None = None,
    *,
    every: Any = None,
    **sources: Unpack[ImageSources],
) -> tuple[dict[str, str], float | None, dict[str, Any]]:
    """A check's pictures: the strips of
    :func:`~convviz_check.report.pictures.write_check_images` (``sources`` as there)
    and, given ``every`` (the comparison of a failing heatmap check), one picture per
    image (:func:`write_each_image`).

    Returns:
        (role -> path of each strip, the diff's scale or None, ``{"pictures": [...]}``
        for the report's entry, or ``{}`` without per-image pictures).
    """
    written, scale = write_check_images(out_base, obtained, expected, layer, **sources)
    if every is None or expected is None:
        return written, scale, {}
    try:
        each = write_each_image(
            out_base,
            expected,
            obtained,
            every.details,
            every.metrics,
            inputs=sources.get("inputs"),
            expected_inputs=sources.get("expected_inputs"),
            images=sources.get("images"),
        )
    except Exception:  # noqa: BLE001 - a picture must never hide the check's outcome
        each = []
    return written, scale, ({"pictures": each} if each else {})


def _relative(path: str, start: Path) -> str:
    try:
        return Path(os.path.relpath(path, start)).as_posix()
    except ValueError:  # another drive on Windows
        return Path(path).as_uri()


def _figure(
    picture_: Mapping[str, Any], entry: Mapping[str, Any], results_dir: Path, lazy: bool
) -> str:
    name = str(picture_.get("image"))
    facts = (entry.get("per_item") or {}).get(name) or {}
    reasons = failing(facts, entry.get("metrics"), entry.get("class_names"))
    similar = facts.get("spearman")
    words = "; ".join(reasons)
    if not reasons and isinstance(similar, int | float):
        words = f"rank correlation {float(similar):.2f}"
    caption = f"{name}" + (f": {words}" if words else "")
    index = image_index(name)
    return (
        f"<figure id='{_e(entry.get('rel', ''))}-{index}'><img src='"
        f"{_e(_relative(str(picture_.get('path')), results_dir))}' alt='{_e(name)}'"
        + (" loading=lazy" if lazy else "")
        + f"><figcaption>{_e(caption)}</figcaption></figure>"
    )


def each_image_html(entry: Mapping[str, Any], results_dir: Path) -> str:
    """The per-image pictures of a check's entry: the failing images open (at most
    :data:`FAILING_SHOWN`, worst first), the others under a closed ``<details>``
    whose pictures load when it is opened. Empty without per-image pictures."""
    pictures = [p for p in entry.get("pictures") or [] if isinstance(p, Mapping)]
    if not pictures:
        return ""
    bad = [p for p in pictures if p.get("failing")]
    shown = bad[:FAILING_SHOWN]
    rest = [p for p in pictures if p not in shown]
    legend = "golden | now | diff, each image over its input, on the strips' scales"
    parts = []
    if shown:
        more = f", the first {len(shown)}" if len(bad) > len(shown) else ""
        parts.append(
            f"<h3>every failing image ({len(bad)}{more}; {legend})</h3>"
            "<div class='images each'>"
            + "".join(_figure(p, entry, results_dir, lazy=False) for p in shown)
            + "</div>"
        )
    if rest:
        which = "other" if shown else ""
        summary = (
            f"the {which} {len(rest)} images, the least alike first ({legend}; "
            "pictures load when opened)"
        ).replace("the  ", "the ")
        parts.append(
            f"<details class=each><summary>{_e(summary)}</summary><div class='images each'>"
            + "".join(_figure(p, entry, results_dir, lazy=True) for p in rest)
            + "</div></details>"
        )
    return "".join(parts)


__all__ = [
    "FAILING_SHOWN",
    "MAX_PICTURED",
    "each_image_html",
    "each_order",
    "image_picture",
    "write_each_image",
    "write_pictures",
]
