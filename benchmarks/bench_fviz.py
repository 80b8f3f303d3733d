"""Benchmark: the robust feature visualization vs the chapter's filter-pattern ascent.

On the running backend (``KERAS_BACKEND``), the bundled convnet (64x64 RGB), layer
``conv3``, 4 filters in one batch, both through ``cc.filter_patterns``:

- ``chapter``: the default (pixel space, L2-normalized gradient steps, 30 steps);
- ``robust``: ``parameterization="fft"`` (spectrum + colour + transforms + TV, Adam,
  128 steps by default -- ``--robust-steps``).

"First call": a freshly loaded model (each compiles its program: a ``tf.function``
trace, a ``jax.jit`` compile; torch runs eagerly). "Warm": the median of ``--rounds``
later calls on that model. Also printed: the seconds per ascent step, warm, so that the
two loops can be compared step for step (the robust step adds the inverse FFT, the
transform's bilinear gather and Adam). Wall-clock times on a shared machine: compare
rows of one run.

    OMP_NUM_THREADS=1 KERAS_BACKEND=jax python benchmarks/bench_fviz.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import prepare_process

LAYER = "conv3"
FILTERS = [0, 1, 2, 3]


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--robust-steps", type=int, default=128)
    args = parser.parse_args(argv)
    threads = prepare_process(args.threads)
    import keras

    import convviz_check as cc
    from convviz_check import backends

    backends.pin_threads(threads)
    print(f"keras {keras.__version__}, backend {keras.config.backend()}, threads {threads}")
    subjects = {
        "chapter": (dict(steps=30), 30),
        "robust": (dict(parameterization="fft", steps=args.robust_steps), args.robust_steps),
    }
    print("| backend | subject | steps | first call, s | warm, s | warm ms/step |")
    print("|---|---|---|---|---|---|")
    for name, (kwargs, steps) in subjects.items():
        model = cc.examples.load_example_model("convnet")

        def call(model: object = model, kwargs: dict = kwargs) -> None:
            cc.filter_patterns(model, LAYER, filters=FILTERS, batch_size=4, **kwargs)

        first = _timed(call)
        warm = statistics.median(_timed(call) for _ in range(args.rounds))
        print(
            f"| {keras.config.backend()} | {name} | {steps} | {first:.2f} | {warm:.2f} | "
            f"{1000 * warm / steps:.1f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
