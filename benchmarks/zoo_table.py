"""The zoo table of docs/zoo.md: automatic Grad-CAM layer, map size, and seconds per
technique per backend.

Runs the cases of ``tests/test_zoo.py`` (same builders, sizes, seeded weights and calls:
activations of the default layers, Grad-CAM at the automatic layer, filter patterns
of one mid layer with 3 steps and 2 filters) under each backend in its own process
(``KERAS_BACKEND`` is read once at import), then merges the rows into one table. Times
are first calls, compilation included (what a test run pays); ``build`` is the model
build plus the seeded re-initialization.

Each backend's child writes one JSON line per finished case, so a run that is stopped
(or killed for memory) keeps what it measured. One backend at a time, the results merged
afterwards::

    python benchmarks/zoo_table.py --backends torch --save-rows /tmp/zoo_torch.json
    python benchmarks/zoo_table.py --backends jax --cases fast --save-rows /tmp/zoo_jax.json
    python benchmarks/zoo_table.py --load-rows /tmp/zoo_tensorflow.json /tmp/zoo_torch.json \
        /tmp/zoo_jax.json --out /tmp/zoo_table.md

or all at once (``--backends tensorflow,torch,jax``, the default), or a few cases
(``--only EfficientNetB0,hub.MiT``).
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
BACKENDS = ("tensorflow", "torch", "jax")
LABEL = {"tensorflow": "TF", "torch": "torch", "jax": "JAX"}
# Rows of one backend, and what it was asked to run ("all", "fast" or "only").
Rows = dict[str, Any]


def _child(names: list[str], out: Path) -> None:
    """Run the named cases under the current backend; append one JSON line per case."""
    sys.path.insert(0, str(ROOT))
    from _common import prepare_process  # noqa: I001 - before any framework import

    prepare_process()
    import keras
    import numpy as np
    import pytest

    from tests import test_zoo

    _warm_up(keras)
    for case in test_zoo.ZOO:
        if case.name not in names:
            continue
        row: dict[str, Any] = {"name": case.name, "backend": keras.config.backend()}
        start = time.perf_counter()
        try:
            model = test_zoo.build(case)
        except pytest.skip.Exception as e:  # Keras refuses the model on this backend
            row["skipped"] = str(e)
        else:
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
                # The box is shared: the 1-minute load average when the case finished
                # says how contended its wall times were.
                load=os.getloadavg()[0],
                cpus=os.cpu_count(),
                **result.seconds,
            )
            del model, result
            keras.backend.clear_session()
        with out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), file=sys.stderr, flush=True)


def _warm_up(keras: Any) -> None:
    """Run the three techniques once on a tiny model, untimed: the first call of a
    process pays lazy imports (keras-hub's alone takes seconds) and kernel set-up
    (torch: hub.ResNet's build took 9.0 s as the first case, 2.8 s later), which belongs
    to no model."""
    import importlib.util

    import numpy as np

    if importlib.util.find_spec("keras_hub") is not None:
        import keras_hub  # noqa: F401

    import convviz_check as cc

    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, activation="relu", name="c"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    x = np.zeros((1, 16, 16, 3), np.float32)
    cc.activations(model, x)
    cc.gradcam(model, x)
    cc.filter_patterns(model, "c", filters=[0], steps=1)
    keras.backend.clear_session()


def _run_backend(backend: str, names: list[str], workdir: Path) -> list[dict]:
    """The rows one backend's child finished (all of them, unless it died: then the
    ones before, and the failure is reported on stderr)."""
    out = workdir / f"{backend}.jsonl"
    out.unlink(missing_ok=True)
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", ",".join(names)]
    start = time.perf_counter()
    proc = subprocess.run([*cmd, "--json", str(out)], env=env, cwd=ROOT, check=False)
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    print(
        f"{backend}: {len(rows)} of {len(names)} case(s) in {wall:.0f} s wall"
        + (f" (child exited {proc.returncode})" if proc.returncode else ""),
        file=sys.stderr,
        flush=True,
    )
    return rows


def _seconds(row: dict | None) -> str:
    if row is None:
        return ""
    if "skipped" in row:
        return "refused by Keras"
    return f"{row['build']:.1f}; " + " / ".join(f"{row[t]:.1f}" for t in TECHNIQUES)


def _total(row: dict) -> float:
    return float(row.get("build", 0.0) + sum(row.get(t, 0.0) for t in TECHNIQUES))


def markdown(runs: dict[str, Rows]) -> str:
    """The table: one line per model (zoo order), the facts of the first backend that
    ran it, then one "build; act / cam / filters" cell per backend."""
    backends = [b for b in BACKENDS if runs.get(b, {}).get("rows")]
    by_backend = {b: {r["name"]: r for r in runs[b]["rows"]} for b in backends}
    order: list[str] = []
    for b in backends:
        order += [r["name"] for r in runs[b]["rows"] if r["name"] not in order]
    head = ["model", "input", "automatic layer", "map", "input range", "min ratio"]
    head += [f"{LABEL[b]} s (build; act / cam / filters)" for b in backends]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in order:
        facts = next(
            (by_backend[b][name] for b in backends if "build" in by_backend[b].get(name, {})),
            None,
        )
        if facts is None:  # refused everywhere it ran
            continue
        lo_hi = facts["input_range"]
        layers = {
            by_backend[b][name]["layer"] for b in backends if "layer" in by_backend[b].get(name, {})
        }
        cells = [
            name,
            f"{facts['size']}",
            " / ".join(f"`{layer}`" for layer in sorted(layers)),
            "x".join(str(d) for d in facts["map_hw"]),
            "0-1 (default)" if lo_hi is None else f"{lo_hi[0]:g}-{lo_hi[1]:g}",
            f"{facts['min_ratio']:.2g}",
        ]
        cells += [_seconds(by_backend[b].get(name)) for b in backends]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    common = set(order)
    for b in backends:
        common &= {r["name"] for r in runs[b]["rows"] if "build" in r}
    for b in backends:
        done = [r for r in runs[b]["rows"] if "build" in r]
        scope = {"all": "the whole zoo", "fast": "the fast subset"}.get(runs[b]["cases"], "")
        loads = sorted(r["load"] for r in done if "load" in r)
        load = (
            f"; load average {loads[0]:.1f} to {loads[-1]:.1f} (median "
            f"{loads[len(loads) // 2]:.1f}) on {done[0].get('cpus')} CPUs"
            if loads
            else ""
        )
        lines.append(
            f"- {LABEL[b]}: {len(done)} model(s){' (' + scope + ')' if scope else ''}, "
            f"build + the three techniques {sum(map(_total, done)):.0f} s in all, "
            f"{sum(_total(by_backend[b][n]) for n in common):.0f} s over the "
            f"{len(common)} model(s) every backend ran{load}."
        )
    return "\n".join(lines)


def _measure(args: argparse.Namespace) -> dict[str, Rows]:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from tests.test_zoo import FAST, ZOO  # imports keras (TF) in this parent only

    only = set(filter(None, args.only.split(",")))
    cases = ZOO if args.cases == "all" else FAST
    names = [c.name for c in cases if not only or c.name in only]
    runs: dict[str, Rows] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            runs[backend] = {
                "cases": "only" if only else args.cases,
                "rows": _run_backend(backend, names, Path(tmp)) if names else [],
            }
    return runs


def _load(paths: list[Path]) -> dict[str, Rows]:
    """Merge saved runs (a later file's backend replaces an earlier one's)."""
    runs: dict[str, Rows] = {}
    for path in paths:
        runs.update(json.loads(path.read_text()))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument(
        "--cases", choices=("all", "fast"), default="all", help="the whole zoo or the fast subset"
    )
    parser.add_argument("--only", default="", help="comma-separated case names")
    parser.add_argument("--out", type=Path, help="write the markdown here too")
    parser.add_argument("--save-rows", type=Path, help="write the measured rows (JSON)")
    parser.add_argument(
        "--load-rows", type=Path, nargs="+", help="merge and render saved rows, measure nothing"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        _child(args.child.split(","), args.json)
        return 0
    runs = _load(args.load_rows) if args.load_rows else _measure(args)
    if args.save_rows:
        args.save_rows.write_text(json.dumps(runs, indent=1))
    text = markdown(runs)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
