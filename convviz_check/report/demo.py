"""The demo's ``index.html``: one page that shows and links everything the demo made.

Relative links only, so the page opens from disk and survives being copied.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import storage

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
        "<h3>Filter patterns (gradient ascent in input space)</h3>"
        f"{_figures([chapter['filters']], root)}</section>"
    )


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


def write_demo_page(out: Path, page: Mapping[str, Any]) -> Path:
    """Write ``out/index.html`` from the demo's results; returns its path."""
    body = (
        "<h1>convviz_check demo</h1>"
        f"<p>backend {_e(page['backend'])}; fresh scenes of seed {_e(page['seed'])}.</p>"
        f"<section><h2>The scenes</h2>{_figures(page['scenes'], out, True)}</section>"
        + _models(page, out)
        + _chapter(page, out)
        + _golden(page, out)
    )
    text = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>convviz_check demo</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )
    return storage.write_text(out / "index.html", text)
