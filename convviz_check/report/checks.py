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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import storage
from ..artifacts import Artifact
from ..render import activation_grid, colorize, deprocess_image, filter_grid

REPORT_VERSION = 1
PARTS_DIR = ".convviz-parts"
# Failure-like statuses sort first in reports.
STATUS_ORDER = {"error": 0, "failed": 1, "missing": 2, "written": 3, "passed": 4}
# Small maps (7x7 Grad-CAM) are upscaled (nearest) to at least this many pixels per
# side so that cells stay visible in the report.
_MIN_TILE = 96
_MAX_TILES = 8
_GAP = 2


# --------------------------------------------------------------------------- images
def _upscale(img: np.ndarray, min_side: int = _MIN_TILE) -> np.ndarray:
    h, w = img.shape[:2]
    k = max(1, int(np.ceil(min_side / max(1, min(h, w)))))
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1) if k > 1 else img


def _hstack(tiles: list[np.ndarray]) -> np.ndarray:
    """Tiles (uint8, same channel count) side by side with black gaps."""
    tiles = [t if t.ndim == 3 else np.stack([t] * 3, axis=-1) for t in tiles]
    h = max(t.shape[0] for t in tiles)
    w = sum(t.shape[1] for t in tiles) + _GAP * (len(tiles) - 1)
    out = np.zeros((h, w, 3), np.uint8)
    x = 0
    for t in tiles:
        out[: t.shape[0], x : x + t.shape[1]] = t[..., :3]
        x += t.shape[1] + _GAP
    return out


def _unit(a: np.ndarray, scale: float | None = None) -> np.ndarray:
    """``a / scale`` clipped to [0, 1]; ``scale`` defaults to max |a| (0 -> zeros)."""
    a = np.nan_to_num(np.asarray(a, np.float64))
    s = float(np.max(np.abs(a))) if scale is None else float(scale)
    return np.clip(a / s, 0, 1) if s > 0 else np.zeros_like(a)


def _tile_channels(x: np.ndarray, per_row: int = 16) -> np.ndarray:
    """(H, W, C) values in [0, 1] -> uint8 grid laid out like ``activation_grid``."""
    h, w, c = x.shape
    cols = min(per_row, c)
    rows = int(np.ceil(c / cols))
    grid = np.zeros((rows * (h + 1) - 1, cols * (w + 1) - 1), np.uint8)
    for k in range(c):
        r, q = divmod(k, cols)
        grid[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = np.uint8(
            np.round(x[:, :, k] * 255)
        )
    return grid


def _heatmaps(g: Artifact) -> np.ndarray:
    hm = np.asarray(g.arrays["heatmap" if g.layout == "gradcam" else "value"], np.float32)
    while hm.ndim > 3:
        hm = hm[..., 0] if hm.shape[-1] == 1 else hm[0]
    return hm[None] if hm.ndim == 2 else hm


def _heat_tiles(maps: np.ndarray, scale: float, colormap: str) -> np.ndarray:
    tiles = [_upscale(colorize(_unit(m, scale), colormap)) for m in maps[:_MAX_TILES]]
    return _hstack(tiles)


def _activation_of(g: Artifact, layer: str | None) -> tuple[str, np.ndarray]:
    v = g.to_value()
    if isinstance(v, dict):
        name = layer if layer in v else next(iter(v))
        return name, np.asarray(v[name], np.float32)
    return "value", np.asarray(v, np.float32)


def _one_image(a: np.ndarray) -> np.ndarray:
    """One image's activation as (H, W, C)."""
    while a.ndim > 3:
        a = a[0]
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim == 1:
        a = a[None, :, None]
    return a


def _patterns(g: Artifact) -> list[np.ndarray]:
    a = np.asarray(g.arrays["value"])
    if a.ndim == 3:
        a = a[None]
    if a.ndim == 2:
        a = a[None, ..., None]
    out = []
    for p in a[: 8 * _MAX_TILES]:
        out.append(p.astype(np.uint8) if a.dtype == np.uint8 else deprocess_image(p, crop=0))
    return out


def picture(g: Artifact, layer: str | None = None) -> np.ndarray:
    """A uint8 picture of an artifact (previews and expected/obtained images).

    Heatmaps: "jet" colormap, up to 8 maps side by side; activations: the channel grid
    of one layer (``layer`` or the first) for the first image; patterns: the filter grid.
    """
    if g.kind == "heatmap":
        maps = _heatmaps(g)
        top = float(np.max(maps)) if maps.size else 0.0
        return _heat_tiles(maps, 1.0 if top <= 1.0 else top, "jet")
    if g.kind == "pattern":
        return _upscale(filter_grid(np.stack(_patterns(g)), cols=8, margin=2), 64)
    _, a = _activation_of(g, layer)
    return _upscale(activation_grid(_one_image(a)), 64)


def preview(g: Artifact) -> np.ndarray | None:
    """The golden's ``.png`` preview, or None when no picture can be drawn (a preview
    is for humans and never compared, so it never fails a write)."""
    try:
        return picture(g)
    except Exception:  # noqa: BLE001 - any odd shape just has no preview
        return None


def diff_image(
    expected: Artifact, obtained: Artifact, layer: str | None = None
) -> np.ndarray | None:
    """|expected - obtained| as a picture, or None when the two cannot be aligned.

    Heatmaps are in [0, 1], so their diff is shown on that absolute scale ("magma");
    activations on the scale of max |expected| of the layer; patterns as the grey
    mean over channels of the deprocessed images.
    """
    if expected.kind != obtained.kind:
        return None
    if expected.kind == "heatmap":
        e, o = _heatmaps(expected), _heatmaps(obtained)
        if e.shape != o.shape:
            return None
        top = max(float(np.max(np.abs(e))) if e.size else 0.0, 1.0)
        return _heat_tiles(np.abs(e - o), top, "magma")
    if expected.kind == "pattern":
        ep, op = _patterns(expected), _patterns(obtained)
        if len(ep) != len(op) or any(a.shape != b.shape for a, b in zip(ep, op, strict=True)):
            return None
        # astype(np.uint8): the same truncating cast as np.uint8(array), typed as an array.
        d = [
            np.abs(a.astype(np.int16) - b.astype(np.int16))
            .mean(axis=-1)
            .astype(np.uint8)[..., None]
            for a, b in zip(ep, op, strict=True)
        ]
        return _upscale(filter_grid(np.stack(d), cols=8, margin=2)[..., 0], 64)
    name, e = _activation_of(expected, layer)
    _, o = _activation_of(obtained, name)
    if obtained.layout == "activations" and name not in obtained.arrays:
        return None
    e, o = _one_image(e), _one_image(o)
    if e.shape != o.shape:
        return None
    scale = float(np.max(np.abs(e))) or 1.0
    return _upscale(_tile_channels(_unit(np.abs(e - o), scale)), 64)


def write_check_images(
    out_base: str | os.PathLike[str],
    obtained: Artifact,
    expected: Artifact | None = None,
    layer: str | None = None,
) -> dict[str, str]:
    """Write ``<out_base>.obtained.png`` and, with an expected golden, ``.expected.png``
    and ``.diff.png``. Returns role -> path of what was written."""
    out_base = Path(out_base)
    written: dict[str, str] = {}
    jobs: list[tuple[str, Any]] = [("obtained", lambda: picture(obtained, layer))]
    if expected is not None:
        jobs.insert(0, ("expected", lambda: picture(expected, layer)))
        jobs.append(("diff", lambda: diff_image(expected, obtained, layer)))
    for role, make in jobs:
        try:
            img = make()
        except Exception:  # noqa: BLE001 - a picture must never hide the check's outcome
            img = None
        if img is not None:
            path = out_base.with_name(f"{out_base.name}.{role}.png")
            storage.write_png(path, img)
            written[role] = str(path)
    return written


# --------------------------------------------------------------------------- reports
def write_part(results_dir: str | os.PathLike[str], worker: str, data: Mapping[str, Any]) -> Path:
    """Write one process's share of the report (``worker`` is the xdist id or "main")."""
    path = Path(results_dir) / PARTS_DIR / f"{worker}.json"
    storage.write_text(path, json.dumps(data, sort_keys=True, default=str))
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


def sort_entries(entries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        (dict(e) for e in entries),
        key=lambda e: (
            STATUS_ORDER.get(e.get("status", ""), 9),
            e.get("nodeid", ""),
            e.get("check", ""),
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
            (``passed``/``failed``/``missing``/``written``/``error``), ``message``,
            ``golden`` (path relative to the golden dir), ``obtained`` (path of the
            obtained ``.npz``), ``images`` (role -> path), ``metrics``.
        extra: more top-level keys (``unused``, ``written``, ``backend``...).

    Returns:
        ``{"json": path, "html": path}``.
    """
    results_dir = Path(results_dir)
    ordered = sort_entries(entries)
    counts: dict[str, int] = {}
    for e in ordered:
        counts[e.get("status", "?")] = counts.get(e.get("status", "?"), 0) + 1
    data = {"format_version": REPORT_VERSION, "summary": counts, "entries": ordered}
    data.update(extra or {})
    json_path = results_dir / "report.json"
    html_path = results_dir / "report.html"
    storage.write_json(json_path, data)
    storage.write_text(html_path, render_html(data, results_dir))
    return {"json": json_path, "html": html_path}


def _rel(path: str, start: Path) -> str:
    try:
        return Path(os.path.relpath(path, start)).as_posix()
    except ValueError:  # another drive on Windows
        return Path(path).as_uri()


def _metrics_table(metrics: Mapping[str, Any]) -> str:
    if not metrics:
        return ""
    rows = []
    for name, m in metrics.items():
        ok = m.get("ok")
        bound = m.get("bound")
        op = ">=" if m.get("direction") == "min" else "<="
        rows.append(
            f"<tr class={'ok' if ok else 'bad'}><td>{html.escape(str(name))}</td>"
            f"<td>{_num(m.get('value'))}</td><td>{op} {_num(bound)}</td>"
            f"<td>{'ok' if ok else 'OUT'}</td></tr>"
        )
    return (
        "<table class=metrics><tr><th>metric</th><th>value</th><th>bound</th><th></th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def render_html(data: Mapping[str, Any], results_dir: Path) -> str:
    """A static page: a summary, then one card per check (failures first) with the
    expected / obtained / diff images side by side and the metrics table."""
    summary = ", ".join(f"{v} {k}" for k, v in sorted(data.get("summary", {}).items()))
    cards = []
    for e in data.get("entries", []):
        status = e.get("status", "?")
        imgs = "".join(
            f"<figure><img src='{html.escape(_rel(p, results_dir), quote=True)}' "
            f"alt='{role}'><figcaption>{role}</figcaption></figure>"
            for role in ("expected", "obtained", "diff")
            if (p := (e.get("images") or {}).get(role))
        )
        cards.append(
            f"<section class='card {html.escape(status)}'>"
            f"<h2><span class=badge>{html.escape(status)}</span> "
            f"{html.escape(e.get('nodeid', ''))} :: {html.escape(e.get('check', ''))}"
            f" <small>({html.escape(str(e.get('kind', '')))})</small></h2>"
            f"<div class=images>{imgs}</div>{_metrics_table(e.get('metrics') or {})}"
            + (f"<pre>{html.escape(e['message'])}</pre>" if e.get("message") else "")
            + f"<p class=paths>golden: {html.escape(str(e.get('golden', '')))}</p></section>"
        )
    unused = data.get("unused") or {}
    unused_html = ""
    if unused.get("files"):
        items = "".join(f"<li>{html.escape(str(f))}</li>" for f in unused["files"])
        unused_html = f"<section class=card><h2>Unused goldens ({unused.get('action', '')})</h2><ul>{items}</ul></section>"
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>convviz_check report</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
.card {{ border: 1px solid #ccc; border-radius: 6px; padding: .5em 1em; margin: 1em 0; }}
.card.failed, .card.error, .card.missing {{ border-color: #c00; }}
.badge {{ font-size: .8em; padding: .1em .5em; border-radius: 4px; background: #eee; }}
.failed .badge, .error .badge, .missing .badge {{ background: #c00; color: #fff; }}
.passed .badge {{ background: #2a2; color: #fff; }}
.written .badge {{ background: #26c; color: #fff; }}
.images {{ display: flex; gap: 1em; flex-wrap: wrap; }}
figure {{ margin: 0; }} img {{ image-rendering: pixelated; max-width: 480px; }}
table.metrics td, table.metrics th {{ padding: 0 .8em; text-align: left; }}
tr.bad {{ color: #c00; font-weight: bold; }}
pre {{ background: #f6f6f6; padding: .5em; white-space: pre-wrap; }}
</style></head><body>
<h1>convviz_check report</h1><p>{html.escape(summary)}</p>
{unused_html}
{"".join(cards)}
</body></html>
"""
