"""The page of ``convviz-check explain``: ``summary.json``, ``index.html`` and the
terminal summary, all from one summary dict (see :mod:`convviz_check.cli.explain`).

The page shows what was computed at a glance: Grad-CAM overlays per image with the
class and score, the filter grid, every activation grid, and how the images were
prepared. Links are relative, so the output directory opens from disk and can be
moved. NumPy and the standard library only (text is escaped, paths quoted); files are
written by :mod:`convviz_check.storage`.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from .. import storage

# Overlays are drawn at most this wide in a card (the file keeps the photo's size).
CARD_WIDTH = 360
_CHANNELS = {1: "gray", 3: "RGB"}

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f5f6f8;
color:#1d2430}
header{background:#1d2430;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px}
header small{font-weight:400;color:#c9d1dc;font-size:15px}
header p{margin:2px 0;color:#c9d1dc}
main{padding:8px 28px 40px;max-width:1400px}
h2{margin:28px 0 6px;font-size:19px;border-bottom:2px solid #d9dee6;padding-bottom:4px}
.hint{color:#566173;margin:4px 0 12px}
.cards{display:flex;flex-wrap:wrap;gap:16px}
.card{background:#fff;border:1px solid #d9dee6;border-radius:8px;padding:12px;
max-width:100%;box-sizing:border-box}
.card h3{margin:0 0 8px;font-size:15px;word-break:break-all}
.gc{max-width:100%}
.gcrow{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.info{width:200px}
.mapcol{flex:1 1 300px;min-width:0}
.maps{display:flex;flex-wrap:wrap;gap:10px}
.map{max-width:100%}
.map .mname{font-weight:600;font-size:14px;margin:0 0 3px}
.legend{margin:4px 0 12px;padding-left:20px;color:#3a4556}
.pair{display:flex;gap:12px;align-items:flex-start;margin-top:10px}
figure{margin:0}
figcaption{font-size:12px;color:#566173;margin-top:3px}
img{max-width:100%;height:auto;display:block;border:1px solid #e3e7ee}
img.px{image-rendering:pixelated}
.cls{font-size:16px;font-weight:600;margin:8px 0 2px}
.warn{background:#fff4e0;border:1px solid #f0c36d;border-radius:6px;padding:6px 10px;
margin:8px 0}
.bad{color:#a4262c;font-weight:600}
table{border-collapse:collapse;font-size:13px;margin-top:4px}
td,th{padding:2px 10px 2px 0;text-align:left;vertical-align:top}
th{color:#566173;font-weight:600}
.layer{margin:14px 0}
.layer h3{font-size:14px;margin:0 0 4px;font-family:ui-monospace,monospace}
code{font-family:ui-monospace,monospace;font-size:13px}
"""


def top_classes(preds: np.ndarray, names: list[str] | None, k: int = 5) -> list[list[dict]]:
    """The ``k`` best classes of each image, with scores (and names)."""
    out = []
    for row in preds:
        order = np.argsort(-row, kind="stable")[: min(k, len(row))]
        out.append(
            [
                {"index": int(i), "name": names[i] if names else None, "score": float(row[i])}
                for i in order
            ]
        )
    return out


def score_kind(preds: np.ndarray) -> str:
    """``"probability"`` when every row is non-negative and sums to 1, else ``"output"``."""
    sums = preds.sum(axis=-1)
    if preds.min() >= 0 and np.allclose(sums, 1.0, atol=1e-3):
        return "probability"
    return "output"


def write_summary(out: str | Path, summary: dict[str, Any]) -> Path:
    """``summary.json`` in ``out``."""
    return storage.write_json(Path(out) / "summary.json", summary)


def write_page(out: str | Path, summary: dict[str, Any]) -> Path:
    """``index.html`` in ``out``."""
    return storage.write_text(Path(out) / "index.html", render_page(summary))


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _img(
    rel: str, size: list[int], alt: str, max_width: int | None = None, min_width: int = 256
) -> str:
    """An ``<img>`` of the file ``rel`` (a relative path) of ``size`` (H, W), drawn at
    least ``min_width`` wide (small images zoomed by a whole factor, without smoothing)
    and at most ``max_width`` wide."""
    h, w = max(int(size[0]), 1), max(int(size[1]), 1)
    zoom = max(1, math.ceil(min_width / w))
    width = w * zoom
    if max_width is not None and width > max_width:
        width = max_width if w >= max_width else w * max(1, max_width // w)
    cls = ' class="px"' if width > w else ""
    return (
        f'<img{cls} src="{_e(quote(rel))}" alt="{_e(alt)}" width="{width}" '
        f'style="aspect-ratio:{w}/{h}" loading="lazy">'
    )


def _dims(size: list[int], channels: int | None = None) -> str:
    """``W×H`` of an ``(H, W)`` size, with the channels as words (``gray``, ``RGB``)."""
    text = f"{int(size[1])}\u00d7{int(size[0])}"
    if channels is None:
        return text
    return f"{text} {_CHANNELS.get(channels, f'{channels} channels')}"


def _class_text(index: int, name: str | None) -> str:
    return f"{name} ({index})" if name else f"class {index}"


def _score(value: float) -> str:
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def _distinct(scores: list[float]) -> list[str]:
    """Each score with as many digits (3 to 7) as it takes for different scores to read
    differently: an untrained model's probabilities (0.1000002, 0.1000001) all read 0.1
    at 3 digits, a ranking the reader cannot see."""
    for digits in range(3, 8):
        texts = [f"{v:.{digits}g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}" for v in scores]
        if len(set(texts)) == len(set(scores)):
            return texts
    return texts


def _top_table(top: list[dict[str, Any]], kind: str) -> str:
    scores = [float(t["score"]) for t in top]
    rows = "".join(
        f"<tr><td>{_e(_class_text(t['index'], t['name']))}</td><td>{_e(text)}</td></tr>"
        for t, text in zip(top, _distinct(scores), strict=True)
    )
    tie = ""
    if len(scores) > 1 and scores[0] == scores[1]:
        tied = sum(v == scores[0] for v in scores)
        tie = f"<tr><td colspan=2 class=hint>the first {tied} tie: no top class</td></tr>"
    return f"<table><tr><th>top classes</th><th>{_e(kind)}</th></tr>{rows}{tie}</table>"


def _explained_hint(image: dict[str, Any], entry: dict[str, Any], cam: dict[str, Any]) -> str:
    """Why the explained class is not the table's first, when the map explains each
    image's top class: the map ranks the classes by its own score (the logit), where
    the output's ranking ties or differs."""
    top = image.get("top") or []
    if cam.get("class") != "top predicted" or not top or top[0]["index"] == entry["class_index"]:
        return ""
    return (
        f"<div class=hint>the top class by the {_e(cam['score_kind'])}, which the map "
        "explains; the output below ranks the classes otherwise</div>"
    )


# The CAM methods' names as their papers write them, and what each map weighs (the
# formulas: convviz_check.explain.cam).
METHOD_TITLES = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "xgradcam": "XGrad-CAM",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
    "scorecam": "Score-CAM",
    "eigencam": "Eigen-CAM",
}
METHOD_HINTS = {
    "gradcam": "channels weighted by their mean gradient",
    "gradcam++": "channels weighted by their positive gradients, pixel by pixel",
    "xgradcam": "channels weighted by gradient times normalised activation",
    "hirescam": "gradient times activation, pixel by pixel",
    "layercam": "positive gradient times activation, pixel by pixel",
    "scorecam": "channels weighted by the class score of the image masked by each "
    "channel (no gradient)",
    "eigencam": "the activations' first principal component (no gradient; the same map "
    "for every class)",
}
# Width of one overlay in a card: one method gets the whole card, several share a row.
_MAP_WIDTHS = {1: CARD_WIDTH, 2: 280}
_MAP_WIDTH_MANY = 230


def method_title(method: str) -> str:
    """A CAM method's name as its paper writes it (``gradcam++`` -> ``Grad-CAM++``)."""
    return METHOD_TITLES.get(method, method)


def _map_figure(method: str, entry: dict[str, Any], size: list[int], width: int) -> str:
    flat = (
        '<div class="warn bad">Flat map: the class score barely depends on this layer, '
        "so the heatmap is all zero.</div>"
        if entry["degenerate"]
        else ""
    )
    title = method_title(method)
    # Small photos are zoomed by a whole factor to the map's width (pixelated, so the
    # map's cells stay visible); large ones are scaled down to it.
    return (
        # the figure as wide as its map: a flat map's warning wraps under it instead of
        # widening the figure and pushing the next method onto a row of its own
        f'<figure class="map" style="width:{width}px"><div class="mname">{_e(title)}</div>'
        f"{_img(entry['overlay'], size, f'{title} overlay', width, width)}{flat}</figure>"
    )


def _gradcam_card(
    image: dict[str, Any], entry: dict[str, Any], cam: dict[str, Any], kind: str
) -> str:
    h, w = image["model_size"]
    methods = cam["methods"]
    width = _MAP_WIDTHS.get(len(methods), _MAP_WIDTH_MANY)
    figures = "".join(_map_figure(m, entry["maps"][m], entry["size"], width) for m in methods)
    info = (
        f'<div class="info"><figure>'
        f"{_img(image['input_png'], image['model_size'], 'model input', 96, 96)}"
        f"<figcaption>model input {_dims([h, w], image['model_channels'])}</figcaption>"
        f'</figure><div class="cls">{_e(_class_text(entry["class_index"], entry["class_name"]))}'
        f"</div><div class=hint>class score {_score(entry['score'])} ({_e(cam['score_kind'])})"
        f"</div>{_explained_hint(image, entry, cam)}{_top_table(image['top'], kind)}</div>"
    )
    return (
        f'<div class="card gc"><h3>{_e(entry["name"])}</h3><div class="gcrow">{info}'
        f'<div class="mapcol"><div class="maps">{figures}</div>'
        f"<div class=hint>overlays at the photo's size, {_dims(entry['size'])}</div></div>"
        "</div></div>"
    )


def _gradcam_section(summary: dict[str, Any]) -> str:
    cam = summary["gradcam"]
    if not cam:
        return ""
    cards = [
        _gradcam_card(image, entry, cam, summary["score_kind"])
        for image, entry in zip(summary["images"], cam["images"], strict=True)
    ]
    if cam["class"] == "top predicted":
        chosen = f"each image's highest-{cam['score_kind']} class"
    else:
        first = cam["images"][0]
        chosen = f"{_class_text(first['class_index'], first['class_name'])} for every image"
    note = f'<div class="warn">{_e(cam["note"])}</div>' if cam.get("note") else ""
    methods = cam["methods"]
    title = "Grad-CAM" if methods == ["gradcam"] else "Class-activation maps"
    legend = ""
    if len(methods) > 1 or methods != ["gradcam"]:
        items = "".join(
            f"<li><b>{_e(method_title(m))}</b>: {_e(METHOD_HINTS.get(m, ''))} "
            f"<span class=hint>({cam['seconds'][m]:.2f} s)</span></li>"
            for m in methods
        )
        legend = (
            f'<ul class="legend">{items}</ul><p class=hint>Seconds per method for every '
            "image; the first method's also include building the model's compiled "
            "functions.</p>"
        )
    return (
        f"<h2>{title}</h2><p class=hint>Layer <code>{_e(cam['layer'])}</code>, class: "
        f"{_e(chosen)}. Red is where the map is high (the evidence for the class), blue "
        f"where it is low.</p>{legend}{note}<div class=cards>{''.join(cards)}</div>"
    )


def _inputs_section(summary: dict[str, Any]) -> str:
    """The images as the model saw them, with their top classes (when there is no
    Grad-CAM section to show them)."""
    cards = []
    for image in summary["images"]:
        cards.append(
            f'<div class="card"><h3>{_e(image["name"])}</h3><div class="pair"><figure>'
            f"{_img(image['input_png'], image['model_size'], 'model input', 160, 128)}"
            f"<figcaption>model input {_dims(image['model_size'], image['model_channels'])}"
            f"</figcaption></figure>{_top_table(image['top'], summary['score_kind'])}</div></div>"
        )
    return f"<h2>Inputs</h2><div class=cards>{''.join(cards)}</div>"


def _filters_section(summary: dict[str, Any]) -> str:
    f = summary["filters"]
    if not f:
        return ""
    note = f'<div class="warn">{_e(f["note"])}.</div>' if f.get("note") else ""
    lo, hi = f["input_range"]
    return (
        f"<h2>Filter patterns</h2><p class=hint>Layer <code>{_e(f['layer'])}</code>: "
        f"filters 0-{f['count'] - 1} of {f['channels']}, left to right then down; "
        f"{f['steps']} ascent steps in [{lo:g}, {hi:g}].</p>{note}"
        f'<div class="card">{_img(f["png"], f["size"], "filter patterns", 1200, 720)}</div>'
    )


def _activations_section(summary: dict[str, Any]) -> str:
    acts = summary["activations"]
    if not acts:
        return ""
    blocks = []
    for layer in acts["layers"]:
        h, w, c = layer["shape"]
        blocks.append(
            f'<div class="layer"><h3>{_e(layer["name"])} <span class=hint>{_dims([h, w])}, '
            f"{c} channels</span></h3>"
            # at its own size (its tiles are already enlarged, numbers sized to them):
            # zooming small layers only would draw their numbers larger than the others'
            f"{_img(layer['png'], layer['size'], layer['name'], 1300, 0)}</div>"
        )
    return (
        f"<h2>Activations</h2><p class=hint>Every channel of each layer for the first "
        f"image, <b>{_e(acts['image'])}</b>, numbered from 0, left to right then down "
        f"(each channel scaled on its own; bright is high).</p>{''.join(blocks)}"
    )


def _details_section(summary: dict[str, Any]) -> str:
    steps = "".join(f"<li>{_e(s)}</li>" for s in summary["input"]["preprocessing"])
    rows = "".join(
        f"<tr><td>{_e(i['name'])}</td><td>{_dims(i['size'], i['channels'])}</td>"
        f"<td>{_dims(i['model_size'], i['model_channels'])}</td></tr>"
        for i in summary["images"]
    )
    times: list[str] = []
    for step, seconds in summary["timings"].items():
        times.append(f"<tr><td>{_e(step)}</td><td>{seconds:.2f} s</td></tr>")
        if step == "gradcam" and summary["gradcam"] and len(summary["gradcam"]["methods"]) > 1:
            times += [
                f"<tr><td>&nbsp;&nbsp;{_e(method_title(m))}</td><td>{t:.2f} s</td></tr>"
                for m, t in summary["gradcam"]["seconds"].items()
            ]
    timings = "".join(times)
    versions = ", ".join(f"{_e(k)} {_e(v)}" for k, v in summary["versions"].items())
    return (
        f"<h2>Inputs and run</h2><ul>{steps}</ul>"
        f"<table><tr><th>image</th><th>file</th><th>model input</th></tr>{rows}</table>"
        f"<table><tr><th>step</th><th>time</th></tr>{timings}</table>"
        f'<p class=hint>{versions}. All numbers: <a href="summary.json">summary.json</a>.</p>'
    )


def render_page(summary: dict[str, Any]) -> str:
    """The HTML of ``index.html`` for ``summary``."""
    model = summary["model"]
    lo, hi = summary["input"]["range"]
    h, w, c = model["input_shape"]
    shown = {(summary["filters"] or {}).get("note"), (summary["gradcam"] or {}).get("note")}
    notes = "".join(
        f'<div class="warn">Note: {_e(n)}.</div>' for n in summary["notes"] if n not in shown
    )
    backend = summary["versions"].get("backend", "?")
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>explain {_e(model['name'])}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(Path(model['source']).name)} <small>({_e(model['name'])}, "
        f"{_e(model['class'])})</small></h1>"
        f"<p>{_e(model['source'])} &middot; input {_dims([h, w], c)} &middot; "
        f"{model['classes']} classes &middot; backend {_e(backend)}</p>"
        f"<p>input values [{lo:g}, {hi:g}] ({_e(summary['input']['range_source'])})"
        "</p></header>"
        f"<main>{notes}{_gradcam_section(summary) or _inputs_section(summary)}"
        f"{_filters_section(summary)}"
        f"{_activations_section(summary)}{_details_section(summary)}</main></body></html>\n"
    )


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The terminal summary of an explain run, one line per fact."""
    model = summary["model"]
    h, w, c = model["input_shape"]
    lines = [
        f"model: {model['name']!r} ({model['class']}), input {h}x{w}x{c}, "
        f"{model['classes']} classes",
        f"inputs: {len(summary['images'])} image(s); "
        + "; ".join(summary["input"]["preprocessing"][1:]),
    ]
    # The model's output ranks the classes: by probability where its rows sum to 1,
    # else by the raw output value ("top" alone did not say which).
    ranked = "highest probability" if summary["score_kind"] == "probability" else "highest output"
    for image in summary["images"]:
        best = image["top"][0]
        lines.append(
            f"  {image['name']}: {ranked}: {_class_text(best['index'], best['name'])} "
            f"({_score(best['score'])})"
        )
    if summary["activations"]:
        n = len(summary["activations"]["layers"])
        lines.append(f"activations: {n} layers of the first image -> activations/")
    cam = summary["gradcam"]
    if cam:
        # named as the top lines name them: "ship (8) x6", not "[8, 8, 8, 8, 8, 8]"
        named = [_class_text(e["class_index"], e.get("class_name")) for e in cam["images"]]
        classes = ", ".join(f"{n} x{named.count(n)}" for n in dict.fromkeys(named))
        flat = ", ".join(
            f"{m} {sum(e['maps'][m]['degenerate'] for e in cam['images'])}/{len(named)}"
            for m in cam["methods"]
        )
        # the map's own score picks the class: the logit where the head has one
        chosen = (
            f"each image's highest-{cam['score_kind']} class"
            if cam.get("class", "top predicted") == "top predicted"
            else "the class given with --class"
        )
        lines.append(
            f"cam: {', '.join(cam['methods'])}; layer {cam['layer']!r}; explains {chosen}: "
            f"{classes}; degenerate {flat} -> gradcam/"
        )
    f = summary["filters"]
    if f:
        lines.append(f"filters: {f['count']} patterns of {f['layer']!r} -> {f['png']}")
    lines += [f"note: {n}" for n in summary["notes"]]
    lines.append("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in summary["timings"].items()))
    return lines
