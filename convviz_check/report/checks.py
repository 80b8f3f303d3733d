"""Reports of golden checks: preview / expected / obtained / diff images, ``report.json``
and a static ``report.html`` (failures first, images side by side).

NumPy, Pillow and matplotlib colormaps only (through :mod:`convviz_check.render`): no
Keras, no framework, no pytest. Under pytest-xdist every worker writes its own part
file (:func:`write_part`); the controller merges them (:func:`merge_parts`).
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .. import storage
from ..types import ITEM_UNIT, MetricResult
from .classes import by_class_html, by_class_order, class_groups, class_text
from .comparison import (
    channel_table,
    distinct_format,
    exact,
    field_name,
    first_out_of_bounds,
    unbounded,
    unjudged_note,
)
from .gallery import each_image_html
from .outcomes import is_judgment, judgment_card

REPORT_VERSION = 1
PARTS_DIR = ".convviz-parts"
# Failure-like statuses sort first in reports.
STATUS_ORDER = {"error": 0, "failed": 1, "missing": 2, "written": 3, "skipped": 4, "passed": 5}
# Small maps (7x7 Grad-CAM) are upscaled (nearest) to at least this many pixels per
# side so that cells stay visible in the report.
_MIN_TILE = 96
_MAX_TILES = 8
_GAP = 2


# --------------------------------------------------------------------------- reports
def write_part(results_dir: str | os.PathLike[str], worker: str, data: Mapping[str, Any]) -> Path:
    """Write one process's share of the report (``worker`` is the xdist id or "main")."""
    path = Path(results_dir) / PARTS_DIR / f"{worker}.json"
    # insertion order kept: metrics and layers (depth order) read in the order computed
    storage.write_text(path, json.dumps(data, default=str))
    return path


def clear_parts(results_dir: str | os.PathLike[str]) -> None:
    d = Path(results_dir) / PARTS_DIR
    if d.is_dir():
        for p in d.glob("*.json"):
            p.unlink(missing_ok=True)


def merge_parts(results_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Entries of every part file written in this results dir, in report order."""
    entries: list[dict[str, Any]] = []
    d = Path(results_dir) / PARTS_DIR
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        entries.extend(json.loads(p.read_text(encoding="utf-8")).get("entries", []))
    return sort_entries(entries)


def _natural(text: str) -> tuple[Any, ...]:
    """``localized-2`` before ``localized-10``: digits compare as numbers."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def sort_entries(entries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        (dict(e) for e in entries),
        key=lambda e: (
            STATUS_ORDER.get(e.get("status", ""), 9),
            e.get("nodeid", ""),
            _natural(str(e.get("check", ""))),
        ),
    )


def write_report(
    results_dir: str | os.PathLike[str],
    entries: Iterable[Mapping[str, Any]],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``report.json`` and ``report.html`` in ``results_dir``.

    Args:
        results_dir: the ``--convviz-results-dir``.
        entries: one dict per check: ``nodeid``, ``check``, ``kind``, ``status``
            (``passed``/``failed``/``missing``/``written``/``error``/``skipped``),
            ``profile`` (the gate profile), ``message``,
            ``golden`` (path relative to the golden dir), ``obtained`` (path of the
            obtained ``.npz``), ``images`` (role -> path), ``metrics``.
        extra: more top-level keys (``unused``, ``written``, ``backend``...).

    Returns:
        ``{"json": path, "html": path}``.
    """
    results_dir = Path(results_dir)
    ordered = [_with_classes(e) for e in sort_entries(entries)]
    counts: dict[str, int] = {}
    for e in ordered:
        counts[e.get("status", "?")] = counts.get(e.get("status", "?"), 0) + 1
    data = {"format_version": REPORT_VERSION, "summary": counts, "entries": ordered}
    data.update(extra or {})
    json_path = results_dir / "report.json"
    html_path = results_dir / "report.html"
    storage.write_text(json_path, json.dumps(data, indent=2, default=str) + "\n")
    storage.write_text(html_path, render_html(data, results_dir))
    return {"json": json_path, "html": html_path}


def _with_classes(entry: dict[str, Any]) -> dict[str, Any]:
    """A retrain heatmap check's entry with ``images_by_class``: its images grouped by
    the golden's class, the class with the most failing images first
    (:func:`convviz_check.report.classes.class_groups`)."""
    if entry.get("kind") == "heatmap" and entry.get("profile") == "retrain":
        groups = class_groups(entry)
        if groups:
            entry["images_by_class"] = groups
    return entry


def _rel(path: str, start: Path) -> str:
    try:
        return Path(os.path.relpath(path, start)).as_posix()
    except ValueError:  # another drive on Windows
        return Path(path).as_uri()


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _anchor(entry: Mapping[str, Any]) -> str:
    return "c-" + "".join(
        ch if ch.isalnum() else "-" for ch in f"{entry.get('nodeid')}-{entry.get('check')}"
    )


def _value(metric: Mapping[str, Any]) -> str:
    value, bound = metric.get("value"), metric.get("bound")
    if isinstance(value, int | float) and isinstance(bound, int | float):
        return distinct_format(float(value), float(bound))[0]
    return _e(value)


def _metrics_table(kind: str, metrics: Mapping[str, Any]) -> str:
    """One row per metric: its Tolerance field, the value, the bound at full precision."""
    if not metrics:
        return ""
    rows = []
    for name, m in metrics.items():
        op = ">=" if m.get("direction") == "min" else "<="
        if m.get("bound") is None:  # reported, not judged: no bound, no verdict
            rows.append(
                f"<tr class=ok><td>{_e(field_name(kind, name))}</td>"
                f"<td>{_e(unbounded(m.get('value')))}</td><td colspan=2 class=facts>"
                + _e(unjudged_note(str(m.get("note") or "")))
                + "</td></tr>"
            )
            continue
        rows.append(
            f"<tr class={'ok' if m.get('ok') else 'bad'}><td>{_e(field_name(kind, name))}</td>"
            f"<td>{_value(m)}</td><td>{_e(op)} {_e(exact(m.get('bound')))}</td>"
            f"<td>{'ok' if m.get('ok') else 'OUT'}</td></tr>"
        )
    head = "<tr><th>metric</th><th>value</th><th>bound</th><th></th></tr>"
    return f"<table class=metrics>{head}{''.join(rows)}</table>"


def _out(value: float, metric: Mapping[str, Any]) -> bool:
    """A per-item value outside its metric's bound, by the one pass rule."""
    bound = metric.get("bound")
    if not isinstance(bound, int | float):
        return False
    direction = str(metric.get("direction", "max"))
    return not MetricResult.judge("", value, float(bound), direction).ok


def _items_table(entry: Mapping[str, Any]) -> str:
    """Per layer / image / filter: every metric, cells out of bounds in red, and the
    first item (in order: for activations, the shallowest layer) that leaves its
    bounds: where the change begins."""
    if entry.get("profile") == "retrain" and entry.get("kind") == "pattern":
        return channel_table(entry)  # judged by pattern response: per golden channel
    if entry.get("profile") == "retrain":
        return _retrain_items_table(entry)
    items: Mapping[str, Mapping[str, Any]] = entry.get("per_item") or {}
    metrics: Mapping[str, Mapping[str, Any]] = entry.get("metrics") or {}
    names = [n for n in metrics if any(n in f for f in items.values())]
    if len(items) < 2 or not names:
        return ""
    unit = ITEM_UNIT.get(str(entry.get("kind")), "item")
    rows = []
    for item, facts in items.items():
        cells = []
        for n in names:
            v = facts.get(n)
            out = isinstance(v, int | float) and _out(float(v), metrics[n])
            shown = _value({**metrics[n], "value": v}) if isinstance(v, int | float) else "-"
            cells.append(f"<td class={'bad' if out else 'ok'}>{_e(shown)}</td>")
        rows.append(f"<tr><td>{_e(item)}</td>{''.join(cells)}</tr>")
    first = first_out_of_bounds(items, {n: _metric(n, m) for n, m in metrics.items()})
    head = "".join(_wrapping_th(field_name(str(entry.get("kind")), n)) for n in names)
    begins = f"<p class=begins>first {unit} out of bounds: <b>{_e(first)}</b></p>" if first else ""
    return (
        f"<details open><summary>per {unit} ({len(items)}, in order)</summary>{begins}"
        f"<div class=scroll><table class=items><tr><th>{unit}</th>{head}</tr>"
        f"{''.join(rows)}</table></div></details>"
    )


def _wrapping_th(name: str) -> str:
    """A header that may wrap after each underscore: six heatmap metric names in one
    line made the per-image table wider than a 1200 px window (seen)."""
    return f"<th>{'_<wbr>'.join(_e(part) for part in name.split('_'))}</th>"


def _pair(values: Any, fmt: str = "{}") -> str:
    if not isinstance(values, list | tuple) or len(values) != 2:
        return "-"
    return f"{fmt.format(values[0])} \u2192 {fmt.format(values[1])}"


def _retrain_items_table(entry: Mapping[str, Any]) -> str:
    """Per image under the retrain profile: rank correlation, top-10% IoU, the
    explained class, and with boxes the energy in the box (golden -> obtained, and its
    drop), the pointing game and where each peak lies. Red: a changed class, a drop
    over the per-image bound, a hit lost."""
    items: Mapping[str, Mapping[str, Any]] = entry.get("per_item") or {}
    if not items:
        return ""
    metrics: Mapping[str, Mapping[str, Any]] = entry.get("metrics") or {}
    boxes = any("box_energy" in f for f in items.values())
    classes = any("class_index" in f for f in items.values())
    drop_bound = (metrics.get("box_energy_drop") or {}).get("bound")
    head = ["image", "spearman", "top-10% IoU"] + (["class"] if classes else [])
    if boxes:
        head += ["energy in box", "drop", "pointing", "peak"]
    rows = []
    for item in by_class_order(entry):  # grouped by the golden's class, worst first
        f = items[item]
        cells = [f"<td>{_e(item)}</td>"]
        for key in ("spearman", "topk_iou"):
            v = f.get(key)
            shown = f"{v:.3f}" if isinstance(v, int | float) else "degenerate"
            cells.append(f"<td>{_e(shown)}</td>")
        if classes:
            pair = f.get("class_index") or []
            changed = len(pair) == 2 and pair[0] != pair[1]
            named = [class_text(c, entry.get("class_names")) for c in pair]
            cells.append(f"<td class={'bad' if changed else 'ok'}>{_e(_pair(named))}</td>")
        if boxes:
            drop = f.get("box_energy_drop")
            out = (
                isinstance(drop, int | float)
                and isinstance(drop_bound, int | float)
                and float(drop) > float(drop_bound)
            )
            hits = f.get("pointing") or []
            lost = len(hits) == 2 and hits[0] and not hits[1]
            where = f.get("peak_where") or []
            cells += [
                f"<td>{_e(_pair(f.get('box_energy'), '{:.2f}'))}</td>",
                f"<td class={'bad' if out else 'ok'}>"
                f"{_e(f'{drop:.2f}' if isinstance(drop, int | float) else '-')}</td>",
                f"<td class={'bad' if lost else 'ok'}>"
                f"{_e(_pair([('hit' if h else 'miss') for h in hits]))}</td>",
                f"<td class={'bad' if lost else 'ok'}>{_e(_pair(where))}</td>",
            ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    bound = f"; red: a drop over {exact(drop_bound)}, a hit lost" if boxes else ""
    return (
        f"<details open><summary>per image ({len(items)}; by the golden's class, the worst "
        f"first; golden \u2192 obtained{bound})"
        f"</summary><div class=scroll><table class=items><tr>{header}</tr>{''.join(rows)}"
        "</table></div></details>"
    )


def _images(entry: Mapping[str, Any], results_dir: Path) -> str:
    figures = []
    for role in ("expected", "obtained", "diff"):
        path = (entry.get("images") or {}).get(role)
        if not path:
            continue
        caption = role
        shown = (entry.get("details") or {}).get("worst_item")
        if entry.get("kind") == "activation" and shown and role != "diff":
            caption = f"{role}: layer {shown}, first image"
        if role == "diff" and entry.get("diff_scale") is not None:
            caption = (
                f"diff |expected - obtained|, scaled to its own max: white = "
                f"{float(entry['diff_scale']):.3g}"
            )
            if float(entry["diff_scale"]) == 0:  # "white = 0" read as a broken picture
                caption = "diff |expected - obtained|: identical (0 everywhere)"
        if entry.get("shown"):  # the worst images, not the first ones
            legend = _marks_legend(entry, "green" if role == "diff" else "white")
            caption += f"; {', '.join(entry['shown'])}, the worst first" + legend
        figures.append(
            f"<figure><img src='{_e(_rel(path, results_dir))}' alt='{_e(role)}'>"
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )
    return f"<div class=images>{''.join(figures)}</div>" if figures else ""


def _marks_legend(entry: Mapping[str, Any], box_colour: str = "white") -> str:
    """What the lines on a heatmap check's pictures are (object boxes, regions)."""
    details = entry.get("details") or {}
    boxes = bool(details.get("boxes")) or "box_energy" in str(entry.get("per_item"))
    builtin = ("box", "outside", "border", "top_left", "top_right", "bottom_left", "bottom_right")
    user = [n for n in details.get("regions") or {} if n not in builtin]
    parts = ([f"{box_colour}: the object box"] if boxes else []) + (
        [f"dashed cyan: {', '.join(user)}"] if user else []
    )
    return f" ({'; '.join(parts)})" if parts else ""


def _card(entry: Mapping[str, Any], results_dir: Path) -> str:
    if is_judgment(entry):
        return judgment_card(entry, results_dir, _anchor(entry))
    status = str(entry.get("status", "?"))
    commands = "".join(f"<pre class=cmd>{_e(c)}</pre>" for c in entry.get("commands") or [])
    return (
        f"<section class='card {_e(status)}' id='{_anchor(entry)}'>"
        f"<h2><span class=badge>{_e(status)}</span> {_e(entry.get('nodeid', ''))} :: "
        f"{_e(entry.get('check', ''))} <small>({_e(entry.get('kind', ''))}"
        + (f", profile {_e(entry['profile'])}" if entry.get("profile") else "")
        + ")</small></h2>"
        + (f"<pre>{_e(entry['message'])}</pre>" if entry.get("message") else "")
        + _images(entry, results_dir)
        + each_image_html(entry, results_dir)
        + _metrics_table(str(entry.get("kind")), entry.get("metrics") or {})
        + (by_class_html(entry) if entry.get("profile") == "retrain" else "")
        + _items_table(entry)
        + (f"<h3>to accept this result</h3>{commands}" if commands else "")
        + f"<p class=paths>golden: {_e(entry.get('golden', ''))}</p></section>"
    )


def _metric(name: str, m: Mapping[str, Any]) -> MetricResult:
    """A metric of ``report.json`` back as a MetricResult."""
    value = m.get("value")
    return MetricResult(
        name,
        float(value) if isinstance(value, int | float) else float("nan"),
        m.get("bound"),
        bool(m.get("ok")),
        str(m.get("direction", "max")),
    )


def _worst(entry: Mapping[str, Any]) -> float:
    distances = [
        _metric(str(k), m).distance
        for k, m in (entry.get("metrics") or {}).items()
        if isinstance(m.get("value"), int | float)
    ]
    return max(distances, default=float("inf"))


def _headline(entry: Mapping[str, Any]) -> str:
    """The line a summary shows after a failing entry's status: a judgment's lead; for
    a golden check the metric farthest out of its bound (what failed, not the facts
    that always change after a retrain, such as the model fingerprint), else the
    message's first line after its title."""
    if is_judgment(entry):
        return f" ({_e(entry.get('judgment'))}), {_e(entry.get('lead', ''))}"
    out = [
        (_metric(str(k), m), str(k))
        for k, m in (entry.get("metrics") or {}).items()
        if not m.get("ok") and isinstance(m.get("value"), int | float)
    ]
    if out:
        metric, name = max(out, key=lambda mn: mn[0].distance)
        op = ">=" if metric.direction == "min" else "<="
        field = field_name(str(entry.get("kind")), name)
        value = _value({"value": metric.value, "bound": metric.bound})
        return f", {_e(field)} {value} (bound {_e(op)} {_e(exact(metric.bound))})"
    lines = str(entry.get("message", "")).splitlines()
    return f", {_e(lines[1])}" if len(lines) > 1 else ""


def _summary(data: Mapping[str, Any], entries: list[Mapping[str, Any]]) -> str:
    counts = data.get("summary", {})
    badges = " ".join(
        f"<span class='badge {_e(k)}'>{v} {_e(k)}</span>"
        for k, v in sorted(counts.items(), key=lambda kv: STATUS_ORDER.get(kv[0], 9))
    )
    facts = ", ".join(
        f"{k.replace('_', ' ')}: {_e(data[k])}"
        for k in ("backend", "golden_backend", "golden_dir")
        if data.get(k)
    )
    bad = [e for e in entries if e.get("status") in ("failed", "error", "missing")]
    goldens = [e for e in bad if not is_judgment(e)]
    worst = sorted(goldens, key=_worst, reverse=True)[:10]
    links = "".join(
        f"<li><a href='#{_anchor(e)}'>{_e(e.get('nodeid'))} :: {_e(e.get('check'))}</a> "
        f"<small>{_e(e.get('status'))}{_headline(e)}</small></li>"
        for e in worst
    )
    # Judgments: one line per test and kind (a test may judge every image on its own).
    for group in _judgment_groups([e for e in bad if is_judgment(e)]):
        first = group[0]
        total = sum(
            1
            for e in entries
            if is_judgment(e)
            and (e.get("nodeid"), e.get("judgment")) == (first.get("nodeid"), first.get("judgment"))
        )
        many = f"{len(group)} of {total} failed: " if total > 1 else ""
        target = ("g-" if len(group) >= GALLERY_FROM else "") + _anchor(first)
        links += (
            f"<li><a href='#{target}'>{_e(first.get('nodeid'))} :: "
            f"{_e(first.get('judgment'))}</a> <small>{_e(many)}{_e(first.get('lead', ''))}"
            "</small></li>"
        )
    listing = f"<h2>Worst checks</h2><ol>{links}</ol>" if links else "<p>Every check passed.</p>"
    return f"<section class=summary><p>{badges}</p><p class=facts>{facts}</p>{listing}</section>"


def _judgment_groups(entries: list[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Judgment entries grouped by test and kind, in order of first appearance."""
    groups: dict[tuple[Any, Any], list[Mapping[str, Any]]] = {}
    for e in entries:
        groups.setdefault((e.get("nodeid"), e.get("judgment")), []).append(e)
    return list(groups.values())


# A test with more judgments of one kind than this shows them as one gallery.
GALLERY_FROM = 3


def _cards(entries: list[Mapping[str, Any]], results_dir: Path) -> str:
    """Each entry's card; the judgments of one kind that one test made in numbers (a
    localization per image) as one gallery of their first pictures, each linking to
    its card, the cards folded below it."""
    out, done = [], set()
    for e in entries:
        if id(e) in done:
            continue
        group = [
            g
            for g in entries
            if is_judgment(e)
            and is_judgment(g)
            and (g.get("nodeid"), g.get("judgment"), g.get("status"))
            == (e.get("nodeid"), e.get("judgment"), e.get("status"))
        ]
        if len(group) < GALLERY_FROM:
            out.append(_card(e, results_dir))
            done.add(id(e))
            continue
        done.update(id(g) for g in group)
        out.append(_gallery(group, results_dir))
    return "".join(out)


def _gallery(group: list[Mapping[str, Any]], results_dir: Path) -> str:
    first = group[0]
    status = str(first.get("status", ""))
    tiles = []
    for e in group:
        path = next(iter((e.get("images") or {}).values()), None)
        picture = (
            f"<img src='{_e(_rel(path, results_dir))}' alt='{_e(e.get('check'))}'>" if path else ""
        )
        tiles.append(
            f"<figure><a href='#{_anchor(e)}'>{picture}</a><figcaption>"
            f"{_e(e.get('check'))}</figcaption></figure>"
        )
    cards = "".join(_card(e, results_dir) for e in group)
    return (
        f"<section class='card {_e(status)}' id='g-{_anchor(first)}'>"
        f"<h2><span class=badge>{_e(status)}</span> {_e(first.get('nodeid', ''))} :: "
        f"{len(group)} {_e(first.get('judgment'))} judgments</h2>"
        f"<p class=lead>{_e(first.get('lead', ''))} (the first; each below)</p>"
        f"<div class='images gallery'>{''.join(tiles)}</div>"
        f"<details><summary>the {len(group)} judgments one by one</summary>{cards}</details>"
        "</section>"
    )


def render_html(data: Mapping[str, Any], results_dir: Path) -> str:
    """A static page: a summary (counts by status, the worst checks), one card per
    check that needs attention (images side by side, metrics, per-item table, the
    commands that accept it), the passing checks folded, unused goldens."""
    entries = list(data.get("entries", []))
    needs = [e for e in entries if e.get("status") in ("failed", "error", "missing")]
    rest = [e for e in entries if e not in needs]
    # the cards in the order of the summary's "Worst checks" list (the golden checks
    # farthest out first, then the judgments): a reader who reads on from the list
    # meets its first entry first
    needs = sorted((e for e in needs if not is_judgment(e)), key=_worst, reverse=True) + [
        e for e in needs if is_judgment(e)
    ]
    folded = ""
    if rest:
        cards = _cards(rest, results_dir)
        folded = (
            f"<details><summary>{len(rest)} passing or written check(s)</summary>{cards}</details>"
        )
    unused = data.get("unused") or {}
    unused_html = ""
    if unused.get("files"):
        items = "".join(f"<li>{_e(f)}</li>" for f in unused["files"])
        unused_html = (
            f"<section class=card><h2>Unused goldens ({_e(unused.get('action', ''))})</h2>"
            f"<ul>{items}</ul></section>"
        )
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>convviz_check report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }}
.card {{ border: 1px solid #ccc; border-radius: 6px; padding: .5em 1em; margin: 1em 0; }}
.card.failed, .card.error, .card.missing {{ border-color: #c00; }}
.badge {{ font-size: .85em; padding: .1em .5em; border-radius: 4px; background: #eee; }}
.failed .badge, .error .badge, .missing .badge, .badge.failed, .badge.error, .badge.missing
  {{ background: #c00; color: #fff; }}
.passed .badge, .badge.passed {{ background: #2a2; color: #fff; }}
.written .badge, .badge.written {{ background: #26c; color: #fff; }}
.skipped .badge, .badge.skipped {{ background: #b80; color: #fff; }}
.images {{ display: flex; gap: 1em; flex-wrap: wrap; align-items: flex-start; }}
figure {{ margin: 0; }} figcaption {{ font-size: .85em; color: #555; max-width: 420px; }}
img {{ image-rendering: pixelated; max-width: 560px; border: 1px solid #ddd; }}
table {{ border-collapse: collapse; margin: .5em 0; }}
td, th {{ padding: .1em .7em; text-align: left; border-bottom: 1px solid #eee; }}
td.bad, tr.bad {{ color: #c00; font-weight: bold; }}
pre {{ background: #f6f6f6; padding: .5em; white-space: pre-wrap; }}
pre.cmd {{ background: #eef3ff; }}
.scroll {{ overflow-x: auto; }} table.items {{ font-size: .9em; }}
table.items th {{ vertical-align: bottom; }}
table.items td:first-child, td.mass {{ white-space: nowrap; }} td.which {{ min-width: 20em; }}
.begins {{ color: #c00; }}
.facts, .paths {{ color: #555; font-size: .9em; }}
.lead {{ font-weight: 600; }}
.images.each {{ gap: .75em; }} .each figure {{ width: 280px; }} .each img {{ max-width: 100%; }}
.gallery img {{ max-width: 128px; }} .gallery figcaption {{ text-align: center; }}
</style></head><body>
<h1>convviz_check report</h1>
{_summary(data, entries)}
{unused_html}
{_cards(needs, results_dir)}
{folded}
</body></html>
"""
