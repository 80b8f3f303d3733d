"""A heatmap check's images in a report: which to draw first (the failing and the most
changed, not the first eight), grouped by the golden's class, and what to draw on them
(each image's object box, the suspect regions).

A retrain that learned a partial shortcut moves the maps of one class only: a report
that shows the first eight images (often of one or two classes) and one mean over the
batch hides it. The class table (``details["by_class"]`` of the comparison when it has
one, else the per-image entries grouped by their golden class) and the worst images'
pictures show it. NumPy only; the HTML is plain strings.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# The pictures of a check show at most this many images (report/pictures.MAX_TILES).
SHOWN = 8


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def image_index(name: str) -> int | None:
    """``"image 3"`` -> 3 (the per-item names of heatmap comparisons), else None."""
    head, _, tail = str(name).rpartition(" ")
    return int(tail) if head == "image" and tail.isdigit() else None


def _bound(metrics: Mapping[str, Any] | None, name: str) -> float | None:
    m = (metrics or {}).get(name)
    if m is None:
        return None
    bound = m.bound if hasattr(m, "bound") else m.get("bound")
    return float(bound) if isinstance(bound, int | float) else None


def failing(
    facts: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
    names: Sequence[str] | None = None,
) -> list[str]:
    """What changed on one image, in words (empty when nothing a bound judges did): its
    class (named by ``names`` when given), its degenerate flag, the pointing hit lost,
    the box energy dropped over the per-image bound."""
    reasons = []
    pair = facts.get("class_index")
    if isinstance(pair, list | tuple) and len(pair) == 2 and pair[0] != pair[1]:
        reasons.append(
            f"class {_class_label(pair[0], names)} \u2192 {_class_label(pair[1], names)}"
        )
    degenerate = facts.get("degenerate")
    if (
        isinstance(degenerate, list | tuple)
        and len(degenerate) == 2
        and degenerate[0] != degenerate[1]
    ):
        reasons.append("degenerate changed")
    hits = facts.get("pointing")
    if isinstance(hits, list | tuple) and len(hits) == 2 and hits[0] and not hits[1]:
        reasons.append("pointing hit lost")
    drop, bound = facts.get("box_energy_drop"), _bound(metrics, "box_energy_drop")
    if isinstance(drop, int | float) and bound is not None and float(drop) > bound:
        reasons.append(f"box energy dropped {float(drop):.2f}")
    return reasons


def _similarity(facts: Mapping[str, Any]) -> float:
    """How alike the two maps of an image are (lower: more changed); a degenerate map
    (no rank correlation) counts as the least alike."""
    for key in ("spearman", "pearson"):
        v = facts.get(key)
        if isinstance(v, int | float) and np.isfinite(v):
            return float(v)
    share = facts.get("share_out")
    if isinstance(share, int | float) and np.isfinite(share):
        return -float(share)
    return -np.inf


def worst_first(
    per_item: Mapping[str, Mapping[str, Any]], metrics: Mapping[str, Any] | None = None
) -> list[int]:
    """The image indices of a heatmap comparison's per-image entries, the failing ones
    first (most reasons first, a changed class counting twice), then the least alike maps (rank correlation, else
    Pearson), ties in image order.

    Example:
        >>> worst_first({"image 0": {"spearman": 0.9}, "image 1": {"spearman": 0.2},
        ...              "image 2": {"spearman": 0.95, "class_index": [0, 1]}})
        [2, 1, 0]
    """
    ranked = []
    for name, facts in per_item.items():
        index = image_index(name)
        if index is not None:
            reasons = failing(facts, metrics)
            # a changed class first: the plainest change there is
            changed = any(r.startswith("class ") for r in reasons)
            ranked.append((-len(reasons) - changed, _similarity(facts), index))
    return [index for *_, index in sorted(ranked)]


def picture_order(
    details: Mapping[str, Any] | None, metrics: Mapping[str, Any] | None, n: int
) -> list[int] | None:
    """The images a check's pictures show, worst first (at most :data:`SHOWN`), or
    None for the first ones (no per-image facts: nothing to rank by). Images the
    per-image facts do not list (a batch over the report's 64 items) follow in order."""
    per_item = (details or {}).get("per_item") or {}
    order = worst_first(per_item, metrics)
    if not order:
        return None
    seen = set(order)
    order += [i for i in range(n) if i not in seen]
    return [i for i in order if 0 <= i < n][:SHOWN]


def shown_images(comparison: Any, obtained: Any) -> list[int] | None:
    """The images the pictures of a heatmap check show (see :func:`picture_order`),
    from its comparison (``details``, ``metrics``) and obtained artifact; None for the
    first ones (another kind, no comparison)."""
    if comparison is None or obtained.kind != "heatmap":
        return None
    maps = obtained.arrays.get("heatmap" if obtained.layout == "gradcam" else "value")
    if maps is None or maps.ndim < 3:
        return None
    return picture_order(comparison.details, comparison.metrics, int(maps.shape[0]))


def class_groups(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A heatmap check's images grouped by the golden's class (JSON-ready), the class
    with the most failing images first: ``class`` (None: every image), ``name`` (when
    the entry's ``class_names`` name it), ``n``,
    ``images`` (names, worst first), ``failing`` (name -> what changed) and, from the
    comparison's ``details["by_class"]`` when present, ``mass`` (region -> [golden,
    now] mean share of the map) and ``grown`` (region -> images that grew there).
    Empty when the images' classes are unknown."""
    items: Mapping[str, Mapping[str, Any]] = entry.get("per_item") or {}
    metrics = entry.get("metrics") or {}
    order = worst_first(items, metrics)
    members: dict[int, list[str]] = {}
    for index in order:
        name = f"image {index}"
        pair = items.get(name, {}).get("class_index")
        if isinstance(pair, list | tuple) and len(pair) == 2 and isinstance(pair[0], int):
            members.setdefault(int(pair[0]), []).append(name)
    by_class = {row.get("class"): row for row in (entry.get("details") or {}).get("by_class") or []}
    if not members and not by_class:
        return []
    names_ = [str(n) for n in entry.get("class_names") or []]
    groups = []
    for cls in sorted(set(members) | {c for c in by_class if c is not None}):
        names = members.get(cls, [])
        row = by_class.get(cls, {})
        groups.append(
            {
                "class": cls,
                **({"name": names_[cls]} if 0 <= cls < len(names_) else {}),
                "n": int(row.get("n", len(names))),
                "images": names,
                "failing": {
                    n: failing(items[n], metrics, names_)
                    for n in names
                    if failing(items[n], metrics, names_)
                },
                **{k: row[k] for k in ("mass", "grown") if k in row},
            }
        )
    groups.sort(
        key=lambda g: (-len(g["failing"]), -sum((g.get("grown") or {}).values()), g["class"])
    )
    if None in by_class:  # every image: the batch's own row, last
        row = by_class[None]
        groups.append(
            {
                "class": None,
                "n": int(row.get("n", len(items))),
                "images": [f"image {i}" for i in order],
                "failing": {
                    n: failing(items[n], metrics, names_)
                    for n in items
                    if failing(items[n], metrics, names_)
                },
                **{k: row[k] for k in ("mass", "grown") if k in row},
            }
        )
    return groups


def _class_label(cls: Any, names: Sequence[str] | None) -> str:
    if cls is None:
        return "every image"
    if names and 0 <= int(cls) < len(names):
        return f"{names[int(cls)]} ({cls})"
    return str(cls)


def class_text(cls: Any, names: Sequence[str] | None) -> str:
    """A class as the report's tables show it: ``"happy (3)"`` when its name is known,
    else the index (``"3"``)."""
    return _class_label(cls, names)


def _regions_shown(groups: list[dict[str, Any]], user: Sequence[str]) -> list[str]:
    """The regions worth a column: the object box, the user's regions and any region
    where some image grew (the border and corners are many and usually quiet)."""
    names: list[str] = []
    for g in groups:
        for name in g.get("mass") or {}:
            grown = (g.get("grown") or {}).get(name, 0)
            if (name in ("box", *user) or grown) and name not in names:
                names.append(name)
    return names


def by_class_html(entry: Mapping[str, Any], class_names: Sequence[str] | None = None) -> str:
    """The class table of a heatmap check (see :func:`class_groups`): per golden class
    its images, the failing ones (linked to nothing: named, with what changed) and each
    region's mean mass golden -> now with how many images grew there; "" when classes
    are unknown."""
    groups = entry.get("images_by_class") or class_groups(entry)
    class_names = class_names or entry.get("class_names")
    if not groups:
        return ""
    details = entry.get("details") or {}
    user = [
        n
        for n, r in (details.get("regions") or {}).items()
        if n
        not in ("box", "outside", "border", "top_left", "top_right", "bottom_left", "bottom_right")
        and isinstance(r, Mapping)
    ]
    regions = _regions_shown(groups, user)
    head = "".join(f"<th>{_e(r)}</th>" for r in regions)
    rows = []
    for g in groups:
        bad = g.get("failing") or {}
        listed = ", ".join(
            f"<b>{_e(n)}</b> ({_e('; '.join(why))})" for n, why in list(bad.items())[:6]
        ) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
        cells = []
        for r in regions:
            mass = (g.get("mass") or {}).get(r)
            grown = (g.get("grown") or {}).get(r, 0)
            shown = f"{mass[0]:.2f} \u2192 {mass[1]:.2f}" if mass else "-"
            cells.append(
                f"<td class='mass {'bad' if grown else 'ok'}'>{_e(shown)}"
                + (f" ({grown} grew)" if grown else "")
                + "</td>"
            )
        rows.append(
            f"<tr><td>{_e(_class_label(g.get('class'), class_names))}</td><td>{_e(g.get('n'))}</td>"
            f"<td class={'bad' if bad else 'ok'}>{len(bad)}</td><td class=which>{listed or '-'}</td>"
            f"{''.join(cells)}</tr>"
        )
    return (
        "<details open><summary>by the golden's class (the class with the most failing "
        "images first; per region: the mean share of the map in it, golden \u2192 now, and "
        "how many images grew there)</summary><div class=scroll><table class=items><tr>"
        "<th>class</th>"
        f"<th>images</th><th>failing</th><th>which</th>{head}</tr>{''.join(rows)}</table>"
        "</div></details>"
    )


def by_class_order(entry: Mapping[str, Any]) -> list[str]:
    """The per-image entries' names grouped by the golden's class (in the order of
    :func:`class_groups`), worst first within a class; names of no class last."""
    items = entry.get("per_item") or {}
    ordered: list[str] = []
    for g in entry.get("images_by_class") or class_groups(entry):
        if g.get("class") is not None:
            ordered += [n for n in g.get("images", []) if n in items and n not in ordered]
    return ordered + [n for n in items if n not in ordered]
