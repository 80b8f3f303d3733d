"""The demo's ``index.html``: one page that shows and links everything the demo made.

Relative links only, so the page opens from disk and survives being copied.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import storage
from ..types import Box

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1150px; color: #222; }
section { border: 1px solid #ccc; border-radius: 6px; padding: .5em 1em; margin: 1em 0; }
.row { display: flex; gap: 1em; flex-wrap: wrap; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: .85em; color: #555; max-width: 280px; }
img { image-rendering: pixelated; border: 1px solid #ddd; max-width: 520px; }
img.small { width: 160px; }
.passed { color: #2a2; font-weight: bold; } .failed, .FAILED { color: #c00; font-weight: bold; }
.written { color: #26c; font-weight: bold; }
pre { background: #f6f6f6; padding: .5em; white-space: pre-wrap; font-size: .85em; }
table td, table th { padding: .1em .8em; text-align: left; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _link(path: str, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _figures(items: Sequence[Mapping[str, str]], root: Path, small: bool = False) -> str:
    cls = " class=small" if small else ""
    return (
        "<div class=row>"
        + "".join(
            f"<figure><img{cls} src='{_e(_link(f['path'], root))}' alt='{_e(f['caption'])}'>"
            f"<figcaption>{_e(f['caption'])}</figcaption></figure>"
            for f in items
        )
        + "</div>"
    )


def _models(page: Mapping[str, Any], root: Path) -> str:
    rows = "".join(
        f"<tr><td>{_e(m['name'])}</td><td>{m['accuracy']:.3f}</td><td>{_e(m['layer'])}</td>"
        f"<td>{_e(m['score'])}</td><td>{m['pointing']:.3f} "
        f"<span class={_e(m['localization'])}>{_e(m['localization'])}</span></td></tr>"
        for m in page["models"]
    )
    table = (
        "<table><tr><th>model</th><th>accuracy</th><th>Grad-CAM layer</th><th>score</th>"
        f"<th>peak inside the object box (check: at least 90%)</th></tr>{rows}</table>"
    )
    overlays = "".join(
        f"<h3>{_e(m['name'])}: Grad-CAM overlays</h3>{_figures(m['overlays'], root, True)}"
        for m in page["models"]
    )
    return f"<section><h2>1. The bundled models</h2>{table}{overlays}</section>"


def _chapter(page: Mapping[str, Any], root: Path) -> str:
    chapter = page.get("chapter")
    if not chapter:
        return ""
    return (
        "<section><h2>2. The three visualizations (convnet, first scene)</h2>"
        "<h3>Intermediate activations (each channel standardized)</h3>"
        f"{_figures(chapter['activations'], root)}"
        "<h3>Filter patterns: the chapter's gradient ascent in pixel space, and the robust "
        'one (<code>parameterization="fft"</code>: a 1/f spectrum, decorrelated colour, '
        "random shifts, zooms and rotations) for the same channels</h3>"
        f"{_figures(_as_list(chapter['filters']), root)}</section>"
    )


def _as_list(filters: Any) -> list[Mapping[str, str]]:
    """The filter figures (one, in a page written before the robust ones, or several)."""
    return [filters] if isinstance(filters, Mapping) else list(filters)


def _golden(page: Mapping[str, Any], root: Path) -> str:
    gold = page.get("golden")
    if not gold:
        return ""
    steps = "".join(
        f"<li>{_e(o['step'])}: <span class={_e(o['status'])}>{_e(o['status'])}</span></li>"
        for o in gold["outcomes"]
    )
    last = gold["outcomes"][-1]["message"]
    return (
        "<section><h2>3. A golden check, and a planted model change it catches</h2>"
        f"<ol>{steps}</ol><pre>{_e(last)}</pre>"
        f"<p>The report a CI run would upload: <a href='{_e(_link(gold['report'], root))}'>"
        f"report.html</a> (expected, obtained and diff images, per-image table). "
        f"The golden: <code>{_e(_link(gold['golden'], root))}</code>.</p></section>"
    )


def _shortcut(page: Mapping[str, Any], root: Path) -> str:
    story = page.get("shortcut")
    if not story:
        return ""

    def verdict(v: Mapping[str, Any]) -> str:
        return (
            "<span class=passed>passes</span>" if v["passed"] else "<span class=failed>fails</span>"
        )

    rows = "".join(
        f"<tr><td><b>{_e(m['name'])}</b><br><small>{_e(m['role'])}</small></td>"
        f"<td>{m['accuracy']:.3f}</td><td>{m['counter_accuracy']:.3f}</td>"
        f"<td>{m['object_energy']:.3f}</td><td>{m['cue_energy']:.3f}</td>"
        f"<td>{m['object_pointing']:.3f}</td>"
        f"<td>{verdict(m['verdicts']['exact'])}</td><td>{verdict(m['verdicts']['retrain'])}</td></tr>"
        for m in story["models"]
    )
    table = (
        "<table><tr><th>model</th><th>accuracy, biased set</th><th>accuracy when the cue "
        "lies</th><th>Grad-CAM energy in the object box</th><th>in the cue's corner</th>"
        "<th>peak on the object</th><th>gate, exact</th><th>gate, retrain</th></tr>"
        f"{rows}</table>"
    )
    overlays = "".join(
        f"<h3>{_e(m['name'])}</h3>{_figures(m['overlays'], root, True)}" for m in story["models"]
    )
    failing = [m for m in story["models"] if not m["verdicts"]["retrain"]["passed"]]
    message = (
        f"<p>What the gate says about <b>{_e(failing[0]['name'])}</b> under the retrain "
        f"profile:</p><pre>{_e(failing[0]['verdicts']['retrain']['text'])}</pre>"
        if failing
        else ""
    )
    return (
        "<section><h2>5. The shortcut: same accuracy, looking at the wrong thing</h2>"
        f"<p>{story['n']} scenes of the biased evaluation set (seed {story['seed']}): a "
        "small mark in the bottom-right corner has the colour of the object's class. Three "
        "models of the same architecture, all equally accurate here. Overlays: the object "
        "box in white, the cue's corner (the mark and the Grad-CAM cells next to it) in "
        f"magenta. Gate verdicts: the first {story['checked']} images, the honest model's "
        "maps as the golden (<code>convviz_check/examples/gate</code> runs the same "
        "checks with pytest).</p>"
        f"{table}{overlays}{message}"
        f"<p>All in one picture: <a href='{_e(_link(story['figure'], root))}'>"
        "side_by_side.png</a></p></section>"
    )


def draw_box(
    image: np.ndarray, box: Box, colour: tuple[int, int, int], scale: int = 1
) -> np.ndarray:
    """A copy of ``image`` (uint8 ``(H, W, 3)``) with the outline of ``box`` (in pixels of
    the image before an upscaling by ``scale``), ``scale // 2`` pixels thick (at least 1)."""
    out = image.copy()
    t = max(1, scale // 2)
    y0, x0, y1, x1 = (v * scale for v in box.to_tuple())
    y1, x1 = min(y1, out.shape[0]), min(x1, out.shape[1])
    out[y0 : y0 + t, x0:x1] = colour
    out[y1 - t : y1, x0:x1] = colour
    out[y0:y1, x0 : x0 + t] = colour
    out[y0:y1, x1 - t : x1] = colour
    return out


def side_by_side(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """One picture of the shortcut story: per model a row with its numbers on the left
    and its overlays (``row["overlays"][i]["image"]``) to the right; uint8 ``(H, W, 3)``."""
    from PIL import Image, ImageDraw, ImageFont

    gap, panel = 8, 290
    tile = rows[0]["overlays"][0]["image"].shape[0]
    count = max(len(r["overlays"]) for r in rows)
    canvas = Image.new(
        "RGB", (panel + count * (tile + gap), len(rows) * (tile + gap) + gap), (255, 255, 255)
    )
    draw = ImageDraw.Draw(canvas)
    title, body = ImageFont.load_default(size=24), ImageFont.load_default(size=16)
    small = ImageFont.load_default(size=14)
    black, grey, red, green = (0, 0, 0), (90, 90, 90), (200, 0, 0), (0, 130, 0)
    for r, row in enumerate(rows):
        y = gap + r * (tile + gap)
        draw.text((10, y), row["name"], fill=black, font=title)
        y += 32
        for line in _wrap(draw, row["role"], small, panel - 20):
            draw.text((10, y), line, fill=grey, font=small)
            y += 18
        y += 8
        lines = [
            (f"accuracy {row['accuracy']:.3f}", black),
            (f"when the cue lies {row['counter_accuracy']:.3f}", black),
            (f"energy in object box {row['object_energy']:.2f}", black),
            (f"energy in cue's corner {row['cue_energy']:.2f}", black),
        ] + [
            (f"gate, {p}: {'passes' if v['passed'] else 'FAILS'}", green if v["passed"] else red)
            for p, v in row["verdicts"].items()
        ]
        for text, colour in lines:
            draw.text((10, y), text, fill=colour, font=body)
            y += 22
        for c, item in enumerate(row["overlays"]):
            canvas.paste(
                Image.fromarray(item["image"]), (panel + c * (tile + gap), gap + r * (tile + gap))
            )
    return np.asarray(canvas, dtype=np.uint8)


def _wrap(draw: Any, text: str, font: Any, width: int) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels (greedy, by words)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def write_demo_page(out: Path, page: Mapping[str, Any]) -> Path:
    """Write ``out/index.html`` from the demo's results; returns its path."""
    body = (
        "<h1>convviz_check demo</h1>"
        f"<p>backend {_e(page['backend'])}; fresh scenes of seed {_e(page['seed'])}.</p>"
        f"<section><h2>The scenes</h2>{_figures(page['scenes'], out, True)}</section>"
        + _models(page, out)
        + _chapter(page, out)
        + _golden(page, out)
        + _shortcut(page, out)
    )
    text = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>convviz_check demo</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )
    return storage.write_text(out / "index.html", text)
