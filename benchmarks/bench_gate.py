"""Benchmark: a realistic gate as a real pytest session, and where its time goes.

The gate (written to a temporary directory and run with ``python -m pytest`` in a
subprocess, under the running ``KERAS_BACKEND``): the two bundled models
(``convviz_check.examples``: the chapter-style convnet and the tiny Xception), 8 scenes,
golden checks of every activation, the Grad-CAM heatmaps and 4 filter patterns per
model, plus one cross-backend agreement check (the bundled convnet, activations +
Grad-CAM + 8 filter patterns, 4 images, TensorFlow / torch / JAX workers) and, for
comparison, the same three checks on this backend alone (``test_same_checks_here``).

Sessions, in order (each a fresh process; ``--convviz-update=missing`` first writes the
goldens the others verify):

1. ``update``: writes the goldens;
2. ``before``: the plugin as it was before the cross-backend changes of 2026-12-01:
   ``--convviz-prestart=no`` and every backend in a worker (the benchmark's conftest
   gives the session a ``WorkerPool()`` without ``in_process``);
3. ``verify``: the gate as CI runs it now, with the defaults: the workers prestarted
   when collection ends, the running backend computed in the session's process;
4. ``no-prestart``: ``verify`` with ``--convviz-prestart=no``;
5. ``profile`` and ``profile-before``: ``verify`` and ``before`` again, instrumented
   (``CONVVIZ_PROFILE_TIMES=1``, read only by this benchmark's conftest.py, which wraps
   library functions from outside: nothing in the package's hot paths) to split the
   time into pytest start and imports, model loads, trace/compile, compute,
   comparisons, golden file I/O and the cross-backend check (worker starts, model
   loads and compute in the workers, waiting);
6. ``single`` and ``agree-only``: only ``test_same_checks_here``, then only
   ``test_backends_agree``: the target's ratio, each side a fresh session (imports,
   model loads and compiles count on both sides, as they do for a user adding the
   check to a gate).

Trace/compile vs compute: the first call of each compiled function per input shape is
run twice; the second run is its compute, the difference its trace/compile. The second
run is extra work and is subtracted from the instrumented session's total. Inside the
cross-backend check nothing else is counted (the running backend computes there).

Measured 2026-12-01, 2-core CPU (load average 0.7-1.7), parent under TensorFlow, wall
seconds of the pytest process; "test ratio" is the cross-backend test over
``test_same_checks_here`` in the same session (warm: earlier tests imported and
compiled what it needs):

==============  =====  ===========  ===========  ==========  ===========================
session         wall   cross-       same checks  test ratio  with ``--jax-cache`` (filled
                       backend      here                     by update): wall / cross
==============  =====  ===========  ===========  ==========  ===========================
before          15.5   6.3          0.7          8.9x        15.3 / 5.5
verify          12.7   3.3          0.6          5.1x        12.5 / 2.0
no-prestart     13.8   4.8          0.7          6.9x
single          5.8    -            0.9                      6.1
agree-only      10.5   4.7          -                        10.5 / 4.2
==============  =====  ===========  ===========  ==========  ===========================

Target (the cross-backend check at most 3x the same checks on one backend, each a fresh
session): 10.5 / 5.8 s = **1.80x** (with the JAX cache 1.72x). Earlier the same day,
before the JAX worker's model load skipped its initializers, the plain ``verify`` took
15.3 s, its cross-backend test 7.3 s (the JAX worker's model load alone 3.3 s).

Re-measured later the same day at load 1.2-1.5, after workers began to exit without the
interpreter's teardown: before 16.9 s, verify 14.8 s (cross-backend test 3.8 s), single
8.1 s, agree-only 12.4 s: **1.53x**. What follows the session (the parent's exit and
the workers' shutdown) went from 3.3-3.8 s with workers (2.2 s without) to 2.5-3.0 s
with or without them: the parent's own TensorFlow teardown is what remains.

Where the time goes (instrumented sessions, seconds; what follows the session not
included):

=========================================  ===============  =========
part                                       profile-before   profile
=========================================  ===============  =========
pytest start + imports                     3.0              2.7
model loads                                0.7              0.9
trace/compile                              1.4              1.4
compute                                    0.4              0.3
comparisons                                0.2              0.6
golden file I/O                            0.0              0.0
cross-backend check                        6.2              3.3
other                                      0.2              0.3
total (without the extra runs)             12.1             9.6
=========================================  ===============  =========

Workers (start / model load / compute seconds): before, TF 4.3 / 0.2 / 1.0, torch
4.9 / 0.5 / 0.5, JAX 1.7 / 0.3 / 4.1; now torch 3.6 / 0.5 / 0.4, JAX 2.0 / 0.2 / 3.0
and TensorFlow in the session's process (load 0.1, compute 0.5). The check now waits
mostly for the JAX worker's first compiles (``--convviz-jax-cache`` removes them on the
next run: the check then takes 2.0 s).

Usage::

    KERAS_BACKEND=tensorflow python benchmarks/bench_gate.py
    KERAS_BACKEND=jax python benchmarks/bench_gate.py --sessions verify,profile
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import base_parser, load_line

TARGET_CROSS_VS_SINGLE = 3.0

GATE_TESTS = '''\
"""A realistic gate on the bundled models (written by benchmarks/bench_gate.py)."""

import pytest

import convviz_check as cc
from convviz_check.crossbackend.compute import default_filters_layer
from convviz_check.examples import make_scenes, model_path

N_IMAGES = 8


@pytest.fixture(scope="session")
def images():
    return make_scenes(N_IMAGES, seed=0).floats


@pytest.fixture(scope="session", params=["convnet", "xception"])
def model(request):
    return cc.load_model(str(model_path(request.param)))


def test_activations(convviz, model, images):
    convviz.check("activations", convviz.activations(model, images), model=model)


def test_gradcam(convviz, model, images):
    convviz.check("gradcam", convviz.gradcam(model, images), model=model)


def test_patterns(convviz, model):
    layer = cc.conv_layers(model)[-1]
    patterns = convviz.filter_patterns(model, layer, filters=range(4))
    convviz.check("patterns", patterns, kind="pattern", model=model)


def test_same_checks_here(convviz, images):
    # What the cross-backend check computes, on this backend only, checked against
    # goldens: the ratio's denominator.
    model = cc.load_model(str(model_path("convnet")))
    four = images[:4]
    convviz.check("activations", convviz.activations(model, four), model=model)
    convviz.check("gradcam", convviz.gradcam(model, four), model=model)
    layer = default_filters_layer(model)
    patterns = convviz.filter_patterns(model, layer, filters=range(8))
    convviz.check("patterns", patterns, kind="pattern", model=model)


def test_backends_agree(convviz, images):
    convviz.assert_backends_agree(str(model_path("convnet")), images[:4])
'''

CONFTEST = '''\
"""Instrumentation of benchmarks/bench_gate.py (active with CONVVIZ_PROFILE_TIMES=1) and
the session pool without in-process computing (CONVVIZ_BENCH_WORKERS_ONLY=1)."""

import json
import os
import time

T_CONFTEST = time.perf_counter()


def _process_age_s():
    """Seconds since this process started (Linux /proc)."""
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


AGE_AT_CONFTEST = _process_age_s()
import keras  # noqa: E402 - timed: the framework import

import convviz_check  # noqa: E402,F401

IMPORT_S = time.perf_counter() - T_CONFTEST
PROFILE = os.environ.get("CONVVIZ_PROFILE_TIMES") == "1"
TIMES = {k: 0.0 for k in ("model loads", "trace/compile", "compute", "comparisons", "golden file I/O", "cross-backend check", "instrumentation (extra runs)")}
TESTS = {}


# Inside the cross-backend check, the running backend computes in this process (its
# own threads): that time is the check's, so the other categories do not count it.
INSIDE_CHECK = [0]


def _timed(category, fn):
    outer = category == "cross-backend check"

    def wrapper(*args, **kwargs):
        if INSIDE_CHECK[0] and not outer:
            return fn(*args, **kwargs)
        INSIDE_CHECK[0] += outer
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[category] += time.perf_counter() - t0
            INSIDE_CHECK[0] -= outer

    return wrapper


def _shapes(value):
    if hasattr(value, "shape"):
        return tuple(value.shape)
    if isinstance(value, (list, tuple)):
        return tuple(_shapes(v) for v in value)
    return None


_SEEN = set()


def _compiled(fn):
    """First call per input shapes: run twice, the difference is trace/compile."""

    def wrapper(*args):
        if INSIDE_CHECK[0]:
            return fn(*args)
        key = (id(fn), _shapes(args))
        t0 = time.perf_counter()
        out = fn(*args)
        first = time.perf_counter() - t0
        if key in _SEEN:
            TIMES["compute"] += first
            return out
        _SEEN.add(key)
        t0 = time.perf_counter()
        fn(*args)
        second = time.perf_counter() - t0
        TIMES["compute"] += second
        TIMES["trace/compile"] += max(first - second, 0.0)
        TIMES["instrumentation (extra runs)"] += second
        return out

    return wrapper


def _maker(make):
    def wrapper(*args, **kwargs):
        return _compiled(make(*args, **kwargs))

    return wrapper


if PROFILE:
    from convviz_check import backends, checks, golden, models
    from convviz_check.crossbackend import agreement

    models.load_model = _timed("model loads", models.load_model)
    convviz_check.load_model = models.load_model
    for name in ("make_value_and_grad", "make_forward", "make_ascent"):
        setattr(backends, name, _maker(getattr(backends, name)))
    checks.compare = _timed("comparisons", checks.compare)
    for name in ("load", "save", "read_inputs"):
        setattr(golden, name, _timed("golden file I/O", getattr(golden, name)))
    agreement.agreement = _timed("cross-backend check", agreement.agreement)


def pytest_configure(config):
    if os.environ.get("CONVVIZ_BENCH_WORKERS_ONLY") == "1":
        # As before in-process computing: every backend in a worker.
        from convviz_check import plugin_fixture
        from convviz_check.crossbackend.pool import WorkerPool

        pool = WorkerPool()
        config.stash[plugin_fixture._POOL] = pool
        config.add_cleanup(pool.close)


def pytest_runtest_logreport(report):
    TESTS[f"{report.nodeid} {report.when}"] = report.duration


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get("CONVVIZ_BENCH_OUT")
    if not out:
        return
    from convviz_check import plugin_fixture

    pool = session.config.stash.get(plugin_fixture._POOL, None)
    data = {
        "age_at_conftest_s": AGE_AT_CONFTEST,
        "import_s": IMPORT_S,
        "session_s": _process_age_s(),
        "times": TIMES,
        "tests": TESTS,
        "workers": pool.timings() if pool is not None else {},
        "exitstatus": int(exitstatus),
    }
    with open(out, "w") as f:
        json.dump(data, f)
'''


def _session(directory: Path, label: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    out = directory / f"{label}.json"
    env = {**os.environ, **env, "CONVVIZ_BENCH_OUT": str(out)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=directory, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        print(res.stdout[-3000:], res.stderr[-2000:])
        raise SystemExit(f"{label}: pytest exited {res.returncode}")
    data = json.loads(out.read_text())
    data["wall_s"] = wall
    return data


def _test_seconds(data: dict[str, Any], name: str) -> float:
    return sum(v for k, v in data["tests"].items() if f"::{name}" in k and k.endswith(" call"))


# label -> (pytest arguments, environment): every session but "update" verifies.
SESSION_ARGS: dict[str, tuple[list[str], dict[str, str]]] = {
    "update": (["--convviz-update=missing"], {}),
    # As the plugin was before: workers started on first use, every backend in a worker.
    "before": (["--convviz-prestart=no"], {"CONVVIZ_BENCH_WORKERS_ONLY": "1"}),
    "verify": ([], {}),  # the defaults: prestart, the running backend in this process
    "no-prestart": (["--convviz-prestart=no"], {}),
    "profile": ([], {"CONVVIZ_PROFILE_TIMES": "1"}),
    "profile-before": (
        ["--convviz-prestart=no"],
        {"CONVVIZ_PROFILE_TIMES": "1", "CONVVIZ_BENCH_WORKERS_ONLY": "1"},
    ),
    # The ratio's sessions: one backend alone, then the cross-backend check alone.
    "single": (["-k", "test_same_checks_here"], {}),
    "agree-only": (["-k", "test_backends_agree"], {}),
}
SESSIONS = tuple(SESSION_ARGS)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sessions", default=",".join(SESSIONS))
    parser.add_argument("--keep", action="store_true", help="keep the gate directory")
    parser.add_argument(
        "--jax-cache",
        action="store_true",
        help="every session runs with --convviz-jax-cache in the gate directory (the "
        "update session fills it, the others read it)",
    )
    args = parser.parse_args(argv)
    sessions = [s for s in args.sessions.split(",") if s]
    unknown = set(sessions) - set(SESSIONS)
    if unknown:
        raise SystemExit(f"unknown sessions {sorted(unknown)}; expected some of {SESSIONS}")
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    directory = Path(tempfile.mkdtemp(prefix="convviz-gate-bench-"))
    (directory / "test_gate.py").write_text(GATE_TESTS)
    (directory / "conftest.py").write_text(CONFTEST)
    (directory / "pytest.ini").write_text("[pytest]\nconvviz_golden_dir = golden\n")
    cache_note = ", JAX compilation cache on" if args.jax_cache else ""
    print(f"{load_line()}\ngate in {directory}, parent backend {backend}{cache_note}")
    results: dict[str, dict[str, Any]] = {}
    try:
        if "update" not in sessions:  # the verify sessions need goldens
            sessions.insert(0, "update")
        for label in sessions:
            flags, env = SESSION_ARGS[label]
            flags = list(flags)
            if args.jax_cache:
                flags.append("--convviz-jax-cache=jax-cache")
            results[label] = _session(directory, label, flags, dict(env))
            print(f"{label}: {results[label]['wall_s']:.1f}s  ({load_line()})")
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)

    print(f"\n{load_line()}")
    print(f"gate sessions, parent backend {backend} (wall seconds of the pytest process)")
    print(
        "| session | wall s | cross-backend test s | same checks here s | test ratio "
        "| after the session (worker shutdown, exit) s |"
    )
    print("|---|---|---|---|---|---|")
    for label, data in results.items():
        cross = _test_seconds(data, "test_backends_agree")
        single = _test_seconds(data, "test_same_checks_here")
        ratio = f"{cross / single:.1f}x" if cross and single else "-"
        after = data["wall_s"] - data["session_s"]
        print(
            f"| {label} | {data['wall_s']:.1f} | {cross:.1f} | {single:.1f} | {ratio} "
            f"| {after:.1f} |"
        )
    if "single" in results and "agree-only" in results:
        one, three = results["single"]["wall_s"], results["agree-only"]["wall_s"]
        ratio = three / one
        ok = "OK" if ratio <= TARGET_CROSS_VS_SINGLE else "MISSED"
        print(
            f"\ncross-backend check vs the same checks on {backend} alone, each a fresh pytest "
            f"session: {three:.1f} s / {one:.1f} s = {ratio:.2f}x (target <= "
            f"{TARGET_CROSS_VS_SINGLE:g}x) {ok}"
        )
    for label in ("profile-before", "profile"):
        if label in results:
            _print_split(label, results[label])
    return 0


def _print_split(label: str, data: dict[str, Any]) -> None:
    times = dict(data["times"])
    extra = times.pop("instrumentation (extra runs)")
    session = data["session_s"] - extra
    start = data["age_at_conftest_s"] + data["import_s"]
    rows = {"pytest start + imports (keras, framework, convviz_check)": start, **times}
    rows["other (pytest, fixtures, NumPy post-processing, reports)"] = session - sum(rows.values())
    print(f"\nwhere the time goes, session '{label}' ({session:.1f}s without the extra runs)")
    print("| part | seconds | share |")
    print("|---|---|---|")
    for name, seconds in rows.items():
        print(f"| {name} | {seconds:.1f} | {seconds / session:.0%} |")
    for backend, entries in data["workers"].items():
        starts = sum(e["seconds"] for e in entries if e["op"] == "start")
        loads = sum(e.get("load_s", 0.0) for e in entries)
        ops = sum(e.get("op_s", 0.0) for e in entries) - loads
        waits = sum(e["seconds"] for e in entries if e["op"] != "start")
        print(
            f"  {backend} worker: start {starts:.1f}s, model load {loads:.1f}s, compute "
            f"{ops:.1f}s; the parent waited {waits:.1f}s for its answers"
        )


if __name__ == "__main__":
    sys.exit(main())
