"""Judgments other than golden checks in the report: localization, faithfulness,
randomization sanity and cross-backend agreement.

Every assertion of the ``convviz`` fixture returns an
:class:`~convviz_check.types.Outcome`; the fixture records it with :func:`entry_of`
(its pictures written next to the golden checks' images), and ``report.html`` shows it
as a card (:func:`judgment_card`) beside the golden checks: the lead line, the metrics
against their bounds, the per-item table and the pictures.

NumPy and Pillow only: no Keras, no framework, no pytest.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .. import storage
from ..types import JUDGMENTS, Outcome
from .comparison import distinct_format, exact

# Rows of a per-item table shown before the rest is folded.
MAX_ROWS = 64
# What each judgment's items are called in the report.
ITEM_NAME = {
    "localization": "image",
    "faithfulness": "image",
    "randomization": "image",
    "agreement": "pair",
    "counterfactual": "image",
    "pattern_response": "channel",
}
# Statuses in the order a summary names them (failures first).
STATUS_RANK = {"error": 0, "failed": 1, "missing": 2, "written": 3, "skipped": 4, "passed": 5}
# Small pictures (a 7x7 map) are enlarged (nearest) so that cells stay visible.
_MIN_SIDE = 160
# Only pictures smaller than this are enlarged: a labelled picture (an agreement's
# one-row diff under its title is 133 px tall) enlarged 2x doubled its text to a blur.
_ENLARGE_BELOW = 100


def entry_of(
    outcome: Outcome,
    *,
    nodeid: str,
    name: str,
    rel: PurePosixPath,
    results_dir: Path | None,
) -> dict[str, Any]:
    """The ``report.json`` entry of ``outcome`` for the test ``nodeid``; its pictures are
    written to ``<results_dir>/images/<rel>.<role>.png`` (only with a results dir).

    Args:
        outcome: what the judgment found.
        nodeid: the pytest node id of the test that asked.
        name: the judgment's name within the test (``localized-1``, ``faithful-1``...).
        rel: the path the pictures take below ``images/`` (as a golden's would).
        results_dir: ``--convviz-results-dir``, or None.
    """
    entry: dict[str, Any] = {"nodeid": nodeid, "check": name, **outcome.to_entry()}
    if results_dir is not None and outcome.pictures:
        images: dict[str, str] = {}
        for role, picture in outcome.pictures.items():
            path = results_dir / "images" / f"{rel.as_posix()}.{storage.sanitize_part(role)}.png"
            storage.write_png(path, _enlarged(picture))
            images[role] = str(path)
        entry["images"] = images
    return entry


def _enlarged(picture: np.ndarray) -> np.ndarray:
    img = np.asarray(picture)
    side = min(img.shape[:2])
    if side >= _ENLARGE_BELOW or side == 0:
        return img
    k = -(-_MIN_SIDE // side)
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1)


def is_judgment(entry: Mapping[str, Any]) -> bool:
    """An entry of a judgment other than a golden check."""
    return entry.get("judgment") not in (None, "golden")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _rel(path: str, start: Path) -> str:
    try:
        return Path(os.path.relpath(path, start)).as_posix()
    except ValueError:  # another drive on Windows
        return Path(path).as_uri()


def _number(value: Any, bound: Any = None) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        if isinstance(bound, int | float):
            return distinct_format(float(value), float(bound))[0]
        return f"{float(value):.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_number(v) for v in value)
    return str(value)


def _metrics_table(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    if not metrics:
        return ""
    notes = any(m.get("note") for m in metrics.values())
    rows = []
    for name, m in metrics.items():
        bound = m.get("bound")
        op = ">=" if m.get("direction") == "min" else "<="
        shown_bound = f"{op} {exact(bound)}" if bound is not None else "(not asked)"
        verdict = "ok" if m.get("ok") else "OUT"
        rows.append(
            f"<tr class={'ok' if m.get('ok') else 'bad'}><td>{_e(name)}</td>"
            f"<td>{_e(_number(m.get('value'), bound))}</td><td>{_e(shown_bound)}</td>"
            f"<td>{verdict if bound is not None else ''}</td>"
            + (f"<td>{_e(m.get('note', ''))}</td>" if notes else "")
            + "</tr>"
        )
    head = "<tr><th>metric</th><th>value</th><th>bound</th><th></th>" + (
        "<th>where</th></tr>" if notes else "</tr>"
    )
    return f"<table class=metrics>{head}{''.join(rows)}</table>"


def _items_table(judgment: str, items: Mapping[str, Mapping[str, Any]]) -> str:
    if not items:
        return ""
    columns: list[str] = []
    for facts in items.values():
        columns += [k for k, v in facts.items() if k not in columns and _scalar_like(v)]
    unit = ITEM_NAME.get(judgment, "item")
    rows = []
    for i, (item, facts) in enumerate(items.items()):
        if i == MAX_ROWS:
            rows.append(f"<tr><td colspan={len(columns) + 1}>... {len(items) - i} more</td></tr>")
            break
        bad = facts.get("ok") is False
        cells = "".join(
            f"<td>{_e(_cell(c, facts[c]) if c in facts else '-')}</td>" for c in columns
        )
        rows.append(f"<tr class={'bad' if bad else 'ok'}><td>{_e(item)}</td>{cells}</tr>")
    head = "".join(f"<th>{_e(c.replace('_', ' '))}</th>" for c in columns)
    return (
        f"<details open><summary>per {unit} ({len(items)})</summary><div class=scroll>"
        f"<table class=items><tr><th>{unit}</th>{head}</tr>{''.join(rows)}</table></div>"
        "</details>"
    )


def _cell(column: str, value: Any) -> str:
    """A per-item value as a reader takes it in: a box as ``rows [8, 56), cols [20,
    44)`` (its four numbers in a row read as two points), points as ``(62, 0), (62,
    1)`` (flattened, eight numbers read as nothing)."""
    numbers = isinstance(value, list | tuple) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    )
    if column.endswith("box") and numbers and len(value) == 4:
        y0, x0, y1, x1 = (_number(v) for v in value)
        return f"rows [{y0}, {y1}), cols [{x0}, {x1})"
    if (
        isinstance(value, list | tuple)
        and value
        and all(isinstance(v, list | tuple) for v in value)
    ):
        return ", ".join(f"({_number(v)})" for v in value)
    return _number(value)


def _scalar_like(value: Any) -> bool:
    if isinstance(value, bool | int | float | str) or value is None:
        return True
    return isinstance(value, list | tuple) and len(value) <= 4


def _caption(entry: Mapping[str, Any], role: str) -> str:
    """What a judgment's picture shows and what its colours mean (a bare "overlay"
    under three coloured marks, or "curves" under three coloured lines, left the
    reader guessing which is which)."""
    judgment = entry.get("judgment")
    if judgment == "localization" and role == "overlay":
        return (
            "overlay: the map over the image; green: the target, cyan: the map's own box "
            "(where it reaches the threshold), magenta: the peak"
        )
    if judgment == "faithfulness" and role == "curves":
        metric = str((entry.get("facts") or {}).get("metric") or "")
        changed = {"deletion": "deleted", "insertion": "inserted"}.get(metric, "changed")
        return (
            "curves (the batch mean, then the first images): red: the map under test, grey: "
            f"the random maps' mean, blue: the wrong class's map; x: share of pixels {changed}, "
            "y: the class probability"
        )
    return role.replace("_", " ")


def _pictures(entry: Mapping[str, Any], results_dir: Path) -> str:
    figures = [
        f"<figure><img src='{_e(_rel(path, results_dir))}' alt='{_e(role)}'>"
        f"<figcaption>{_e(_caption(entry, role))}</figcaption></figure>"
        for role, path in (entry.get("images") or {}).items()
    ]
    return f"<div class=images>{''.join(figures)}</div>" if figures else ""


def judgment_card(entry: Mapping[str, Any], results_dir: Path, anchor: str) -> str:
    """One judgment as a card of ``report.html``: what was judged, the lead line, the
    message on failure, the pictures, the metrics and the per-item table."""
    status = str(entry.get("status", "?"))
    judgment = str(entry.get("judgment", ""))
    message = str(entry.get("message") or "")
    facts = entry.get("facts") or {}
    fact_text = ", ".join(
        f"{k.replace('_', ' ')}: {_number(v)}" for k, v in facts.items() if _scalar_like(v)
    )
    return (
        f"<section class='card {_e(status)}' id='{_e(anchor)}'>"
        f"<h2><span class=badge>{_e(status)}</span> {_e(entry.get('nodeid', ''))} :: "
        f"{_e(entry.get('check', ''))} <small>({_e(judgment)})</small></h2>"
        f"<p class=lead>{_e(entry.get('lead', ''))}</p>"
        + (f"<pre>{_e(message)}</pre>" if message and message != entry.get("lead") else "")
        + _pictures(entry, results_dir)
        + _metrics_table(entry.get("metrics") or {})
        + (_towards_table(facts, status == "failed") if judgment == "counterfactual" else "")
        + _items_table(judgment, entry.get("per_item") or {})
        + (f"<p class=facts>{_e(fact_text)}</p>" if fact_text else "")
        + "</section>"
    )


def _towards_table(facts: Mapping[str, Any], failed: bool) -> str:
    """A counterfactual probe's flips towards each class, beside the golden model's."""
    flipped, eligible = facts.get("flipped") or [], facts.get("eligible") or []
    names = facts.get("class_names") or []
    golden = (facts.get("reference") or {}).get("towards_rate") or []
    rows = []
    for c, (f, e) in enumerate(zip(flipped, eligible, strict=False)):
        name = f"{c} {names[c]}" if c < len(names) else str(c)
        ref = f"{golden[c]:.0%}" if c < len(golden) else "-"
        worst = failed and c == facts.get("worst_class")
        rate = f / e if e else 0.0
        rows.append(
            f"<tr class={'bad' if worst else 'ok'}><td>{_e(name)}</td><td>{f} of {e}</td>"
            f"<td>{rate:.0%}</td><td>{_e(ref)}</td></tr>"
        )
    if not rows:
        return ""
    # "flipped 13 of 13" counts only the images not already in the class without the
    # cue; the golden model counts its own such images (a total that may differ)
    head = (
        "<tr><th>towards class</th><th>flipped (of the images not already in it)</th>"
        "<th>rate</th><th>golden model</th></tr>"
    )
    return f"<table class=metrics>{head}{''.join(rows)}</table>"


def summary_line(verdicts: list[tuple[str, str]]) -> str:
    """One line over a session's judgments, ``(judgment, status)`` each, in the order
    of ``JUDGMENTS``: ``"5 judgment(s): golden 3 passed, 1 failed; localization 1
    passed"``; empty without judgments."""
    if not verdicts:
        return ""
    counts: dict[str, dict[str, int]] = {}
    for judgment, status in verdicts:
        per = counts.setdefault(judgment, {})
        per[status] = per.get(status, 0) + 1
    order = {j: i for i, j in enumerate(JUDGMENTS)}
    parts = []
    for judgment in sorted(counts, key=lambda j: order.get(j, len(order))):
        per = counts[judgment]
        ranked = sorted(per, key=lambda st: STATUS_RANK.get(st, 9))
        parts.append(f"{judgment} " + ", ".join(f"{per[st]} {st}" for st in ranked))
    return f"{len(verdicts)} judgment(s): " + "; ".join(parts)
