"""Cross-backend agreement: the same model on TensorFlow, PyTorch and JAX, one verdict.

Parent side, framework-free: this module imports no Keras and no framework (NumPy, the
standard library and the NumPy-only :mod:`convviz_check.compare` only), so the pytest
process, the CLI and a notebook stay light. Each backend runs in its own persistent
child process (``python -m convviz_check.worker``, see :mod:`convviz_check.worker`),
started lazily by a :class:`WorkerPool` and stopped at exit or session end. Models
reach the workers as sources (path, preset dir, ``module:factory``), never pickled;
arrays travel as ``.npz`` files read with ``allow_pickle=False``.

:func:`agreement` computes the requested artifacts on every backend, compares every
backend pair with :func:`convviz_check.compare` (cross-backend column of the tolerance
table) and returns an :class:`AgreementReport`. Grad-CAM is compared for the same class
on every backend: the reference backend's classes are passed to the others, and a
top-class disagreement is reported plainly.

The export route (teams whose backends cannot share one environment): each backend
environment writes its artifacts with :func:`export_artifacts` (``pytest
--convviz-export DIR``), and :func:`compare_exported` (``convviz-check agree --exported
DIR``) compares them with the same metrics and report.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import hashlib
import importlib.util
import itertools
import json
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BackendError, ConvvizError, InputError, describe_array
from .types import Comparison, MetricResult, Tolerance

BACKENDS = ("tensorflow", "torch", "jax")
ARTIFACTS = ("activations", "gradcam", "filters")
# artifact -> kind of convviz_check.compare
KINDS = {"activations": "activation", "gradcam": "heatmap", "filters": "pattern"}
# What one item of each artifact is called in the report.
ITEM_UNIT = {"activations": "layer", "gradcam": "image", "filters": "filter"}

# Every request has a timeout. Startup is separate: importing Keras and a framework
# takes 11-14 s per backend on this 2-core machine when idle (measured: tensorflow 11.1 s,
# torch 14.1 s, jax 13.4 s for import + one Conv2D call), several times that when other
# jobs share the cores, so the start timeout is generous.
DEFAULT_TIMEOUT_S = float(os.environ.get("CONVVIZ_WORKER_TIMEOUT", "600"))
DEFAULT_START_TIMEOUT_S = float(os.environ.get("CONVVIZ_WORKER_START_TIMEOUT", "300"))
STDERR_TAIL_LINES = 25
EXPORT_FORMAT = 1


class MissingBackendError(BackendError):
    """A backend needed for a cross-backend check is not installed here."""


class WorkerError(BackendError):
    """A backend worker crashed, hung past its timeout, or failed to start."""


# --------------------------------------------------------------------------------------
# Backend availability
# --------------------------------------------------------------------------------------
def parse_backends(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Backends from a comma-separated string or an iterable, validated, order kept.

    Raises:
        InputError: an unknown name, or fewer than two distinct backends.
    """
    if value is None:
        return BACKENDS
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(dict.fromkeys(str(v).strip() for v in items if str(v).strip()))
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or len(names) < 2:
        raise InputError(
            "Cross-backend agreement needs at least two distinct backends among "
            f"{BACKENDS}. Received: backends={value!r}."
        )
    return names


def missing_backends(backends: Iterable[str]) -> list[str]:
    """The backends whose framework cannot be imported here (``importlib.util.find_spec``,
    which looks the package up without importing it)."""
    return [b for b in backends if importlib.util.find_spec(b) is None]


def require_backends(backends: Iterable[str]) -> None:
    """Raise :class:`MissingBackendError` naming every backend that is not installed."""
    backends = tuple(backends)
    missing = missing_backends(backends)
    if missing:
        raise MissingBackendError(
            f"Cross-backend check needs backend(s) {', '.join(missing)}, not installed in "
            f"this environment (importlib.util.find_spec found no module "
            f"{', '.join(repr(m) for m in missing)}). Received: backends={backends}. "
            "Install them (pip install 'convviz_check[all]'), choose other backends with "
            "--convviz-backends / the convviz_backends ini key, or use the export route "
            "(--convviz-export DIR per backend env, then convviz-check agree --exported DIR)."
        )


# --------------------------------------------------------------------------------------
# Workers
# --------------------------------------------------------------------------------------
def _signal_name(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class WorkerProcess:
    """One persistent ``python -m convviz_check.worker`` child for one backend.

    Not for direct use: :class:`WorkerPool` starts, restarts and stops them. One request
    at a time (a lock); every wait has a timeout; on a crash or a timeout the process is
    killed and the request fails with a :class:`WorkerError` carrying the tail of the
    worker's stderr.
    """

    def __init__(
        self,
        backend: str,
        *,
        threads: int,
        start_timeout: float,
        test_hooks: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.backend = backend
        self.threads = threads
        self.start_timeout = start_timeout
        self.test_hooks = test_hooks
        self.extra_env = dict(env or {})
        self.info: dict[str, Any] = {}
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._workdir: Path | None = None
        self._stderr_path: Path | None = None
        self._stderr_file: Any = None

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("KERAS_BACKEND", None)  # the worker sets its own
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        # The parent's import path (pytest's rootdir insertion, a notebook's cwd), so
        # `module:factory` sources and custom_objects modules import the same there.
        env["CONVVIZ_WORKER_SYS_PATH"] = json.dumps([p for p in sys.path if p])
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        """Start the process and wait for its ``ready`` line (``start_timeout``)."""
        require_backends([self.backend])
        self._workdir = Path(tempfile.mkdtemp(prefix=f"convviz-worker-{self.backend}-"))
        self._stderr_path = self._workdir / "stderr.log"
        self._stderr_file = open(self._stderr_path, "wb")
        cmd = [
            sys.executable,
            "-m",
            "convviz_check.worker",
            "--backend",
            self.backend,
            "--threads",
            str(self.threads),
            "--workdir",
            str(self._workdir),
        ]
        if self.test_hooks:
            cmd.append("--test-hooks")
        self._lines = queue.Queue()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
            env=self._environment(),
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        reader = threading.Thread(
            target=self._read_stdout,
            args=(self._proc, self._lines),
            name=f"convviz-{self.backend}-reader",
            daemon=True,
        )
        reader.start()
        started = time.monotonic()
        message = self._next_message(None, self.start_timeout, "start", started)
        if not message.get("ready"):
            self._kill()
            raise WorkerError(
                f"The {self.backend} worker sent an unexpected first message. Received: "
                f"{message!r}. Expected a 'ready' line.{self._stderr_section()}"
            )
        self.info = {k: v for k, v in message.items() if k != "ready"}

    @staticmethod
    def _read_stdout(proc: subprocess.Popen, lines: queue.Queue) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)  # EOF: the process closed its protocol stream (exited)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the worker to exit; kill it if it does not within ``timeout``."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps({"id": 0, "op": "shutdown"}) + "\n")
                proc.stdin.flush()
                proc.stdin.close()
                proc.wait(timeout)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        self._kill()
        self._cleanup()

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover - the OS did not reap it
                pass

    def _cleanup(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                try:
                    if stream is not None:
                        stream.close()
                except OSError:
                    pass
        if self._stderr_file is not None:
            self._stderr_file.close()
            self._stderr_file = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    # -- requests -----------------------------------------------------------------------
    def stderr_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        if self._stderr_path is None or not self._stderr_path.exists():
            return ""
        with open(self._stderr_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            text = f.read().decode("utf-8", errors="replace")
        return "\n".join(text.strip().splitlines()[-lines:])

    def _stderr_section(self) -> str:
        tail = self.stderr_tail()
        if not tail:
            return "\nThe worker wrote nothing to stderr."
        return "\nLast lines of the worker's stderr:\n" + "\n".join(
            "  | " + line for line in tail.splitlines()
        )

    def _fail(self, what: str, op: str) -> WorkerError:
        """Kill the process, build the error (with stderr), and clean up."""
        pid = self.pid
        self._kill()
        returncode = self._proc.returncode if self._proc is not None else None
        message = (
            f"The {self.backend} worker (pid {pid}) {what} during request {op!r} "
            f"({_signal_name(returncode)}). The request failed; the worker is restarted "
            f"for the next one.{self._stderr_section()}"
        )
        self._cleanup()
        return WorkerError(message)

    def _next_message(
        self, request_id: int | None, timeout: float, op: str, started: float
    ) -> dict[str, Any]:
        while True:
            remaining = timeout - (time.monotonic() - started)
            try:
                line = self._lines.get(timeout=max(remaining, 0.0))
            except queue.Empty:
                raise self._fail(
                    f"did not answer within {timeout:g} s (timeout; it was killed)",
                    op,
                ) from None
            if line is None:
                if self._proc is not None:
                    try:
                        self._proc.wait(5)
                    except subprocess.TimeoutExpired:
                        pass
                raise self._fail("died" if op != "start" else "exited while starting", op)
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue  # not a protocol line (cannot happen: fd 1 goes to stderr)
            if request_id is None or message.get("id") == request_id:
                return message

    def request(
        self,
        op: str,
        params: Mapping[str, Any] | None = None,
        arrays: Mapping[str, np.ndarray] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Send one request and wait for its answer.

        Returns:
            ``(result, arrays)``: the JSON result and the returned arrays (maybe empty).

        Raises:
            WorkerError: the worker crashed, timed out or could not start.
            ConvvizError: the worker raised it (same subclass, message prefixed with the
                backend); other worker exceptions become :class:`WorkerError`.
        """
        from .worker import load_arrays, save_arrays  # numpy-only helpers

        with self._lock:
            if not self.alive:
                self._cleanup()
                self.start()
            assert self._proc is not None and self._proc.stdin is not None
            assert self._workdir is not None
            request_id = next(self._ids)
            message: dict[str, Any] = {"id": request_id, "op": op, "params": dict(params or {})}
            req_path = None
            if arrays:
                req_path = self._workdir / f"req-{request_id}.npz"
                save_arrays(req_path, dict(arrays))
                message["arrays"] = str(req_path)
            started = time.monotonic()
            try:
                self._proc.stdin.write(json.dumps(message) + "\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                raise self._fail("died before it could read the request", op) from None
            reply = self._next_message(request_id, timeout, op, started)
            if req_path is not None:
                req_path.unlink(missing_ok=True)
            out_arrays: dict[str, np.ndarray] = {}
            if reply.get("arrays"):
                out_arrays = load_arrays(reply["arrays"])
                Path(reply["arrays"]).unlink(missing_ok=True)
            if not reply.get("ok"):
                raise _remote_error(self.backend, op, reply.get("error") or {})
            return reply.get("result") or {}, out_arrays


def _remote_error(backend: str, op: str, error: Mapping[str, Any]) -> ConvvizError:
    from . import errors

    name = str(error.get("type", ""))
    message = f"[{backend} worker, {op}] {error.get('message', '')}"
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, ConvvizError):
        return cls(message)
    tb = str(error.get("traceback", "")).strip().splitlines()[-8:]
    return WorkerError(f"{message} ({name})\nWorker traceback (last lines):\n" + "\n".join(tb))


_POOLS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all_pools() -> None:
    for pool in list(_POOLS):
        pool.close()


class WorkerPool:
    """One persistent worker per backend, started on first use.

    Args:
        timeout: default seconds per request (``CONVVIZ_WORKER_TIMEOUT``, 600).
        start_timeout: seconds for a worker to import its framework and report ready
            (``CONVVIZ_WORKER_START_TIMEOUT``, 300).
        threads: framework threads per worker (``CONVVIZ_THREADS``, else the CPU count
            divided among the three backends, at least 1).
        test_hooks: serve the ``sleep`` and ``perturb`` test ops.
        env: extra environment variables for the workers.

    Example:
        >>> with WorkerPool() as pool:
        ...     report = agreement("model.keras", images, pool=pool)
    """

    def __init__(
        self,
        *,
        timeout: float | None = None,
        start_timeout: float | None = None,
        threads: int | None = None,
        test_hooks: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.timeout = float(timeout or DEFAULT_TIMEOUT_S)
        self.start_timeout = float(start_timeout or DEFAULT_START_TIMEOUT_S)
        if threads is None:
            threads = int(os.environ.get("CONVVIZ_THREADS", "0")) or max(
                1, (os.cpu_count() or 1) // len(BACKENDS)
            )
        self.threads = int(threads)
        self.test_hooks = test_hooks
        self.env = dict(env or {})
        self._workers: dict[str, WorkerProcess] = {}
        self._lock = threading.Lock()
        self.closed = False
        _POOLS.add(self)

    def worker(self, backend: str) -> WorkerProcess:
        """The (lazily created) worker of ``backend``; started on its first request."""
        if backend not in BACKENDS:
            raise InputError(f"Unknown backend. Received: {backend!r}. Expected one of {BACKENDS}.")
        with self._lock:
            if self.closed:
                raise BackendError("This WorkerPool is closed. Received a request after close().")
            if backend not in self._workers:
                self._workers[backend] = WorkerProcess(
                    backend,
                    threads=self.threads,
                    start_timeout=self.start_timeout,
                    test_hooks=self.test_hooks,
                    env=self.env,
                )
            return self._workers[backend]

    def request(
        self,
        backend: str,
        op: str,
        params: Mapping[str, Any] | None = None,
        arrays: Mapping[str, np.ndarray] | None = None,
        timeout: float | None = None,
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Send one request to ``backend``'s worker (see :meth:`WorkerProcess.request`)."""
        return self.worker(backend).request(op, params, arrays, timeout or self.timeout)

    def pid(self, backend: str) -> int | None:
        """Process id of ``backend``'s worker, None when not running."""
        worker = self._workers.get(backend)
        return worker.pid if worker is not None and worker.alive else None

    def close(self) -> None:
        """Stop every worker (idempotent)."""
        with self._lock:
            self.closed = True
            workers, self._workers = list(self._workers.values()), {}
        for w in workers:
            w.stop()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_DEFAULT_POOL: WorkerPool | None = None


def default_pool() -> WorkerPool:
    """The process-wide pool used when :func:`agreement` gets no ``pool`` (closed at exit)."""
    global _DEFAULT_POOL
    if _DEFAULT_POOL is None or _DEFAULT_POOL.closed:
        _DEFAULT_POOL = WorkerPool()
    return _DEFAULT_POOL


_STASH_KEY: Any = None


def session_pool(config: Any, *, test_hooks: bool = False, **kwargs: Any) -> WorkerPool:
    """The pytest session's pool, kept in ``config.stash`` and closed at session end
    (one per xdist worker: each has its own config). ``test_hooks=True`` gets a separate
    pool whose workers serve the test ops; ``kwargs`` go to :class:`WorkerPool` when the
    pool is created."""
    global _STASH_KEY
    if _STASH_KEY is None:
        import pytest  # only when called from the plugin or a test

        _STASH_KEY = pytest.StashKey[dict]()
    pools = config.stash.setdefault(_STASH_KEY, {})
    pool = pools.get(bool(test_hooks))
    if pool is None or pool.closed:
        pool = WorkerPool(test_hooks=test_hooks, **kwargs)
        pools[bool(test_hooks)] = pool
        config.add_cleanup(pool.close)
    return pool


# --------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairComparison:
    """One artifact compared between two backends (``expected`` is the earlier one in
    the backend order)."""

    artifact: str
    expected: str
    obtained: str
    comparison: Comparison | None
    error: str = ""

    @property
    def passed(self) -> bool:
        return self.comparison is not None and self.comparison.passed and not self.error

    @property
    def worst_item(self) -> str:
        if self.comparison is None:
            return ""
        return str(self.comparison.details.get("worst_item", ""))

    @property
    def pair(self) -> str:
        return f"{self.expected}|{self.obtained}"


def _violation(metric: MetricResult) -> float:
    """How far a metric is from its bound: > 1 fails (errors: value / bound;
    similarities: (1 - value) / (1 - bound))."""
    if metric.bound is None or not math.isfinite(metric.value):
        return 0.0 if metric.ok else math.inf
    if metric.direction == "max":
        if metric.bound > 0:
            return metric.value / metric.bound
        return math.inf if metric.value > 0 else 0.0
    slack, gap = 1.0 - metric.bound, 1.0 - metric.value
    if slack > 0:
        return gap / slack
    return math.inf if gap > 0 else 0.0


@dataclass
class AgreementReport:
    """Outcome of :func:`agreement` (or :func:`compare_exported`).

    Attributes:
        model: the model source.
        backends: the backends compared, in order (the first is the reference).
        what: the artifacts compared.
        pairs: one :class:`PairComparison` per artifact and backend pair.
        notes: plain facts that lead the report (top class differs, fingerprint
            differs, degenerate maps).
        problems: failures that are not a metric (missing artifact, heatmaps of
            different classes on the export route); any problem fails the report.
        info: per backend: versions, threads, model fingerprint.
        subjects: per artifact, what was compared (layers, classes, filters).
    """

    model: str
    backends: tuple[str, ...]
    what: tuple[str, ...]
    pairs: list[PairComparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    subjects: dict[str, str] = field(default_factory=dict)
    elapsed_s: float | None = None

    @property
    def reference(self) -> str:
        return self.backends[0]

    @property
    def passed(self) -> bool:
        return not self.problems and all(p.passed for p in self.pairs)

    def __bool__(self) -> bool:
        return self.passed

    def failures(self) -> list[PairComparison]:
        return [p for p in self.pairs if not p.passed]

    def metric_names(self, artifact: str) -> list[str]:
        names: dict[str, None] = {}
        for p in self.pairs:
            if p.artifact == artifact and p.comparison is not None:
                names.update(dict.fromkeys(p.comparison.metrics))
        return list(names)

    def matrix(self, artifact: str, metric: str) -> dict[str, dict[str, MetricResult | None]]:
        """Backend x backend matrix of one metric of one artifact (the worst item of each
        pair; symmetric, None on the diagonal and where not measured)."""
        out: dict[str, dict[str, MetricResult | None]] = {
            a: {b: None for b in self.backends} for a in self.backends
        }
        for p in self.pairs:
            if p.artifact == artifact and p.comparison is not None:
                m = p.comparison.metrics.get(metric)
                out[p.expected][p.obtained] = m
                out[p.obtained][p.expected] = m
        return out

    def worst(self, artifact: str) -> tuple[PairComparison, str] | None:
        """The pair and item (layer, image or filter) that violate their bounds the most
        for ``artifact`` (a failing pair first)."""
        best: tuple[float, PairComparison] | None = None
        for p in self.pairs:
            if p.artifact != artifact:
                continue
            if p.comparison is None:
                score = math.inf
            else:
                score = max((_violation(m) for m in p.comparison.metrics.values()), default=0.0)
                if not p.comparison.passed:
                    score = max(score, 1.0 + 1e-9)
            if best is None or score > best[0]:
                best = (score, p)
        if best is None:
            return None
        return best[1], best[1].worst_item

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (for ``report.json`` and ``convviz-check agree --json``)."""
        return {
            "passed": self.passed,
            "model": self.model,
            "backends": list(self.backends),
            "what": list(self.what),
            "notes": list(self.notes),
            "problems": list(self.problems),
            "subjects": dict(self.subjects),
            "info": self.info,
            "pairs": [
                {
                    "artifact": p.artifact,
                    "expected": p.expected,
                    "obtained": p.obtained,
                    "passed": p.passed,
                    "error": p.error,
                    "worst_item": p.worst_item,
                    "metrics": {
                        name: {
                            "value": m.value,
                            "bound": m.bound,
                            "ok": m.ok,
                            "direction": m.direction,
                            "note": m.note,
                        }
                        for name, m in (p.comparison.metrics.items() if p.comparison else [])
                    },
                    "text": p.comparison.text if p.comparison else "",
                }
                for p in self.pairs
            ],
        }

    def __str__(self) -> str:
        n_images = self.subjects.get("images", "")
        head = (
            f"cross-backend agreement {'passed' if self.passed else 'FAILED'}: "
            f"{self.model}{', ' + n_images if n_images else ''}; backends "
            f"{', '.join(self.backends)} (reference {self.reference})"
        )
        lines = [head]
        lines += [f"  ! {p}" for p in self.problems]
        lines += [f"  - {n}" for n in self.notes]
        for artifact in self.what:
            lines += self._artifact_table(artifact)
        failing = self.failures()
        if failing:
            lines.append("details of the failing pairs:")
            for p in failing:
                lines.append(f"  {p.artifact} {p.expected} -> {p.obtained}:")
                body = p.error or (p.comparison.text if p.comparison else "")
                lines += ["    " + line for line in body.splitlines()]
        return "\n".join(lines)

    def _artifact_table(self, artifact: str) -> list[str]:
        pairs = [p for p in self.pairs if p.artifact == artifact]
        subject = self.subjects.get(artifact, "")
        lines = [f"{artifact}{': ' + subject if subject else ''}"]
        if not pairs:
            return lines + ["  (not compared)"]
        columns = [p.pair for p in pairs]
        rows: list[list[str]] = [["metric", "bound", *columns]]
        for name in self.metric_names(artifact):
            bound, cells = "", []
            for p in pairs:
                m = p.comparison.metrics.get(name) if p.comparison else None
                if m is None:
                    cells.append("-")
                    continue
                if m.bound is not None:
                    bound = f"{'<=' if m.direction == 'max' else '>='} {m.bound:.3g}"
                cells.append(f"{_fmt(m.value)} {'ok' if m.ok else 'FAIL'}")
            rows.append([name, bound, *cells])
        unit = ITEM_UNIT[artifact]
        rows.append([f"worst {unit}", "", *[p.worst_item or "-" for p in pairs]])
        all_degenerate = [
            p
            for p in pairs
            if p.comparison is not None and "every map is degenerate" in p.comparison.text
        ]
        if all_degenerate:
            rows.append(
                ["degenerate", "", *["yes" if p in all_degenerate else "no" for p in pairs]]
            )
        errors = [p for p in pairs if p.error]
        if errors:
            rows.append(["error", "", *["yes" if p.error else "" for p in pairs]])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
        return lines


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.3g}"


# --------------------------------------------------------------------------------------
# Comparing per-backend results (shared by the worker route and the export route)
# --------------------------------------------------------------------------------------
# A backend's results: artifact -> (meta, arrays), the shape compute_artifacts returns.
Results = dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]]


def _comparable(artifact: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    if artifact == "activations":
        return arrays
    if artifact == "gradcam":
        return {
            "heatmap": arrays["heatmap"],
            "class_index": arrays["class_index"],
            "degenerate": arrays["degenerate"],
        }
    # Patterns are compared deprocessed (SPEC 4): standardized, uint8, borders cropped.
    from .explain.render import deprocess_image  # NumPy only

    patterns = arrays["patterns"]
    return np.stack([deprocess_image(p) for p in patterns]) if len(patterns) else patterns


def _describe_subject(artifact: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    if artifact == "activations":
        names = list(arrays)
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        return f"{len(names)} layers ({shown})"
    if artifact == "gradcam":
        classes = arrays["class_index"].tolist()
        return (
            f"layer {meta.get('layer')!r}, score {meta.get('score_kind')!r}, class per image "
            f"{classes} (the reference backend's)"
        )
    filters = meta.get("filters") or list(range(len(arrays["patterns"])))
    return f"layer {meta.get('layer')!r}, filters {filters} (compared deprocessed)"


def _gradcam_notes(backends: Sequence[str], results: Mapping[str, Results]) -> list[str]:
    notes = []
    present = [b for b in backends if "gradcam" in results[b]]
    if not present:
        return notes
    ref = present[0]
    ref_meta, ref_arrays = results[ref]["gradcam"]
    ref_classes = ref_arrays["class_index"]
    ref_top = ref_arrays.get("top_class", ref_classes)
    for b in present[1:]:
        arrays = results[b]["gradcam"][1]
        classes, top = arrays["class_index"], arrays.get("top_class", arrays["class_index"])
        if top.shape != ref_top.shape or classes.shape != ref_classes.shape:
            continue
        for i in np.flatnonzero((top != ref_top) | (classes != ref_classes)):
            if classes[i] != ref_classes[i]:
                notes.append(
                    f"top class differs on image {i}: {ref}={int(ref_classes[i])}, "
                    f"{b}={int(classes[i])} (the heatmaps explain different classes: "
                    "a failure)"
                )
            else:
                notes.append(
                    f"top class differs on image {i}: {ref}={int(ref_top[i])}, {b}={int(top[i])} "
                    f"(Grad-CAM compared for {ref}'s class {int(ref_classes[i])} on both)"
                )
    degenerate = np.stack([results[b]["gradcam"][1]["degenerate"].astype(bool) for b in present])
    for i in range(degenerate.shape[1]):
        on = [b for b, d in zip(present, degenerate[:, i], strict=True) if d]
        if len(on) == len(present):
            notes.append(
                f"gradcam image {i}: degenerate on every backend (the class score barely "
                "depends on the target layer); compared as degenerate, not measured"
            )
        elif on:
            notes.append(
                f"gradcam image {i}: degenerate on {', '.join(on)} only (a failure: "
                "degenerate vs meaningful never agrees)"
            )
    return notes


def build_report(
    model: str,
    backends: Sequence[str],
    what: Sequence[str],
    results: Mapping[str, Results],
    tolerance: Tolerance | Mapping[str, float] | None = None,
    info: Mapping[str, Mapping[str, Any]] | None = None,
    images_text: str = "",
) -> AgreementReport:
    """Compare every backend pair on every artifact in ``what``.

    Args:
        model: the model source (for the report header).
        backends: backend order; the first is the reference, pairs are (earlier, later).
        what: artifacts to compare.
        results: backend -> artifact -> ``(meta, arrays)``.
        tolerance: overrides of the cross-backend defaults.
        info: backend -> versions, threads, fingerprint.
        images_text: e.g. ``"4 images (64, 64, 3)"`` for the header.

    Returns:
        The :class:`AgreementReport`.
    """
    from .compare import compare  # NumPy and scikit-image only

    report = AgreementReport(
        model=str(model),
        backends=tuple(backends),
        what=tuple(what),
        info={b: dict((info or {}).get(b, {})) for b in backends},
    )
    if images_text:
        report.subjects["images"] = images_text
    fingerprints = {b: report.info[b].get("fingerprint") for b in backends}
    known = {b: f for b, f in fingerprints.items() if f}
    if len(set(known.values())) > 1:
        ref_fp = known.get(backends[0])
        differing = [f"{b}={f[:12]}" for b, f in known.items() if f != ref_fp]
        report.notes.append(
            f"model fingerprint differs (the backends did not run the same weights): "
            f"{backends[0]}={str(ref_fp)[:12]}, {', '.join(differing)}"
        )
    for artifact in what:
        kind = KINDS[artifact]
        missing = [b for b in backends if artifact not in results.get(b, {})]
        if missing:
            report.problems.append(f"{artifact}: no result from {', '.join(missing)}")
            continue
        meta0, arrays0 = results[backends[0]][artifact]
        report.subjects[artifact] = _describe_subject(artifact, meta0, arrays0)
        comparable = {b: _comparable(artifact, *results[b][artifact]) for b in backends}
        if artifact == "gradcam":
            report.notes += _gradcam_notes(backends, results)
            layers = {b: results[b]["gradcam"][0].get("layer") for b in backends}
            if len(set(layers.values())) > 1:
                report.problems.append(f"gradcam target layer differs across backends: {layers}")
        if artifact == "filters":
            layers = {b: results[b]["filters"][0].get("layer") for b in backends}
            if len(set(layers.values())) > 1:
                report.problems.append(f"filters layer differs across backends: {layers}")
        for a, b in itertools.combinations(backends, 2):
            try:
                comparison = compare(
                    comparable[a], comparable[b], kind, tolerance, cross_backend=True
                )
            except ConvvizError as e:
                report.pairs.append(PairComparison(artifact, a, b, None, error=str(e)))
                continue
            report.pairs.append(PairComparison(artifact, a, b, comparison))
    for artifact in what:
        worst = report.worst(artifact)
        if worst is not None and not worst[0].passed:
            pair, item = worst
            report.notes.insert(
                0,
                f"{artifact} disagree: worst {ITEM_UNIT[artifact]} {item or '?'} "
                f"({pair.expected} vs {pair.obtained})",
            )
    return report


# --------------------------------------------------------------------------------------
# The worker route
# --------------------------------------------------------------------------------------
def artifact_params(
    *,
    layers: Sequence[str] | None = None,
    batch_size: int = 32,
    class_index: int | Sequence[int] | np.ndarray | None = None,
    gradcam_layer: str | None = None,
    score: str = "auto",
    preprocess: bool = False,
    filters_layer: str | None = None,
    filters: int | Sequence[int] = 8,
    filter_steps: int = 30,
    filter_size: tuple[int, int] | None = None,
    learning_rate: float | None = None,
    seed: int = 0,
    input_range: tuple[float, float] = (0.0, 1.0),
) -> dict[str, dict[str, Any]]:
    """JSON-ready per-artifact parameters for the workers (and for export)."""
    if isinstance(class_index, np.ndarray):
        class_index = class_index.tolist()
    elif class_index is not None and not isinstance(class_index, int | np.integer):
        class_index = [int(c) for c in class_index]
    elif class_index is not None:
        class_index = int(class_index)
    return {
        "activations": {"layers": list(layers) if layers else None, "batch_size": int(batch_size)},
        "gradcam": {
            "class_index": class_index,
            "layer": gradcam_layer,
            "score": score,
            "preprocess": bool(preprocess),
        },
        "filters": {
            "layer": filters_layer,
            "filters": filters if isinstance(filters, int) else [int(f) for f in filters],
            "steps": int(filter_steps),
            "size": list(filter_size) if filter_size else None,
            "learning_rate": learning_rate,
            "seed": int(seed),
            "input_range": [float(v) for v in input_range],
        },
    }


def model_spec(
    model_source: Any, safe_mode: bool = True, custom_objects: Sequence[str] | None = None
) -> dict[str, Any]:
    """The JSON model spec sent to workers: a source string, never a model object."""
    if not isinstance(model_source, str | os.PathLike):
        raise InputError(
            "Cross-backend agreement loads the model in each backend's worker from its "
            "source; model objects are never pickled across processes. Received: "
            f"model_source of type {type(model_source).__name__!r}. Expected a path "
            "(.keras, .h5, preset directory), 'hub:<preset>' or 'pkg.module:factory'."
        )
    if isinstance(custom_objects, Mapping) or isinstance(custom_objects, str):
        raise InputError(
            "custom_objects must be a list of importable module names for cross-backend "
            f"checks (classes cannot cross processes). Received: {custom_objects!r}."
        )
    text = os.fspath(model_source)
    path = Path(text)
    source = str(path.resolve()) if path.exists() else text
    return {
        "source": source,
        "safe_mode": bool(safe_mode),
        "custom_objects": [str(m) for m in (custom_objects or [])],
    }


def as_images(images: Any) -> np.ndarray:
    """Validate images for transport: a NumPy array ``(N, H, W, C)`` or ``(H, W, C)``."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[0] == 0 or arr.dtype.kind not in "uif":
        raise InputError(
            "Images must be a non-empty numeric array (N, H, W, C) or (H, W, C). Received: "
            f"{describe_array('images', arr)}"
        )
    return arr


def _run_backend(
    pool: WorkerPool,
    backend: str,
    spec: dict[str, Any],
    images: np.ndarray,
    what: Sequence[str],
    params: dict[str, dict[str, Any]],
    timeout: float | None,
) -> tuple[dict[str, Any], Results]:
    described, _ = pool.request(backend, "load", {"model": spec}, timeout=timeout)
    worker = pool.worker(backend)
    info = {**worker.info, "fingerprint": described.get("fingerprint")}
    results: Results = {}
    for artifact in what:
        request = {**params[artifact], "model": spec}
        arrays = {"images": images} if artifact != "filters" else None
        results[artifact] = pool.request(backend, artifact, request, arrays, timeout=timeout)
    return info, results


def agreement(
    model_source: str | os.PathLike,
    images: Any,
    what: Sequence[str] = ARTIFACTS,
    backends: Sequence[str] | str = BACKENDS,
    tolerance: Tolerance | Mapping[str, float] | None = None,
    *,
    pool: WorkerPool | None = None,
    layers: Sequence[str] | None = None,
    class_index: int | Sequence[int] | np.ndarray | None = None,
    gradcam_layer: str | None = None,
    score: str = "auto",
    preprocess: bool = False,
    filters_layer: str | None = None,
    filters: int | Sequence[int] = 8,
    filter_steps: int = 30,
    filter_size: tuple[int, int] | None = None,
    learning_rate: float | None = None,
    seed: int = 0,
    input_range: tuple[float, float] = (0.0, 1.0),
    safe_mode: bool = True,
    custom_objects: Sequence[str] | None = None,
    timeout: float | None = None,
) -> AgreementReport:
    """Compute activations, Grad-CAM and filter patterns of one model on several
    backends and compare every pair.

    Args:
        model_source: a path (``.keras``, ``.h5``, keras-hub preset dir), ``"hub:<preset>"``
            or ``"pkg.module:factory"`` (the factory must load weights from files:
            seeded initializers differ across backends). Never a model object.
        images: ``(N, H, W, C)`` or ``(H, W, C)``, passed to the model as given.
        what: artifacts among ``"activations"``, ``"gradcam"``, ``"filters"``.
        backends: two or more of ``"tensorflow"``, ``"torch"``, ``"jax"`` (a list or a
            comma-separated string); the first is the reference.
        tolerance: overrides of the cross-backend defaults
            (:func:`convviz_check.tolerances.default_tolerance`).
        pool: the :class:`WorkerPool` to use (default: a process-wide pool).
        layers: activation layers (default: every conv/pool layer).
        class_index: Grad-CAM class(es); default: the reference backend's top class per
            image, passed to the other backends so that all explain the same class.
        gradcam_layer, score, preprocess: passed to :func:`convviz_check.gradcam`.
        filters_layer: layer of the filter patterns (default: the deepest conv layer
            whose map is wider than 8 cells; see ``worker.default_filters_layer``).
        filters: how many filters (the first ``n``) or which ones.
        filter_steps, filter_size, learning_rate, seed, input_range: passed to
            :func:`convviz_check.filter_patterns`.
        safe_mode, custom_objects: passed to :func:`convviz_check.load_model` in each
            worker (``custom_objects`` as importable module names).
        timeout: seconds per worker request (default: the pool's).

    Returns:
        An :class:`AgreementReport`; ``bool(report)`` is ``report.passed`` and
        ``print(report)`` shows the table.

    Raises:
        MissingBackendError: a backend is not installed (names it).
        WorkerError: a worker crashed or timed out (with its stderr).
        ConvvizError: a worker raised one (bad layer name, bad model...).

    Example:
        >>> report = cc.agreement("model.keras", images[:4], backends=("tensorflow", "jax"))
        >>> print(report)
    """
    started = time.perf_counter()
    what = tuple(what)
    unknown = [w for w in what if w not in ARTIFACTS]
    if unknown or not what:
        raise InputError(
            f"Unknown artifact(s). Received: what={what!r}. Expected some of {ARTIFACTS}."
        )
    backends = parse_backends(backends)
    images = as_images(images)
    spec = model_spec(model_source, safe_mode, custom_objects)
    params = artifact_params(
        layers=layers,
        class_index=class_index,
        gradcam_layer=gradcam_layer,
        score=score,
        preprocess=preprocess,
        filters_layer=filters_layer,
        filters=filters,
        filter_steps=filter_steps,
        filter_size=filter_size,
        learning_rate=learning_rate,
        seed=seed,
        input_range=input_range,
    )
    require_backends(backends)
    pool = pool or default_pool()
    # One thread per backend: the workers compute in parallel (separate processes).
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(backends)) as ex:
        futures = {
            b: ex.submit(_run_backend, pool, b, spec, images, what, params, timeout)
            for b in backends
        }
        outcomes = {b: _outcome(f) for b, f in futures.items()}
    for b in backends:  # the first failure in backend order
        if isinstance(outcomes[b], BaseException):
            raise outcomes[b]
    info = {b: outcomes[b][0] for b in backends}
    results = {b: outcomes[b][1] for b in backends}
    if "gradcam" in what and class_index is None:
        _align_gradcam_classes(pool, backends, spec, images, params, results, timeout)
    report = build_report(
        str(model_source),
        backends,
        what,
        results,
        tolerance,
        info,
        images_text=f"{images.shape[0]} image(s) {tuple(images.shape[1:])} {images.dtype}",
    )
    report.elapsed_s = time.perf_counter() - started
    return report


def _outcome(future: concurrent.futures.Future) -> Any:
    try:
        return future.result()
    except BaseException as e:  # noqa: BLE001 - re-raised by the caller in backend order
        return e


def _align_gradcam_classes(
    pool: WorkerPool,
    backends: Sequence[str],
    spec: dict[str, Any],
    images: np.ndarray,
    params: dict[str, dict[str, Any]],
    results: dict[str, Results],
    timeout: float | None,
) -> None:
    """Recompute Grad-CAM on backends whose top class differs from the reference's, for
    the reference's class, so every backend explains the same class. Each backend's own
    top class stays in ``top_class`` for the report's note."""
    ref_classes = results[backends[0]]["gradcam"][1]["class_index"]
    redo = [
        b
        for b in backends[1:]
        if not np.array_equal(results[b]["gradcam"][1]["class_index"], ref_classes)
    ]
    if not redo:
        return

    def run(b: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        own_top = results[b]["gradcam"][1].get("top_class")
        request = {**params["gradcam"], "class_index": ref_classes.tolist(), "model": spec}
        meta, arrays = pool.request(b, "gradcam", request, {"images": images}, timeout=timeout)
        if own_top is not None:
            arrays["top_class"] = own_top
        return meta, arrays

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(redo)) as ex:
        redone = {b: ex.submit(run, b) for b in redo}
        for b in redo:
            results[b]["gradcam"] = redone[b].result()


def assert_backends_agree(
    model_source: str | os.PathLike, images: Any, **kwargs: Any
) -> AgreementReport:
    """Run :func:`agreement` and raise ``AssertionError`` with the table when the
    backends disagree; returns the report when they agree."""
    __tracebackhide__ = True
    report = agreement(model_source, images, **kwargs)
    if not report.passed:
        raise AssertionError(str(report))
    return report


# --------------------------------------------------------------------------------------
# The export route
# --------------------------------------------------------------------------------------
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def export_dirname(name: str) -> str:
    """A safe directory name for ``name`` (e.g. a pytest node id): no separators, no
    ``..``, bounded length; a short hash keeps sanitized names distinct."""
    safe = _SAFE.sub("_", name).strip("._") or "check"
    if safe != name or len(safe) > 120:
        safe = f"{safe[:100]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return safe


def _normalize_artifact(artifact: str, value: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], Mapping):
        return dict(value[0]), {k: np.asarray(v) for k, v in value[1].items()}
    if artifact == "activations" and isinstance(value, Mapping):
        return {"layers": list(value)}, {k: np.asarray(v, np.float32) for k, v in value.items()}
    if artifact == "gradcam" and hasattr(value, "heatmap"):
        arrays = {
            "heatmap": np.asarray(value.heatmap, np.float32),
            "raw": np.asarray(value.raw, np.float32),
            "class_index": np.asarray(value.class_index, np.int64),
            "score": np.asarray(value.score, np.float32),
            "degenerate": np.asarray(value.degenerate, bool),
        }
        meta = {
            "layer": value.layer,
            "score_kind": value.score_kind,
            "image_shape": [int(s) for s in value.image_shape],
        }
        return meta, arrays
    if artifact == "filters" and isinstance(value, np.ndarray):
        return {"filters": list(range(len(value)))}, {"patterns": value.astype(np.float32)}
    raise InputError(
        f"Cannot export artifact {artifact!r}. Received: value of type {type(value).__name__}. "
        "Expected (meta, arrays), a dict of activations, a GradCAM or an array of patterns."
    )


def export_artifacts(
    directory: str | os.PathLike,
    backend: str,
    name: str,
    artifacts: Mapping[str, Any],
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write one backend's artifacts for a later ``convviz-check agree --exported``.

    Layout: ``DIR/<safe name>/<backend>/<artifact>.npz`` (arrays, ``allow_pickle=False``
    readable) + ``<artifact>.json`` (meta) + ``info.json`` (name, backend, versions,
    fingerprint). Writes are atomic, so parallel test processes are safe.

    Args:
        directory: the export root (``--convviz-export DIR``).
        backend: the backend that computed them.
        name: the check's name (e.g. the pytest node id).
        artifacts: artifact -> ``(meta, arrays)``, or a dict of activations, a
            ``GradCAM``, an array of filter patterns.
        info: extra facts (versions, fingerprint, model source).

    Returns:
        The backend's directory.
    """
    from .worker import save_arrays

    if backend not in BACKENDS:
        raise InputError(
            f"Unknown backend. Received: backend={backend!r}. Expected one of {BACKENDS}."
        )
    out = Path(directory) / export_dirname(name) / backend
    out.mkdir(parents=True, exist_ok=True)
    for artifact, value in artifacts.items():
        if artifact not in ARTIFACTS:
            raise InputError(
                f"Unknown artifact. Received: {artifact!r}. Expected one of {ARTIFACTS}."
            )
        meta, arrays = _normalize_artifact(artifact, value)
        save_arrays(out / f"{artifact}.npz", arrays)
        _write_json(out / f"{artifact}.json", meta)
    _write_json(
        out / "info.json",
        {**dict(info or {}), "name": name, "backend": backend, "format": EXPORT_FORMAT},
    )
    return out


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def load_exported(
    directory: str | os.PathLike,
) -> dict[str, tuple[dict[str, Any], dict[str, Results]]]:
    """Read an export root: check dir name -> (backend -> info, backend -> results)."""
    from .worker import load_arrays

    root = Path(directory)
    if not root.is_dir():
        raise InputError(
            f"Export directory not found. Received: {str(root)!r}. Expected the DIR given "
            "to --convviz-export in each backend environment."
        )
    checks: dict[str, tuple[dict[str, Any], dict[str, Results]]] = {}
    for check_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        infos: dict[str, Any] = {}
        results: dict[str, Results] = {}
        for backend_dir in sorted(p for p in check_dir.iterdir() if p.is_dir()):
            info_path = backend_dir / "info.json"
            if backend_dir.name not in BACKENDS or not info_path.is_file():
                continue
            infos[backend_dir.name] = json.loads(info_path.read_text())
            res: Results = {}
            for artifact in ARTIFACTS:
                npz = backend_dir / f"{artifact}.npz"
                if npz.is_file():
                    meta_path = backend_dir / f"{artifact}.json"
                    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
                    res[artifact] = (meta, load_arrays(npz))
            results[backend_dir.name] = res
        if results:
            checks[check_dir.name] = (infos, results)
    return checks


def compare_exported(
    directory: str | os.PathLike,
    backends: Sequence[str] | str | None = None,
    tolerance: Tolerance | Mapping[str, float] | None = None,
) -> dict[str, AgreementReport]:
    """Compare the backends exported under ``directory`` (one report per check).

    Grad-CAM on this route is computed by each environment for its own top class; where
    the classes differ the heatmaps explain different classes, which fails the check
    with the classes named (the worker route aligns classes instead).

    Args:
        directory: the export root.
        backends: restrict and order the backends (default: those exported, in the
            order tensorflow, torch, jax).
        tolerance: overrides of the cross-backend defaults.

    Returns:
        check name -> :class:`AgreementReport`. A check exported by fewer than two
        backends gets a report with a problem saying which backends are missing.
    """
    wanted = parse_backends(backends) if backends is not None else None
    checks = load_exported(directory)
    if not checks:
        raise InputError(
            f"No exported checks found. Received: {str(directory)!r} (no <check>/<backend>/"
            "info.json). Expected the DIR given to --convviz-export."
        )
    reports = {}
    for dirname, (infos, results) in checks.items():
        order = [b for b in (wanted or BACKENDS) if b in results]
        name = next((i.get("name") for i in infos.values() if i.get("name")), dirname)
        what = tuple(a for a in ARTIFACTS if any(a in results[b] for b in order))
        if len(order) < 2:
            expected = wanted or BACKENDS
            report = AgreementReport(model=str(name), backends=tuple(order) or ("-",), what=what)
            report.problems.append(
                f"exported by {order or 'no backend'} only; expected at least two of "
                f"{expected} (missing: {[b for b in expected if b not in results]})"
            )
            reports[str(name)] = report
            continue
        report = build_report(
            str(infos[order[0]].get("model") or name),
            order,
            what,
            {b: results[b] for b in order},
            tolerance,
            {b: infos[b] for b in order},
        )
        report.subjects["check"] = str(name)
        reports[str(name)] = report
    return reports
