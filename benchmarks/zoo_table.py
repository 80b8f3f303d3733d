"""The zoo table of docs/zoo.md: automatic Grad-CAM layer, map size, seconds per technique.

Runs the cases of ``tests/test_zoo.py`` (same builders, sizes, seeded weights and calls:
activations of the default layers, Grad-CAM at the automatic layer, filter patterns
of one mid layer with 3 steps and 2 filters), one process per backend because
``KERAS_BACKEND`` is read once at import: TensorFlow over the whole zoo, torch and JAX
over the fast subset. Times are first calls, compilation included (what a test run
pays); ``build`` is the model build plus the seeded re-initialization.

Usage::

    python benchmarks/zoo_table.py                       # all of it -> markdown on stdout
    python benchmarks/zoo_table.py --backends tensorflow --only EfficientNetB0,hub.MiT
    python benchmarks/zoo_table.py --save-rows rows.json   # then --load-rows rows.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TECHNIQUES = ("activations", "gradcam", "filters")


def _child(names: list[str], out: Path) -> None:
    """Run the named cases under the current backend; write one JSON row per case."""
    sys.path.insert(0, str(ROOT))
    from _common import prepare_process  # noqa: I001 - before any framework import

    prepare_process()
    import keras
    import numpy as np
    import pytest

    from tests import test_zoo

    rows = []
    for case in test_zoo.ZOO:
        if case.name not in names:
            continue
        row: dict[str, Any] = {"name": case.name, "backend": keras.config.backend()}
        start = time.perf_counter()
        try:
            model = test_zoo.build(case)
        except pytest.skip.Exception as e:  # Keras refuses the model on this backend
            row["skipped"] = str(e)
            rows.append(row)
            continue
        row["build"] = time.perf_counter() - start
        result = test_zoo.run_case(case, model)
        row.update(
            layer=result.layer,
            reference=result.reference,
            map_hw=list(result.map_hw),
            size=case.size,
            input_range=result.input_range,
            min_ratio=float(np.min(result.ratio)),
            degenerate=bool(result.degenerate.any()),
            activation_layers=result.activation_layers,
            filter_layer=result.filter_layer,
            note=result.note,
            **result.seconds,
        )
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        del model, result
        keras.backend.clear_session()
    out.write_text(json.dumps(rows))


def _run_backend(backend: str, names: list[str], workdir: Path) -> list[dict]:
    out = workdir / f"{backend}.json"
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", ",".join(names)]
    subprocess.run([*cmd, "--json", str(out)], env=env, cwd=ROOT, check=True)
    return json.loads(out.read_text())


def _seconds(row: dict | None) -> str:
    if row is None:
        return ""
    if "skipped" in row:
        return "refused by Keras"
    return " / ".join(f"{row[t]:.1f}" for t in TECHNIQUES)


def markdown(rows: dict[str, list[dict]]) -> str:
    """The table: one line per model, TensorFlow columns, then torch/JAX where run."""
    others = [b for b in ("torch", "jax") if rows.get(b)]
    head = ["model", "input", "automatic layer", "map", "input range", "min ratio"]
    head += ["TF build s", "TF s (act / cam / filters)"]
    for b in others:
        head += [f"{b} build s", f"{b} s (act / cam / filters)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_backend = {b: {r["name"]: r for r in rs} for b, rs in rows.items()}
    for row in rows.get("tensorflow", []):
        if "skipped" in row:
            continue
        lo_hi = row["input_range"]
        cells = [
            row["name"],
            f"{row['size']}",
            f"`{row['layer']}`",
            "x".join(str(d) for d in row["map_hw"]),
            "0-1 (default)" if lo_hi is None else f"{lo_hi[0]:g}-{lo_hi[1]:g}",
            f"{row['min_ratio']:.2g}",
            f"{row['build']:.1f}",
            _seconds(row),
        ]
        for b in others:
            other = by_backend[b].get(row["name"])
            build = "" if other is None or "build" not in other else f"{other['build']:.1f}"
            cells += [build, _seconds(other)]
        lines.append("| " + " | ".join(cells) + " |")
    total = sum(
        r.get("build", 0) + sum(r.get(t, 0) for t in TECHNIQUES) for r in rows["tensorflow"]
    )
    lines.append("")
    lines.append(f"TensorFlow total (build + the three techniques): {total:.0f} s.")
    return "\n".join(lines)


def _measure(args: argparse.Namespace) -> dict[str, list[dict]]:
    """Rows per backend: TensorFlow over the whole zoo, the others over the fast subset."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from tests.test_zoo import FAST, ZOO  # imports keras (TF) in this parent only

    only = set(filter(None, args.only.split(",")))
    rows: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            cases = ZOO if backend == "tensorflow" else FAST
            names = [c.name for c in cases if not only or c.name in only]
            rows[backend] = _run_backend(backend, names, Path(tmp)) if names else []
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="tensorflow,torch,jax")
    parser.add_argument("--only", default="", help="comma-separated case names")
    parser.add_argument("--out", type=Path, help="write the markdown here too")
    parser.add_argument("--save-rows", type=Path, help="write the measured rows (JSON)")
    parser.add_argument("--load-rows", type=Path, help="render saved rows, measure nothing")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        _child(args.child.split(","), args.json)
        return 0
    rows = json.loads(args.load_rows.read_text()) if args.load_rows else _measure(args)
    if args.save_rows:
        args.save_rows.write_text(json.dumps(rows, indent=1))
    text = markdown(rows)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
