"""The text of a comparison: what changed most plainly first, then each metric against
its bound, the peak positions and the share of values out of tolerance.

Built only from plain data (the metrics and the JSON-ready ``details`` of a
:class:`~convviz_check.types.Comparison`), so a report can write it again from
``report.json``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from ..evidence import VERDICTS
from ..types import ITEM_UNIT, PROFILE_METRICS, MetricResult

# Plain changes (class, degeneracy) listed one per line for at most this many images.
MAX_LISTED = 5


def comparison_text(
    kind: str, metrics: Mapping[str, MetricResult], details: Mapping[str, Any], passed: bool
) -> str:
    """The human-readable summary of one comparison, under any profile (see the module
    docstring): the plain causes first (the explained class, degeneracy, the peak, the
    energy in the object box), then the verdict and each metric against its bound."""
    items: dict[str, dict[str, Any]] = dict(details["per_item"])
    n = len(items)
    batch = n > 1
    worst_name = str(details["worst_item"])
    worst = items.get(worst_name, {})
    profile = details.get("profile")

    def where(name: str) -> str:
        return f" ({name})" if batch else ""

    lines = verdict_lines(metrics, details)
    lines += _class_agreement(metrics, details, n)
    lines += plain_changes(items, metrics, where)
    lines += _box_lines(items, metrics)
    unit = ITEM_UNIT[kind]
    summary = f"{kind} comparison {'passed' if passed else 'FAILED'}"
    summary += f" ({n} {unit}{'s' if n != 1 else ''}"
    if profile is not None:
        summary += f", profile {profile})"
    else:
        summary += f", worst {worst_name})" if batch and not passed else ")"
    lines.append(summary)
    first = first_out_of_bounds(items, metrics)
    if batch and first is not None and not passed:
        order = " (depth order)" if kind == "activation" else ""
        lines.append(f"first {unit} out of bounds{order}: {first}")
    lines += _both_degenerate(items)
    names = {m.name: field_name(kind, m.name) for m in metrics.values()}
    width = max((len(name) for name in names.values()), default=0)
    lines += ["  " + metric_line(m, width, names[m.name]) for m in metrics.values()]
    if "peak_shift" in metrics and worst.get("peak_expected") is not None:
        lines.append(
            f"peak expected {cell(worst['peak_expected'])}, obtained "
            f"{cell(worst['peak_obtained'])}{where(worst_name)}"
        )
    if profile is None:  # the retrain profile bounds what a retrain keeps, not values
        scale = {"activation": " x scale", "pattern": " x range"}.get(kind, "")
        lines.append(
            f"share of values out of pixel_atol={details['pixel_atol']:g}{scale}: "
            f"{100 * details['share_out']:.2f}% ({details['n_out']} of {details['n_total']})"
        )
    if details.get("boxes") is False:
        lines.append(
            "no object boxes: energy in the box and the pointing game not judged (pass "
            "boxes= to convviz.check)"
        )
    before, after = details.get("layer_expected"), details.get("layer_obtained")
    if before is not None and before != after:
        lines.append(f"target layer changed: {before!r} -> {after!r}")
    lines += list(details.get("notes", []))
    return "\n".join(lines)


def first_out_of_bounds(
    items: Mapping[str, Mapping[str, Any]], metrics: Mapping[str, MetricResult]
) -> str | None:
    """The first item, in the order computed (layers: shallowest first), with a
    metric beyond its bound: where a change begins."""
    for name, facts in items.items():
        for metric in metrics.values():
            value = facts.get(metric.name)
            if metric.bound is None or not isinstance(value, int | float):
                continue
            if not MetricResult.judge(metric.name, value, metric.bound, metric.direction).ok:
                return name
    return None


def _both_degenerate(items: Mapping[str, Mapping[str, Any]]) -> list[str]:
    both = [name for name, f in items.items() if list(f.get("degenerate", ())) == [True, True]]
    if both and len(both) == len(items):
        return [
            "both degenerate: every map is degenerate on both sides (no information); "
            "heatmap metrics not measured"
        ]
    if both:
        return [f"degenerate on both sides, not measured: {', '.join(both)}"]
    return []


def plain_changes(
    items: Mapping[str, Mapping[str, Any]],
    metrics: Mapping[str, MetricResult],
    where: Callable[[str], str],
) -> list[str]:
    """The plainest changes, most plain first: top class, degeneracy, peak position."""
    lines = []
    changed = [
        (name, f["class_index"])
        for name, f in items.items()
        if f.get("class_index") is not None and f["class_index"][0] != f["class_index"][1]
    ]
    for name, (was, now) in changed[:MAX_LISTED]:
        lines.append(f"top class changed: {was} -> {now}{where(name)}")
    if len(changed) > MAX_LISTED:
        lines.append(f"top class changed in {len(changed) - MAX_LISTED} more images")
    flipped = [
        (name, f["degenerate"])
        for name, f in items.items()
        if f.get("degenerate") is not None and f["degenerate"][0] != f["degenerate"][1]
    ]
    for name, (was_degenerate, _) in flipped[:MAX_LISTED]:
        before, after = (
            ("degenerate", "meaningful") if was_degenerate else ("meaningful", "degenerate")
        )
        lines.append(
            f"degenerate changed: expected a {before} map, obtained a {after} map{where(name)}"
        )
    if len(flipped) > MAX_LISTED:
        lines.append(f"degenerate changed in {len(flipped) - MAX_LISTED} more images")
    shift = metrics.get("peak_shift")
    if shift is not None and not shift.ok:
        name, facts = max(
            ((n, f) for n, f in items.items() if "peak_shift" in f),
            key=lambda pair: pair[1]["peak_shift"],
        )
        lines.append(
            f"peak moved {facts['peak_shift']:.3g} cells: {cell(facts.get('peak_expected'))} -> "
            f"{cell(facts.get('peak_obtained'))}{where(name)}"
        )
    return lines


def cell(value: Any) -> str:
    """``(row r, col c)`` of a ``[row, col]`` pair, ``n/a`` when unknown."""
    return "n/a" if value is None else f"(row {value[0]}, col {value[1]})"


def field_name(kind: str, metric: str) -> str:
    """The name a person sets the metric's bound by: its Tolerance field (``rms`` of a
    heatmap is ``heatmap_rms``); counts such as ``class_changed`` keep their name."""
    for table in PROFILE_METRICS.values():
        found = next((f for name, f, _ in table.get(kind, ()) if name == metric), None)
        if found is not None:
            return found
    return metric


def _class_agreement(
    metrics: Mapping[str, MetricResult], details: Mapping[str, Any], n: int
) -> list[str]:
    agreement = metrics.get("class_agreement")
    if agreement is None:
        return _unjudged_classes(details)
    if agreement.ok:
        return []
    flips = details.get("class_flips") or {"n": n, "changed": round(n * (1 - agreement.value))}
    counted = flips["n"]
    who = " confident" if flips.get("confident") is not None else ""
    return [
        f"the explained class changed in {flips['changed']}/{counted}{who} images "
        f"(agreement {agreement.value:.3g}; bound >= {exact(agreement.bound)})"
    ]


def _unjudged_classes(details: Mapping[str, Any]) -> list[str]:
    """Why changed classes failed nothing, when no image was confident enough to count
    (an untrained or hesitant model): without this line, 6 of 6 images changing class
    read beside a class-flip share of 0 and no class verdict."""
    flips = details.get("class_flips") or {}
    before, after = details.get("class_index_expected"), details.get("class_index_obtained")
    if flips.get("n") != 0 or flips.get("confident") is None or before is None or after is None:
        return []
    changed = sum(int(a != b) for a, b in zip(before, after, strict=False))
    if not changed:
        return []
    return [
        f"class changes not judged: {changed} of {len(before)} images changed their top "
        f"class, but no image's golden probability reaches {flips['confident']:g} (the "
        "class metrics count confident images only)"
    ]


# "looks elsewhere" metrics, plainest first: the one a failing text leads with.
_ELSEWHERE_ORDER = (
    "region_shift",
    "box_energy_drop_mean",
    "box_energy_drop",
    "pointing_drop",
    "topk_iou_mean",
    "spearman_mean",
    "degenerate_changed",
)


def verdict_lines(metrics: Mapping[str, MetricResult], details: Mapping[str, Any]) -> list[str]:
    """The failed verdicts of a retrain comparison (``details["verdicts"]``), each with
    its plainest number, then the per-class table of the region that shifted; empty
    for other profiles and for a passing comparison."""
    verdicts = details.get("verdicts")
    if not verdicts:
        return []
    lines = []
    for verdict in VERDICTS:
        failed = verdicts.get(verdict, {}).get("metrics", [])
        if not failed:
            continue
        if verdict == "predicts differently":
            lead = _predicts_differently(details.get("class_flips"), metrics)
            others = [m for m in failed if m not in ("class_agreement", "class_flip_share")]
        else:
            first = min(failed, key=_ELSEWHERE_ORDER.index)
            lead = _looks_elsewhere(first, metrics[first], details)
            others = [m for m in failed if m != first]
        also = f" (also failed: {', '.join(others)})" if others else ""
        lines.append(f"{verdict}: {lead}{also}")
    if "region_shift" in verdicts.get("looks elsewhere", {}).get("metrics", []):
        lines.append(_region_table(details))
    return lines


def _predicts_differently(flips: Any, metrics: Mapping[str, MetricResult]) -> str:
    if not flips:  # classes unknown on one side: only the counts say it
        return ", ".join(f"{k} {m.value:.3g}" for k, m in metrics.items() if not m.ok)
    who = "confident images" if flips.get("confident") is not None else "images"
    changed, towards = flips["changed"], flips["towards"]
    text = f"{changed} of {flips['n']} {who} changed class"
    if not towards:
        return text
    top_class, top = towards[0]
    if len(towards) == 1:
        where = f"all {top} to class {top_class}" if changed > 1 else f"to class {top_class}"
    else:
        where = f"{top} of them to class {top_class}, the rest to {len(towards) - 1} other class"
        where += "es" if len(towards) > 2 else ""
    return f"{text}, {where}"


def _region_words(region: str) -> str:
    if region in ("top_left", "top_right", "bottom_left", "bottom_right"):
        return f"the {region} corner's mass"
    if region == "border":
        return "the border's mass"
    if region == "outside":
        return "the mass outside the object box"
    return f"the mass in region {region!r}"


def _looks_elsewhere(name: str, metric: MetricResult, details: Mapping[str, Any]) -> str:
    if name == "region_shift":
        row = details["region_shift"]
        group = "images" if row["group"] == "all" else f"images of {row['group']}"
        return (
            f"{_region_words(row['region'])} grew by more than {row['growth']:.2g} in "
            f"{row['k']} of {row['n']} {group} (mean {row['mean'][0]:.2f} -> "
            f"{row['mean'][1]:.2f})"
        )
    words = {
        "box_energy_drop_mean": "the mean energy in the object box fell by",
        "box_energy_drop": "one image's energy in the object box fell by",
        "pointing_drop": "the pointing game lost a share of images of",
        "topk_iou_mean": "the hottest 10% of the map overlaps the golden's (mean IoU)",
        "spearman_mean": "the maps rank the pixels differently (mean Spearman)",
        "degenerate_changed": "maps that became or stopped being degenerate:",
    }[name]
    note = f"; {metric.note}" if metric.note else ""
    return f"{words} {metric.value:.3g} ({name}{note})"


def _region_table(details: Mapping[str, Any]) -> str:
    """One line: the shifted region's mean mass per class, golden -> now, and how many
    images grew there."""
    region = details["region_shift"]["region"]
    parts = []
    for row in details.get("by_class", []):
        mass = row["mass"].get(region)
        if mass is None:
            continue
        who = "all" if row["class"] is None else f"class {row['class']}"
        grown = row["grown"].get(region)
        count = f", {grown} of {row['n']} grew" if grown is not None else f", n={row['n']}"
        parts.append(f"{who} {mass[0]:.2f} -> {mass[1]:.2f}{count}")
    return f"  {region} mass per class, golden -> now: " + "; ".join(parts)


def _box_lines(
    items: Mapping[str, Mapping[str, Any]], metrics: Mapping[str, MetricResult]
) -> list[str]:
    """Where the mass went, from the images' box facts: the energy in the object box
    (golden, now), where the peaks that left the box went, the pointing game, the
    largest drop of one image."""
    boxed = [f for f in items.values() if f.get("box_energy") is not None]
    if not boxed:
        return []
    n = len(boxed)
    lines = []
    drop = metrics.get("box_energy_drop_mean")
    if drop is not None:
        before = sum(f["box_energy"][0] for f in boxed) / n
        after = sum(f["box_energy"][1] for f in boxed) / n
        change = (
            f" fell from {before:.2f} to {after:.2f}"
            if not drop.ok
            else f": {before:.2f} in the golden, {after:.2f} now"
        )
        lines.append(
            f"energy in the object box{change} (mean over {n} images; bound: drop <= "
            f"{exact(drop.bound)})"
        )
    moved: dict[str, int] = {}
    for f in boxed:
        if list(f.get("pointing", ())) == [True, False]:
            place = str(f["peak_where"][1])
            moved[place] = moved.get(place, 0) + 1
    left = dict(sorted(moved.items(), key=lambda kv: (-kv[1], kv[0])))  # most first
    if left:
        count = sum(left.values())
        if len(left) == 1:
            lines.append(
                f"peak moved from inside the box to {next(iter(left))} in {count}/{n} images"
            )
        else:
            parts = ", ".join(f"{place} {k}" for place, k in left.items())
            lines.append(f"peak moved from inside the box in {count}/{n} images: to {parts}")
    hits = [sum(bool(f["pointing"][side]) for f in boxed) for side in (0, 1)]
    lines.append(f"pointing game: {hits[0]}/{n} hits in the golden, {hits[1]}/{n} now")
    worst_drop = metrics.get("box_energy_drop")
    if worst_drop is not None and not worst_drop.ok:
        lines.append(
            f"largest energy drop of one image: {worst_drop.value:.2f} ({worst_drop.note}; "
            f"bound: drop <= {exact(worst_drop.bound)})"
        )
    return lines


def metric_line(m: MetricResult, width: int, name: str | None = None) -> str:
    """``name value <= max bound  ok`` with the value written precisely enough to show
    which side of the bound it is on (``name`` defaults to the metric's own)."""
    name = name or m.name
    if m.bound is None:  # reported, not judged: no verdict, and a value to read
        return f"{name:<{width}} {unbounded(m.value)}  ({unjudged_note(m.note)})"
    v, b = distinct_format(m.value, m.bound)
    if m.direction == "max":
        relation, side = ("<=" if m.ok else ">"), "max"
    else:
        relation, side = (">=" if m.ok else "<"), "min"
    note = f"  ({m.note})" if m.note else ""
    return f"{name:<{width}} {v} {relation} {side} {b}  {'ok' if m.ok else 'FAIL'}{note}"


def unjudged_note(note: str) -> str:
    """A metric's note with "not judged" said once: ``"2 of 13 ...; not judged"``."""
    return note if "not judged" in note else "; ".join(filter(None, [note, "not judged"]))


def unbounded(value: Any) -> str:
    """A value no bound judges, to 3 significant digits (``0.154``, not
    ``0.15384615384615385``): nothing depends on its last digits."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.3g}"
    return str(value)


def exact(value: float | None) -> str:
    """The shortest text that reads back as ``value`` (integers without ``.0``): bounds
    are printed at full precision, so 0.99999 never shows as 1."""
    if value is None:
        return ""
    value = float(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def distinct_format(value: float, bound: float) -> tuple[str, str]:
    """The bound exactly (:func:`exact`); the value with one digit more than the bound
    has (at least 3), and more while rounding would blur which side of the bound it is
    on or make it read as the bound itself."""
    if not math.isfinite(value):
        return str(value), exact(bound)
    b = exact(bound)
    digits = max(3, len(b.lstrip("-0.").split("e")[0].replace(".", "")) + 1)
    for d in range(digits, 17):
        v = f"{value:.{d}g}"
        same_side = (float(v) <= bound) == (value <= bound) and (float(v) >= bound) == (
            value >= bound
        )
        if same_side and (v != b or value == bound):
            return v, b
    return repr(value), b


def channel_table(entry: Mapping[str, Any]) -> str:
    """A filter-pattern check judged under ``retrain`` (pattern response): one row per
    golden channel with its match, correlation, gap, both ratios and the response kept;
    a lost channel's row in red. HTML; ``""`` without channels."""
    import html

    items: Mapping[str, Mapping[str, Any]] = entry.get("per_item") or {}
    if not items:
        return ""
    keys = ("match", "correlation", "gap", "golden_ratio", "new_ratio", "response_kept")
    rows = "".join(
        f"<tr class={'ok' if facts.get('ok', True) else 'bad'}><td>{html.escape(name)}</td>"
        + "".join(f"<td>{_number(facts.get(k))}</td>" for k in keys)
        + f"<td>{'yes' if facts.get('judged') else 'no'}</td></tr>"
        for name, facts in items.items()
    )
    head = "".join(f"<th>{k.replace('_', ' ')}</th>" for k in (*keys, "judged"))
    return (
        f"<details open><summary>per channel ({len(items)}; golden channel, its match in "
        "the new model)</summary><div class=scroll><table class=items>"
        f"<tr><th>channel</th>{head}</tr>{rows}</table></div></details>"
    )


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.2f}"
