"""Benchmark: JAX's persistent compilation cache, a second process's first call vs the first's.

Each measurement is a fresh process under ``KERAS_BACKEND=jax`` (this script re-runs
itself with ``--child``): import, load the model (not timed in the first-call column),
then the first call of each technique -- Grad-CAM, all activations, filter patterns
(2 filters, 5 steps) -- which traces and compiles, then a second (warm) call. Each
round (``--rounds``, 2) runs three processes, in this order, on a fresh directory:

- ``no cache``: ``CONVVIZ_JAX_CACHE_DIR`` unset (JAX compiles everything);
- ``first``: a fresh, empty cache directory (JAX compiles and writes each program);
- ``second``: the same directory again (JAX reads the programs back).

What the option buys a CI run whose cache directory survives between runs is
``first call (second) - warm`` against ``first call (no cache) - warm``: the compile
that the cache replaces by a read. The cache keys on the program, jax/jaxlib versions
and the machine, so a changed model or an upgrade compiles again (and adds entries).

Measured 2026-12-01, 2-core CPU (load average 1.5-1.8), 2 threads, Xception-41 at
299 px, 8 images, median of 2 rounds (seconds; "first - warm" is what tracing and
compiling cost):

=========  ======================  ======================  ======================  =======
process    Grad-CAM first / warm   activations first/warm  filters first / warm    entries
           (first - warm)          (first - warm)          (first - warm)          (MiB)
=========  ======================  ======================  ======================  =======
no cache   2.19 / 0.90 (1.29)      1.84 / 1.04 (0.80)      1.71 / 1.01 (0.70)      0
first      2.34 / 0.88 (1.46)      1.78 / 1.05 (0.74)      1.69 / 0.98 (0.71)      37 (0.6)
second     1.64 / 0.90 (0.74)      1.32 / 1.07 (0.25)      1.20 / 1.14 (0.06)      37 (0.6)
=========  ======================  ======================  ======================  =======

The second process's first calls are 0.5-0.7 s shorter per technique; what is left of
Grad-CAM's overhead is Keras replaying the model while JAX traces it (the cache starts
at the traced program). Loading the model also got faster: 5.8 s -> 2.7 s, because
Keras runs each variable's initializer (a small JAX program per shape) before the
weights file overwrites it, and those programs come from the cache too. Writing the
cache cost nothing measurable (first vs no cache). In a gate (benchmarks/bench_gate.py)
the JAX worker's model load went from 2.4-3.3 s to 0.5 s and its compute from 2.8 s to
1.1 s.

Usage::

    python benchmarks/bench_jax_cache.py                     # Xception-41 at 299 px, 8 images
    python benchmarks/bench_jax_cache.py --model convnet     # the bundled convnet
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import base_parser, prepare_process

MODELS = ("xception41", "convnet", "xception")


def _child(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    threads = prepare_process(args.threads)
    import warnings

    warnings.filterwarnings("ignore")
    import keras  # noqa: F401 - the import is what is timed here
    from _common import build_xception41, pin_framework_threads, random_images, timed

    import convviz_check as cc
    from convviz_check.examples import load_example_model

    pin_framework_threads(threads)
    imported = time.perf_counter() - t0
    t0 = time.perf_counter()
    if args.model == "xception41":
        model, _ = build_xception41(image_size=args.size, weights_path=args.weights)
        size, layer = args.size, "block3_sepconv1"
    else:
        model = load_example_model(args.model)
        size = int(model.input_shape[1])
        layer = cc.conv_layers(model)[1]
    loaded = time.perf_counter() - t0
    images = random_images(args.images, size, seed=0)
    calls = {
        "gradcam": lambda: cc.gradcam(model, images),
        "activations": lambda: cc.activations(model, images),
        "filters": lambda: cc.filter_patterns(model, layer, filters=range(2), steps=5),
    }
    out: dict[str, Any] = {"import_s": imported, "load_s": loaded}
    for name, fn in calls.items():
        out[f"{name}_first_s"] = timed(fn)[0]
        out[f"{name}_warm_s"] = timed(fn)[0]
    print(json.dumps(out))


def _entries(directory: Path) -> tuple[int, int]:
    files = [p for p in directory.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="xception41")
    parser.add_argument("--size", type=int, default=299, help="Xception-41's image side")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--weights", default=None, help="existing .weights.h5 (Xception-41)")
    parser.add_argument("--cache-dir", default=None, help="use (and keep) this directory")
    parser.add_argument("--rounds", type=int, default=2, help="fresh cache directories in turn")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ["KERAS_BACKEND"] = "jax"
    if args.child:
        _child(args)
        return 0

    from _common import load_line, run_child

    from convviz_check.backends import JAX_CACHE_ENV

    print(load_line())
    child_args = ["--child", "--model", args.model, "--size", str(args.size)]
    child_args += ["--images", str(args.images)]
    if args.threads:
        child_args += ["--threads", str(args.threads)]
    if args.weights:
        child_args += ["--weights", args.weights]
    labels = ("no cache", "first", "second")
    rows: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    for round_ in range(args.rounds):
        keep = args.cache_dir is not None
        cache = Path(args.cache_dir or tempfile.mkdtemp(prefix="convviz-jax-cache-"))
        cache.mkdir(parents=True, exist_ok=True)
        if any(cache.iterdir()):
            print(f"{cache} is not empty: the 'first' process may read entries already there")
        try:
            for label in labels:
                for var in (JAX_CACHE_ENV, "JAX_COMPILATION_CACHE_DIR"):
                    os.environ.pop(var, None)
                if label != "no cache":
                    os.environ[JAX_CACHE_ENV] = str(cache)
                row = run_child(__file__, child_args)
                row["entries"], row["bytes"] = _entries(cache)
                rows[label].append(row)
                print(
                    f"round {round_ + 1} {label}: "
                    + json.dumps({k: round(v, 2) for k, v in row.items()})
                )
        finally:
            if not keep:
                shutil.rmtree(cache, ignore_errors=True)

    def median(label: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[label])

    def overhead(label: str, technique: str) -> float:
        """First call minus warm call: what tracing and compiling cost (medians)."""
        return statistics.median(
            r[f"{technique}_first_s"] - r[f"{technique}_warm_s"] for r in rows[label]
        )

    techniques = ("gradcam", "activations", "filters")
    print(f"\n{load_line()}")
    print(
        f"JAX compilation cache, {args.model}, {args.images} images, one process per row, "
        f"median of {args.rounds} round(s), seconds"
    )
    print(
        "| process | "
        + " | ".join(f"{t} first / warm (first - warm)" for t in techniques)
        + " | cache entries (MiB) |"
    )
    print("|---|---|---|---|---|")
    for label in labels:
        cells = " | ".join(
            f"{median(label, f'{t}_first_s'):.2f} / {median(label, f'{t}_warm_s'):.2f} "
            f"({overhead(label, t):.2f})"
            for t in techniques
        )
        print(
            f"| {label} | {cells} | {int(median(label, 'entries'))} "
            f"({median(label, 'bytes') / 2**20:.1f}) |"
        )
    for t in techniques:
        first, second = overhead("first", t), overhead("second", t)
        print(
            f"RESULT {t}: first-call overhead (first call - warm) in the second process "
            f"{second:.2f}s vs the first's {first:.2f}s ({first - second:.2f}s saved); "
            f"first call {median('second', f'{t}_first_s'):.2f}s vs "
            f"{median('first', f'{t}_first_s'):.2f}s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
