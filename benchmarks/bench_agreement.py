"""Benchmark: ten cross-backend agreement checks in one session vs one check.

Target: ten checks in one session take <= 2x the time of one, because worker imports
and model loads are paid once per backend (persistent workers, models cached by
source). Each "session" is a fresh :class:`convviz_check.crossbackend.pool.WorkerPool`;
its time includes starting the three workers. Both sessions run side by side in this
process with the same pinned thread count, and the ratio is printed.

Run: ``python benchmarks/bench_agreement.py [--threads 1] [--checks 10]``
(model: the bundled convnet when present, else a tiny NumPy-seeded convnet built by a
``module:factory`` in this file).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from convviz_check.crossbackend.agreement import agreement
from convviz_check.crossbackend.pool import WorkerPool
from convviz_check.types import BACKENDS


def tiny_convnet():
    """Factory (called in the workers): a small convnet with NumPy-seeded weights."""
    import keras

    model = keras.Sequential(
        [
            keras.Input((64, 64, 3)),
            keras.layers.Conv2D(16, 3, activation="relu", name="c1"),
            keras.layers.MaxPooling2D(2, name="p1"),
            keras.layers.Conv2D(32, 3, activation="relu", name="c2"),
            keras.layers.MaxPooling2D(2, name="p2"),
            keras.layers.Conv2D(32, 3, activation="relu", name="c3"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(4, activation="softmax", name="head"),
        ],
        name="bench_convnet",
    )
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.2, w.shape).astype("float32") for w in model.get_weights()])
    return model


def model_source() -> str:
    bundled = Path(__file__).resolve().parents[1] / "convviz_check/examples/models/convnet.keras"
    return str(bundled) if bundled.is_file() else "bench_agreement:tiny_convnet"


def session(source: str, images: np.ndarray, checks: int, threads: int) -> tuple[float, list]:
    """Time ``checks`` agreement checks in a fresh pool (worker starts included)."""
    started = time.perf_counter()
    per_check = []
    with WorkerPool(threads=threads) as pool:
        for _ in range(checks):
            t0 = time.perf_counter()
            report = agreement(source, images, pool=pool, filters=4, filter_steps=30)
            per_check.append(time.perf_counter() - t0)
            if not report.passed:
                print(report)
                raise SystemExit("benchmark model disagrees across backends")
    return time.perf_counter() - started, per_check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="framework threads per worker")
    parser.add_argument("--checks", type=int, default=10)
    args = parser.parse_args()
    os.environ["CONVVIZ_THREADS"] = str(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # for the factory source
    source = model_source()
    images = np.random.default_rng(0).uniform(0, 1, (4, 64, 64, 3)).astype(np.float32)
    print(f"model {source}; 4 images 64x64x3; backends {', '.join(BACKENDS)}")
    print(f"threads per worker {args.threads}; CPUs {os.cpu_count()}")
    one, one_each = session(source, images, 1, args.threads)
    many, many_each = session(source, images, args.checks, args.threads)
    print(f"1 check, fresh session:          {one:7.1f} s")
    print(
        f"{args.checks} checks, fresh session:        {many:7.1f} s "
        f"(first {many_each[0]:.1f} s, then median {np.median(many_each[1:]):.2f} s each)"
    )
    ratio = many / one
    print(
        f"ratio {args.checks} / 1 = {ratio:.2f}x (target <= 2x): {'OK' if ratio <= 2 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
