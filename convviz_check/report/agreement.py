"""A cross-backend agreement report as text (what ``print(report)`` shows) and as a page
of pictures (``convviz-check agree --out DIR``).

Text, from an :class:`~convviz_check.crossbackend.agreement.AgreementReport`: a header
with the verdict, the problems and notes, one table per technique (metric, bound, one
column per backend pair, the worst item) and the details of the failing pairs. Bounds
are printed exactly as set (the shortest text that reads back as the same float:
``>= 0.99999``, never rounded to ``>= 1``); values get as many digits as it takes to
show on which side of their bound they are.

Pictures (:func:`write_pictures`), from the arrays the report keeps
(``report.results``): per technique one strip with the backends stacked and labelled
(Grad-CAM heatmaps over the input images, the worst layer's channels, the filter
patterns as compared) and the ``|a - b|`` of the worst pair scaled to its own maximum,
with that maximum printed; ``index.html`` opens on the same tables as the text, the
pictures under them. NumPy, Pillow, matplotlib colormaps and the standard library.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import storage
from ..judge.agreement import (
    AgreementReport,
    format_bound,
    format_value,
    render,
    table_rows,
    technique_table,
)
from ..render import deprocess_image
from . import pictures as pic
from .labels import labelled_rows

if TYPE_CHECKING:  # pragma: no cover - types only
    from ..artifacts import Artifact

__all__ = [
    "TechniquePictures",
    "format_bound",
    "format_value",
    "pictures",
    "render",
    "render_html",
    "table_rows",
    "technique_table",
    "write_index",
    "write_pictures",
]


# --------------------------------------------------------------------------- pictures
# At most this many channels of the worst layer are shown per backend (a preview: the
# diff picture covers the same channels).
PREVIEW_CHANNELS = 32
# Patterns are upscaled (nearest) to at least this many pixels per side.
PATTERN_TILE = 64


@dataclass
class TechniquePictures:
    """What :func:`write_pictures` drew for one technique.

    Attributes:
        technique: ``"activations"``, ``"gradcam"`` or ``"filters"``.
        strip: path of ``<technique>.png`` (the backends stacked, labelled), or "".
        caption: what the strip shows.
        diff: path of ``<technique>.diff.png``, or "" (no pair, or shapes differ).
        diff_pair: ``"a|b"``, the pair farthest from its bounds.
        diff_scale: the largest ``|a - b|`` in the picture (white in it), or None.
        diff_caption: what the diff shows, its scale included.
        error: why nothing could be drawn (a picture never fails a check).
    """

    technique: str
    strip: str = ""
    caption: str = ""
    diff: str = ""
    diff_pair: str = ""
    diff_scale: float | None = None
    diff_caption: str = ""
    error: str = ""


def write_pictures(
    report: AgreementReport,
    out_dir: str | os.PathLike[str],
    index: str = "",
    class_names: Sequence[str] | None = None,
) -> tuple[Path, list[TechniquePictures]]:
    """Write the pictures of ``report`` and ``index.html`` into ``out_dir``.

    Per technique ``<technique>.png`` (one labelled row per backend: Grad-CAM heatmaps
    over the inputs' thumbnails, or alone where the inputs are not known; the
    activations of the worst layer for the image where the worst pair differs most;
    the filter patterns as compared) and ``<technique>.diff.png`` (``|a - b|`` of the
    worst pair, scaled to its own maximum, which the picture and the page print).
    ``index``: a link back to a page over several checks (relative to ``out_dir``);
    ``class_names``: the model's, naming the explained classes (``gravel (2) x3``).

    Returns:
        (the path of ``index.html``, what was drawn per technique).
    """
    out = Path(out_dir)
    drawn = []
    for technique in report.what:
        try:
            strip, caption, diff = _draw(report, technique, class_names)
        except Exception as e:  # noqa: BLE001 - a picture must never hide the verdict
            drawn.append(TechniquePictures(technique, error=f"{type(e).__name__}: {e}"))
            continue
        made = TechniquePictures(technique, caption=caption)
        made.strip = str(storage.write_png(out / f"{technique}.png", strip))
        if diff is not None:
            image, made.diff_pair, made.diff_scale, made.diff_caption = diff
            made.diff = str(storage.write_png(out / f"{technique}.diff.png", image))
        drawn.append(made)
    page = storage.write_text(
        out / "index.html", render_html(report, drawn, out, index, class_names)
    )
    return page, drawn


def pictures(
    report: AgreementReport, class_names: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """The pictures of ``report`` as arrays, for the session report: per technique its
    strip (``<technique>``) and the worst pair's diff (``<technique>_diff``), where the
    report keeps the arrays (none on the export route). ``class_names``: the model's,
    naming the explained classes in the Grad-CAM strip's title as :func:`write_pictures`
    does. A picture that cannot be drawn is left out: it never hides the verdict."""
    drawn: dict[str, np.ndarray] = {}
    for technique in report.what:
        try:
            strip, _, diff = _draw(report, technique, class_names)
        except Exception:  # noqa: BLE001 - a picture must never hide the verdict
            continue
        drawn[technique] = strip
        if diff is not None:
            drawn[f"{technique}_diff"] = diff[0]
    return drawn


def _draw(
    report: AgreementReport, technique: str, names: Sequence[str] | None = None
) -> tuple[np.ndarray, str, tuple[np.ndarray, str, float, str] | None]:
    backends = [b for b in report.backends if technique in report.results.get(b, {})]
    if not backends:
        raise ValueError("no backend's arrays are kept in the report")
    arts = {b: report.results[b][technique] for b in backends}
    worst = report.worst(technique)
    pair = (worst[0].expected, worst[0].obtained) if worst is not None else None
    if pair is not None and not all(b in arts for b in pair):
        pair = None
    if technique == "gradcam":
        return _gradcam(report, arts, pair, names)
    if technique == "activations":
        return _activations(arts, pair, worst[1] if worst is not None else "")
    return _filters(arts, pair)


def _diff_title(pair: tuple[str, str], scale: float, unit: str = "") -> str:
    if scale == 0:
        return f"|{pair[0]} - {pair[1]}|: identical (0 everywhere)"
    return f"|{pair[0]} - {pair[1]}|, scaled to its own max: white = {scale:.3g}{unit}"


def named_classes(classes: Sequence[int], names: Sequence[str] | None) -> str:
    """The explained classes, each once with its count: ``gravel (2) x3, sky (6) x1``
    (``2 x3`` without names): a list of eight equal indices says less, and no name.

    Example:
        >>> named_classes([2, 2, 6], ["a", "b", "gravel", "c", "d", "e", "sky"])
        'gravel (2) x2, sky (6) x1'
    """
    known = list(names or [])
    labels = [f"{known[c]} ({c})" if 0 <= c < len(known) else str(c) for c in map(int, classes)]
    return ", ".join(f"{n} x{labels.count(n)}" for n in dict.fromkeys(labels))


def _gradcam(
    report: AgreementReport,
    arts: Mapping[str, Artifact],
    pair: tuple[str, str] | None,
    names: Sequence[str] | None = None,
) -> tuple[np.ndarray, str, tuple[np.ndarray, str, float, str] | None]:
    ref = next(iter(arts.values()))
    classes = np.asarray(ref.arrays["class_index"]).reshape(-1).tolist()
    shown = min(len(classes), pic.MAX_TILES)
    more = f" (the first {shown} of {len(classes)})" if len(classes) > shown else ""
    over = (
        "over the input images"
        if report.inputs is not None
        else "drawn alone (the export route keeps no input images)"
    )
    title = f"Grad-CAM, layer {ref.attrs.get('layer')}: class per image {classes[:shown]}"
    if names is not None:
        title = f"Grad-CAM, layer {ref.attrs.get('layer')}: {named_classes(classes, names)}"
    rows = [(b, pic.picture(a, inputs=report.inputs)) for b, a in arts.items()]
    caption = (
        f"One row per backend, one column per image{more}; heatmaps {over}, 0 (blue) to 1 (red)."
    )
    diff = None
    if pair is not None:
        made = pic.diff_image(arts[pair[0]], arts[pair[1]])
        if made is not None:
            image, scale = made
            text = _diff_title(pair, scale)
            diff = (labelled_rows([("", image)], text), "|".join(pair), scale, text)
    return labelled_rows(rows, title), caption, diff


def _as_hwc(a: np.ndarray) -> np.ndarray:
    """One image's activation as ``(H, W, C)``: a vector is a 1x1 map of channels."""
    a = np.asarray(a, np.float32)
    while a.ndim > 3:
        a = a[0]
    if a.ndim == 2:
        return a[..., None]
    return a.reshape(1, 1, -1) if a.ndim == 1 else a


def _activations(
    arts: Mapping[str, Artifact], pair: tuple[str, str] | None, layer: str
) -> tuple[np.ndarray, str, tuple[np.ndarray, str, float, str] | None]:
    ref = next(iter(arts.values()))
    layer = layer if layer in ref.arrays else next(iter(ref.arrays))
    values = {b: np.asarray(a.arrays[layer]) for b, a in arts.items() if layer in a.arrays}
    image, why = 0, "the first image"
    if pair is not None and all(b in values for b in pair):
        a, b = values[pair[0]], values[pair[1]]
        if a.shape == b.shape and a.ndim >= 2 and a.shape[0] > 1:
            per_image = np.abs(a.astype(np.float64) - b).reshape(a.shape[0], -1).max(axis=1)
            image = int(np.nan_to_num(per_image).argmax())
            why = f"the image where {pair[0]} and {pair[1]} differ most"
    one = {b: _as_hwc(v[image] if v.ndim >= 2 else v) for b, v in values.items()}
    channels = next(iter(one.values())).shape[-1]
    shown = min(channels, PREVIEW_CHANNELS)
    title = f"activations of layer {layer}, image {image}, channels 0-{shown - 1} of {channels}"
    rows = [(b, pic.activation_preview(v, PREVIEW_CHANNELS)) for b, v in one.items()]
    caption = (
        f"The worst layer, for {why}; each channel scaled on its own, so the rows look "
        "alike unless the backends differ in pattern, not only in scale (the difference "
        "is below)."
    )
    diff = None
    if (
        pair is not None
        and all(b in one for b in pair)
        and one[pair[0]].shape == one[pair[1]].shape
    ):
        image_d, scale = pic.activation_diff_preview(one[pair[0]], one[pair[1]], PREVIEW_CHANNELS)
        text = _diff_title(pair, scale)
        diff = (labelled_rows([("", image_d)], text), "|".join(pair), scale, text)
    return labelled_rows(rows, title), caption, diff


def _compared_patterns(artifact: Artifact) -> list[np.ndarray]:
    """The patterns as the comparison sees them: standardized uint8, borders cropped."""
    return [deprocess_image(p) for p in np.asarray(artifact.arrays["value"])[: 8 * pic.MAX_TILES]]


def _filters(
    arts: Mapping[str, Artifact], pair: tuple[str, str] | None
) -> tuple[np.ndarray, str, tuple[np.ndarray, str, float, str] | None]:
    ref = next(iter(arts.values()))
    patterns = {b: _compared_patterns(a) for b, a in arts.items()}
    filters = ref.attrs.get("filters") or list(range(len(patterns[next(iter(patterns))])))
    title = f"filter patterns of layer {ref.attrs.get('layer')}, filters {filters}"
    rows = [(b, pic.pattern_preview(p, PATTERN_TILE)) for b, p in patterns.items()]
    caption = (
        "One row per backend, as compared: standardized to 0-255, borders cropped (12.5% per side)."
    )
    diff = None
    if pair is not None:
        made = pic.pattern_diff_preview(patterns[pair[0]], patterns[pair[1]], PATTERN_TILE)
        if made is not None:
            image, scale = made
            text = _diff_title(pair, scale, " grey levels of 255 (mean over channels)")
            diff = (labelled_rows([("", image)], text), "|".join(pair), scale, text)
    return labelled_rows(rows, title), caption, diff


# --------------------------------------------------------------------------- the page
_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2430;
background:#f5f6f8}
header{background:#1d2430;color:#fff;padding:16px 28px}
header h1{margin:0 0 4px;font-size:21px}
header p{margin:2px 0;color:#c9d1dc}
main{padding:8px 28px 40px;max-width:1400px}
h2{margin:26px 0 6px;font-size:19px;border-bottom:2px solid #d9dee6;padding-bottom:4px}
h3{margin:18px 0 4px;font-size:16px}
.badge{font-size:14px;padding:2px 8px;border-radius:4px;vertical-align:middle}
.passed{background:#2a7d2a;color:#fff}.failed{background:#b3261e;color:#fff}
.subject{color:#566173;margin:0 0 4px}
table{border-collapse:collapse;background:#fff;font-size:14px}
td,th{padding:3px 12px;text-align:left;border-bottom:1px solid #e3e7ee}
th{background:#eef1f5}
td.num{font-family:ui-monospace,monospace;white-space:nowrap}
td.bad{color:#b3261e;font-weight:600}
ul.problems li{color:#b3261e;font-weight:600}
.hint{color:#566173;font-size:13px}
figure{margin:10px 0 18px;background:#fff;border:1px solid #d9dee6;border-radius:6px;
padding:8px;display:inline-block;max-width:100%;box-sizing:border-box}
figure img{display:block;max-width:100%;height:auto;image-rendering:pixelated}
figcaption{font-size:13px;color:#404a5a;margin-top:4px;max-width:900px}
pre{background:#fff;border:1px solid #d9dee6;padding:8px;white-space:pre-wrap;font-size:13px}
a{color:#1a56a6}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _rel(path: str, start: Path) -> str:
    try:
        return Path(os.path.relpath(path, start)).as_posix()
    except ValueError:  # another drive on Windows
        return Path(path).as_uri()


def _html_table(report: AgreementReport, technique: str) -> str:
    rows = table_rows(report, technique)
    if not rows:
        return "<p class=hint>(not compared)</p>"
    head = "".join(f"<th>{_e(c)}</th>" for c in rows[0])
    body = []
    for row in rows[1:]:
        cells = [f"<td>{_e(row[0])}</td>", f"<td class=num>{_e(row[1])}</td>"]
        for c in row[2:]:
            bad = c.endswith(" FAIL") or c == "yes" and row[0] == "error"
            cells.append(f"<td class='num{' bad' if bad else ''}'>{_e(c)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _figure(path: str, caption: str, alt: str, out: Path) -> str:
    return (
        f"<figure><img src='{_e(_rel(path, out))}' alt='{_e(alt)}'>"
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def render_html(
    report: AgreementReport,
    drawn: list[TechniquePictures],
    out: Path,
    index: str = "",
    class_names: Sequence[str] | None = None,
) -> str:
    """The page: the verdict, problems and notes, every technique's table (bounds
    exact, as the text prints them), the details of failing pairs, then the pictures."""
    verdict = "passed" if report.passed else "FAILED"
    facts = [f"model {report.model}"]
    if report.subjects.get("images"):
        facts.append(str(report.subjects["images"]))
    if report.subjects.get("check"):
        facts.append(f"check {report.subjects['check']}")
    facts.append(f"backends {', '.join(report.backends)} (reference {report.reference})")
    parts = [
        f"<header><h1>cross-backend agreement <span class='badge {verdict.lower()}'>"
        f"{verdict}</span></h1><p>{_e('; '.join(facts))}</p></header><main>"
    ]
    if index:
        parts.append(f"<p><a href='{_e(index)}'>all checks</a></p>")
    if report.problems:
        parts.append(
            "<ul class=problems>" + "".join(f"<li>{_e(p)}</li>" for p in report.problems) + "</ul>"
        )
    if report.notes:
        parts.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in report.notes) + "</ul>")
    parts.append(
        "<h2>Metrics per backend pair</h2><p class=hint>Bounds are the cross-backend "
        "tolerances, printed exactly as set; each value has the digits it takes to show "
        "on which side of its bound it is. Pictures below.</p>"
    )
    for technique in report.what:
        subject = report.subjects.get(technique, "")
        cam = report.results.get(report.reference, {}).get(technique)
        if technique == "gradcam" and class_names is not None and cam is not None:
            classes = np.asarray(cam.arrays["class_index"]).reshape(-1).tolist()
            subject += f"; classes: {named_classes(classes, class_names)}"
        link = f" <a href='#pictures-{_e(technique)}'>pictures</a>"
        parts.append(
            f"<h3 id='table-{_e(technique)}'>{_e(technique)}{link}</h3>"
            + (f"<p class=subject>{_e(subject)}</p>" if subject else "")
            + _html_table(report, technique)
        )
    failing = report.failures()
    if failing:
        details = "\n".join(
            f"{p.artifact} {p.expected} -> {p.obtained}:\n"
            + (p.error or (p.comparison.text if p.comparison is not None else ""))
            for p in failing
        )
        parts.append(
            "<details open><summary>details of the failing pairs</summary>"
            f"<pre>{_e(details)}</pre></details>"
        )
    parts.append("<h2>Pictures</h2>")
    for made in drawn:
        parts.append(f"<h3 id='pictures-{_e(made.technique)}'>{_e(made.technique)}</h3>")
        if made.error:
            parts.append(f"<p class=hint>no picture: {_e(made.error)}</p>")
            continue
        parts.append(_figure(made.strip, made.caption, f"{made.technique} per backend", out))
        if made.diff:
            parts.append(
                _figure(
                    made.diff,
                    f"The pair farthest from its bounds, laid out as above: {made.diff_caption}.",
                    f"{made.technique} diff",
                    out,
                )
            )
    parts.append("</main>")
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>cross-backend agreement {verdict}: {_e(report.model)}</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def write_index(
    pages: Mapping[str, tuple[AgreementReport, Path]], out_dir: str | os.PathLike[str]
) -> Path:
    """``index.html`` over several checks' pages (the export route): one line per
    check with its verdict and a link to its page."""
    out = Path(out_dir)
    items = "".join(
        f"<li><span class='badge {'passed' if r.passed else 'failed'}'>"
        f"{'passed' if r.passed else 'FAILED'}</span> "
        f"<a href='{_e(_rel(str(page), out))}'>{_e(name)}</a></li>"
        for name, (r, page) in pages.items()
    )
    failed = sum(not r.passed for r, _ in pages.values())
    text = (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>cross-backend agreement: {len(pages)} check(s)</title><style>{_CSS}"
        "li{margin:6px 0}</style></head><body>\n<header><h1>cross-backend agreement</h1>"
        f"<p>{len(pages)} check(s), {failed} disagree</p></header><main><ul>{items}</ul>"
        "</main>\n</body></html>\n"
    )
    return storage.write_text(out / "index.html", text)
