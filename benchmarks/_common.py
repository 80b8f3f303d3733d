"""Shared helpers for the benchmark scripts: thread pinning, the seeded Xception-41,
timing and peak memory.

Use it in this order, because the thread settings of XLA must be in the environment
before jax is imported and torch must be imported before tensorflow (keras-hub imports
tensorflow under every backend)::

    from _common import prepare_process          # imports no framework
    THREADS = prepare_process(threads)           # env vars, torch-first import
    import keras                                 # now safe
    from _common import build_xception41, median_time, ...

Each benchmark measures its subject and its baseline side by side in one process with
pinned threads and prints their ratio: absolute times on this shared 2-core machine
vary run to run, ratios much less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Xception-41 as in keras-hub (XceptionBackbone + XceptionImageClassifier head).
XCEPTION41_CONV_FILTERS = (
    [[32, 64], [128, 128], [256, 256], [728, 728]]
    + [[728, 728, 728]] * 8
    + [[728, 1024], [1536, 2048]]
)
XCEPTION41_POOLING = [False, True, True, True] + [False] * 8 + [True, False]


def prepare_process(threads: int | None = None) -> int:
    """Pin thread counts through the environment and import torch first where needed.

    Call before importing keras (directly or through ``convviz_check`` modules that
    import it). Sets ``XLA_FLAGS`` (read by jax when its CPU client starts), the OpenMP
    / MKL thread counts and ``CONVVIZ_THREADS`` (read by ``backends.pin_threads``);
    call :func:`pin_framework_threads` after importing keras.

    Args:
        threads: threads per pool; default ``CONVVIZ_THREADS`` or the CPU count.

    Returns:
        The thread count in force.
    """
    from convviz_check.backends import xla_thread_flags  # imports no framework

    n = threads or int(os.environ.get("CONVVIZ_THREADS", "0")) or (os.cpu_count() or 1)
    os.environ["CONVVIZ_THREADS"] = str(n)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    if "jax" in sys.modules:
        print("warning: jax imported before prepare_process; XLA_FLAGS ignored", file=sys.stderr)
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} {xla_thread_flags(n)}".strip()
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "torch":
        # torch before tensorflow in one process (the other order can segfault).
        import torch  # noqa: F401
    return n


def pin_framework_threads(n: int) -> dict[str, int]:
    """``backends.pin_threads(n)`` for the running backend (after importing keras)."""
    from convviz_check import backends

    return backends.pin_threads(n)


def seeded_value(path: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A deterministic float32 value for the variable at ``path`` (NumPy only).

    Keyed by the variable's path, not its position, so the same file comes out on every
    backend. Kernels are He-normal (fan-in over all but the last axis; depthwise kernels
    over the window only), so activations keep their scale through 40 layers;
    BatchNormalization statistics are near identity; biases are small.
    """
    rng = np.random.default_rng([seed, zlib.crc32(path.encode())])
    leaf = path.rsplit("/", 1)[-1]
    if leaf in ("gamma",):
        return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    if leaf == "moving_variance":
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if leaf in ("beta", "moving_mean", "bias"):
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)
    if len(shape) >= 2:
        fan_in = (
            int(np.prod(shape[:-2])) if leaf == "depthwise_kernel" else int(np.prod(shape[:-1]))
        )
        return (rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))).astype(np.float32)
    return (0.1 * rng.standard_normal(shape)).astype(np.float32)


def write_seeded_weights(model: Any, path: str | os.PathLike, seed: int = 0) -> Path:
    """Assign :func:`seeded_value` to every variable of ``model`` and save them as a
    ``.weights.h5`` file (the file, not the seed, is what other backends load)."""
    for variable in model.weights:
        variable.assign(seeded_value(variable.path, tuple(variable.shape), seed))
    path = Path(path)
    model.save_weights(path)
    return path


def build_xception41(
    image_size: int = 299,
    num_classes: int = 1000,
    weights_path: str | os.PathLike | None = None,
    seed: int = 0,
    data_format: str | None = None,
) -> tuple[Any, Path]:
    """Xception-41 as a keras-hub ``XceptionImageClassifier``, with weights
    loaded from a ``.weights.h5`` file.

    Args:
        image_size: fixed square input size (299 in the benchmarks).
        num_classes: classes of the ``predictions`` head.
        weights_path: an existing weights file to load; ``None`` writes a seeded one to
            a temporary directory first.
        seed: seed of the generated weights.
        data_format: passed to the backbone (``None``: Keras' global setting).

    Returns:
        ``(model, weights_path)``.
    """
    import keras_hub

    backbone = keras_hub.models.XceptionBackbone(
        stackwise_conv_filters=XCEPTION41_CONV_FILTERS,
        stackwise_pooling=XCEPTION41_POOLING,
        image_shape=(image_size, image_size, 3)
        if data_format != "channels_first"
        else (3, image_size, image_size),
        data_format=data_format,
    )
    model = keras_hub.models.XceptionImageClassifier(backbone=backbone, num_classes=num_classes)
    if weights_path is None:
        # One file per (size, classes, seed) in the temp dir, reused by later runs and by
        # the other backends (the file is backend-neutral; writing it takes ~20 s here).
        cache = Path(tempfile.gettempdir()) / "convviz_bench"
        weights_path = cache / f"xception41_{image_size}_{num_classes}_s{seed}.weights.h5"
        if not weights_path.exists():
            cache.mkdir(parents=True, exist_ok=True)
            tmp = cache / f".{weights_path.name}.{os.getpid()}.tmp.weights.h5"
            write_seeded_weights(model, tmp, seed)
            os.replace(tmp, weights_path)  # atomic: concurrent runs never read half a file
    model.load_weights(weights_path)
    return model, Path(weights_path)


def random_images(n: int, size: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """``(n, size, size, channels)`` float32 in [0, 1) from ``default_rng(seed)``."""
    return np.random.default_rng(seed).random((n, size, size, channels), dtype=np.float32)


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Run ``fn`` ``warmup`` times untimed (compilation, caches), then ``repeats`` times;
    return (median seconds, all timings)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def interleaved_median_times(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1
) -> dict[str, tuple[float, list[float]]]:
    """Like :func:`median_time` for several functions, alternating them in each round so
    that load from other processes on a shared machine hits all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: (statistics.median(v), v) for k, v in times.items()}


@dataclass
class Timing:
    """Wall-clock and process CPU seconds (all threads) of each timed run.

    On a shared machine the CPU time tracks the work done even when other processes
    take cores away mid-run; both are printed, targets are judged on the wall time.
    """

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu)

    def runs(self) -> str:
        return " ".join(f"{t:.2f}" for t in self.wall)


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """``(wall seconds, process CPU seconds, result)`` of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - w0, time.process_time() - c0, result


@dataclass(frozen=True)
class FirstCalls:
    """Wall and CPU seconds of ours' and the chapter's first call on fresh models."""

    ours: float
    ours_cpu: float
    chapter: float
    chapter_cpu: float

    @property
    def ok(self) -> bool:
        """The target: ours' first call is no slower than the chapter's."""
        return self.ours <= self.chapter


def first_calls(
    fresh: Callable[[], Any], ours: Callable[[Any], Any], chapter: Callable[[Any], Any]
) -> FirstCalls:
    """Time ``ours(fresh())`` then ``chapter(fresh())``: each subject gets its own fresh
    model (``fresh`` is not timed), so neither inherits the other's traces or compiles."""
    times: list[float] = []
    for run in (ours, chapter):
        subject = fresh()
        wall, cpu, _ = timed(lambda run=run, subject=subject: run(subject))
        times += [wall, cpu]
    return FirstCalls(*times)


def interleaved_times(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 0
) -> dict[str, Timing]:
    """Run every function ``warmup`` times untimed, then ``repeats`` timed rounds that
    alternate them (load from other processes hits all of them alike)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out = {name: Timing() for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu, _ = timed(fn)
            out[name].wall.append(wall)
            out[name].cpu.append(cpu)
    return out


def load_line() -> str:
    """The machine's load average, printed with every benchmark (a load above the core
    count means other processes shared the cores: read ratios, not absolute times)."""
    one, five, fifteen = os.getloadavg()
    return (
        f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min), {os.cpu_count()} cores"
    )


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


_PEAK_BEFORE_RESET = float("nan")


def reset_peak_rss() -> float:
    """Reset this process's RSS high-water mark (Linux ``/proc/self/clear_refs``) and
    return the current RSS in MiB, so that :func:`subject_peak_rss_mb` reports the peak
    of what runs next alone, not the model build's (loading weights peaks higher than a
    small batch needs). Returns ``nan`` where the kernel offers no reset."""
    global _PEAK_BEFORE_RESET
    try:
        _PEAK_BEFORE_RESET = _proc_status_mb("VmHWM")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status_mb("VmRSS")
    except OSError:
        return float("nan")


def subject_peak_rss_mb() -> float:
    """RSS high-water since :func:`reset_peak_rss` (``VmHWM``), in MiB; ``getrusage``'s
    process peak where ``/proc`` is missing."""
    try:
        return _proc_status_mb("VmHWM")
    except OSError:
        return peak_rss_mb()


def _proc_status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    raise OSError(f"{key} not in /proc/self/status")


def memory_report(**extra: Any) -> None:
    """Print one JSON line (the last line a parent reads back) with the peaks: ``peak_mb``
    since the reset and ``process_peak_mb``, the larger of that and the peak before the
    reset (the model build's). Not ``getrusage``: on Linux a child's ``ru_maxrss``
    starts from its parent's at fork (measured: every child of a 5.8 GB benchmark
    process reported 5848 MiB), while ``VmHWM`` belongs to the exec'd process alone."""
    peak = subject_peak_rss_mb()
    print(json.dumps({**extra, "process_peak_mb": max(peak, _PEAK_BEFORE_RESET), "peak_mb": peak}))


def run_child(script: str, args: Sequence[str], timeout: float | None = 1800) -> dict[str, Any]:
    """Run ``python script *args`` in a fresh process (same environment) and return the
    JSON object on its last ``{``-line; raise with its stderr tail when it fails."""
    cmd = [sys.executable, script, *args]
    res = subprocess.run(
        cmd, capture_output=True, text=True, env=os.environ.copy(), timeout=timeout
    )
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed (rc={res.returncode}): {res.stderr[-800:]}")
    return json.loads(lines[-1])


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


def traced_peak_mb(fn: Callable[[], Any]) -> float:
    """Peak memory allocated through Python/NumPy allocators while ``fn`` runs, in MiB
    (tracemalloc: NumPy arrays are traced; framework-internal buffers are not)."""
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return peak / 2**20


def header(threads: dict[str, int] | int) -> str:
    """One line naming the backend, versions, CPU and thread counts."""
    from convviz_check import backends

    versions = " ".join(f"{k}={v}" for k, v in backends.framework_versions().items())
    return (
        f"{versions} python={platform.python_version()} cpu={platform.processor() or platform.machine()}"
        f" cores={os.cpu_count()} threads={threads}"
    )


def base_parser(description: str) -> argparse.ArgumentParser:
    """Common flags: ``--quick``, ``--repeats``, ``--warmup``, ``--threads``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (shared machines)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per subject")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs")
    parser.add_argument("--threads", type=int, default=None, help="threads per pool")
    return parser


def add_memory_flags(parser: argparse.ArgumentParser, unit: str = "images") -> None:
    """``--memory``, ``--memory-<unit>`` (counts, default 8,32), ``--weights`` and the
    hidden flags of a :func:`child_memory_rows` child (``--memory-child``, ``--batch``)."""
    parser.add_argument("--memory", action="store_true", help=f"peak RSS at --memory-{unit}")
    parser.add_argument(f"--memory-{unit}", default="8,32")
    parser.add_argument("--weights", default=None, help="existing .weights.h5 to load")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)


def child_memory_rows(
    script: str, subjects: Sequence[str], counts: Sequence[int], extra: Sequence[str]
) -> list[dict[str, Any]]:
    """Peak memory of each (subject, count), each in a fresh ``script --memory-child
    SUBJECT --batch COUNT *extra`` process (see :func:`memory_report`)."""
    rows = []
    for n in counts:
        for subject in subjects:
            args = ["--memory-child", subject, "--batch", str(n), *extra]
            try:
                rows.append(run_child(script, args))
            except RuntimeError as exc:
                print(f"memory {subject} {n}: {exc}")
    return rows


def print_memory_rows(rows: Sequence[dict[str, Any]], unit: str = "images") -> None:
    """The table of :func:`child_memory_rows`."""
    if not rows:
        return
    print(
        "\npeak RSS, a fresh process per row (MiB, VmHWM): the subject's high-water mark, "
        "its growth over the RSS after the model build, and the process's peak (the "
        "model build included)"
    )
    print(f"| subject | {unit} | peak MiB | growth MiB | process peak MiB | seconds |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['subject']} | {r['images']} | {r['peak_mb']:.0f} | "
            f"+{r['peak_mb'] - r['base_mb']:.0f} | {r['process_peak_mb']:.0f} | {r['seconds']:.1f} |"
        )
