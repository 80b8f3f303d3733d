"""Backend worker processes, parent side: start, talk, time out, restart, stop.

Framework-free (NumPy and the standard library): the parent never imports Keras. Each
backend gets one persistent ``python -m convviz_check.crossbackend.worker`` child
(:class:`WorkerProcess`), started on its first request by a :class:`WorkerPool` and
stopped when the pool closes (the process-wide :func:`default_pool` closes at exit).

The protocol (one JSON object per line, arrays in ``.npz`` files) is described in
:mod:`convviz_check.crossbackend.worker`; a worker's error is rebuilt here as the same
:class:`~convviz_check.errors.ConvvizError` subclass, its artifact read by
:func:`~convviz_check.crossbackend.requests.reply_artifact`.
"""

from __future__ import annotations

import atexit
import importlib.util
import itertools
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from .. import storage
from ..artifacts import Artifact
from ..errors import BackendError, InputError, MissingBackendError, WorkerError, rebuild
from ..types import BACKEND_ALIASES, BACKENDS
from .local import LocalWorker, running_backend
from .requests import exit_text, reply_artifact

# Every request has a timeout; starting has its own, generous one: importing Keras and a
# framework took 11-14 s per backend on an idle 2-core machine (tensorflow 11.1 s, torch
# 14.1 s, jax 13.4 s with one Conv2D call), several times that under load.
DEFAULT_TIMEOUT_S = float(os.environ.get("CONVVIZ_WORKER_TIMEOUT", "600"))
DEFAULT_START_TIMEOUT_S = float(os.environ.get("CONVVIZ_WORKER_START_TIMEOUT", "300"))
STDERR_TAIL_LINES = 25
WORKER_MODULE = "convviz_check.crossbackend.worker"
Reply = tuple[dict[str, Any], Artifact | None]


# --------------------------------------------------------------------------------------
# Backend availability
# --------------------------------------------------------------------------------------
def parse_backends(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Backends from a comma-separated string or an iterable, validated, order kept
    (duplicates dropped); None means all three.

    Raises:
        InputError: an unknown name, or fewer than two distinct backends.
    """
    if value is None:
        return BACKENDS
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(dict.fromkeys(str(v).strip() for v in items if str(v).strip()))
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        named = ", ".join(
            repr(n)
            + (
                f" (did you mean {BACKEND_ALIASES[n.lower()]!r}?)"
                if n.lower() in BACKEND_ALIASES
                else ""
            )
            for n in unknown
        )
        raise InputError(
            f"Unknown backend {named}. Received: backends={value!r}. Expected names "
            f"among {BACKENDS} (Keras' own names), comma-separated."
        )
    if len(names) < 2:
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
# One worker
# --------------------------------------------------------------------------------------
def expected_backend() -> str:
    """The backend this process's Keras runs, or will run once imported: the imported
    Keras's, else what Keras will read at import (``KERAS_BACKEND``, else the
    ``backend`` of ``keras.json`` in ``KERAS_HOME`` or ``~/.keras``, else
    ``tensorflow``), read the way Keras reads it and without importing it.

    Prestarting uses it before any test has imported Keras: the running backend is
    computed in this process, never in a worker.
    """
    running = running_backend()
    if running is not None:
        return running
    env = os.environ.get("KERAS_BACKEND")
    if env:
        return env
    if "KERAS_HOME" in os.environ:
        home = os.environ["KERAS_HOME"]
    else:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    try:
        with open(os.path.join(os.path.expanduser(home), "keras.json"), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        config = {}
    backend = config.get("backend") if isinstance(config, dict) else None
    return str(backend) if backend else "tensorflow"


class WorkerProcess:
    """One persistent worker child for one backend.

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
        ops_module: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.backend = backend
        self.threads = threads
        self.start_timeout = start_timeout
        self.ops_module = ops_module
        self.extra_env = dict(env or {})
        self.info: dict[str, Any] = {}
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._workdir: Path | None = None
        self._stderr_path: Path | None = None
        self._stderr_file: IO[bytes] | None = None
        self._starter: threading.Thread | None = None
        self._closing = False
        # One entry per answered request: op, parent-side seconds (the wait, a start
        # included), the worker's op and model-load seconds; "start" entries for starts.
        self.timings: list[dict[str, Any]] = []

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self, workdir: Path) -> list[str]:
        """The worker's command line."""
        cmd = [sys.executable, "-m", WORKER_MODULE, "--backend", self.backend]
        cmd += ["--threads", str(self.threads), "--workdir", str(workdir)]
        if self.ops_module:
            cmd += ["--ops-module", self.ops_module]
        return cmd

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("KERAS_BACKEND", None)  # the worker sets its own
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        # The parent's import path (pytest's rootdir insertion, a notebook's cwd), so
        # `module:factory` sources, custom_objects and ops modules import the same there.
        env["CONVVIZ_WORKER_SYS_PATH"] = json.dumps([p for p in sys.path if p])
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        """Start the process and wait for its ``ready`` line (``start_timeout``)."""
        require_backends([self.backend])
        started = time.monotonic()
        self._workdir = Path(tempfile.mkdtemp(prefix=f"convviz-worker-{self.backend}-"))
        self._stderr_path = self._workdir / "stderr.log"
        self._stderr_file = open(self._stderr_path, "wb")  # closed in _cleanup
        self._lines = queue.Queue()
        self._proc = subprocess.Popen(
            self.command(self._workdir),
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
        message = self._next_message(None, self.start_timeout, "start", time.monotonic())
        if not message.get("ready"):
            self._kill()
            raise WorkerError(
                f"The {self.backend} worker sent an unexpected first message. Received: "
                f"{message!r}. Expected a 'ready' line.{self._stderr_section()}"
            )
        self.info = {k: v for k, v in message.items() if k != "ready"}
        self.timings.append({"op": "start", "seconds": round(time.monotonic() - started, 4)})

    def start_in_background(self) -> None:
        """Start the process on a background thread and return at once; the next
        request waits for that start (it holds the request lock). A failed start is
        not raised here: the next request starts the worker again and raises then,
        with the worker's stderr. Nothing happens when the worker runs already or is
        being started."""
        if self.alive or (self._starter is not None and self._starter.is_alive()):
            return

        def run() -> None:
            with self._lock:
                if self.alive:
                    return
                self._cleanup()
                try:
                    self.start()
                except Exception:  # noqa: BLE001 - the next request retries and raises
                    self._kill()
                    self._cleanup()
                    return
                if self._closing:  # stopped while starting
                    self._kill()
                    self._cleanup()

        self._starter = threading.Thread(
            target=run, name=f"convviz-{self.backend}-starter", daemon=True
        )
        self._starter.start()

    @staticmethod
    def _read_stdout(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)  # EOF: the process closed its protocol stream (exited)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the worker to exit; kill it if it does not within ``timeout``."""
        starter = self._starter
        if starter is not None and starter.is_alive():
            # A background start under way: end it (its wait for 'ready' sees the
            # process exit) rather than leave a worker nobody will stop.
            self._closing = True
            self._kill()
            starter.join(timeout)
            self._closing = False
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self.ask_to_exit()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._kill()
        self._cleanup()

    def ask_to_exit(self) -> None:
        """Send ``shutdown`` and close the worker's stdin without waiting (a pool asks
        all its workers first, then waits: they exit side by side)."""
        proc = self._proc
        if proc is None or proc.poll() is not None or proc.stdin is None or proc.stdin.closed:
            return
        try:
            proc.stdin.write(json.dumps({"id": 0, "op": "shutdown"}) + "\n")
            proc.stdin.flush()
            proc.stdin.close()
        except (OSError, ValueError):
            pass

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

    # -- stderr -------------------------------------------------------------------------
    def stderr_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        """The last ``lines`` lines the worker wrote to stderr (its banners, warnings,
        prints and tracebacks)."""
        if self._stderr_path is None or not self._stderr_path.exists():
            return ""
        with open(self._stderr_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
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
            f"({exit_text(returncode)}). The request failed; the worker is restarted "
            f"for the next one.{self._stderr_section()}"
        )
        self._cleanup()
        return WorkerError(message)

    # -- requests -----------------------------------------------------------------------
    def _next_message(
        self, request_id: int | None, timeout: float, op: str, started: float
    ) -> dict[str, Any]:
        while True:
            remaining = timeout - (time.monotonic() - started)
            try:
                line = self._lines.get(timeout=max(remaining, 0.0))
            except queue.Empty:
                raise self._fail(
                    f"did not answer within {timeout:g} s (timeout; it was killed)", op
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
                continue  # not a protocol line (the worker points fd 1 at stderr)
            if isinstance(message, dict) and (
                request_id is None or message.get("id") == request_id
            ):
                return message

    def request(
        self,
        op: str,
        params: Mapping[str, Any] | None = None,
        arrays: Mapping[str, np.ndarray] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> Reply:
        """Send one request and wait for its answer.

        Returns:
            ``(result, artifact)``: the JSON result and the returned
            :class:`~convviz_check.artifacts.Artifact` (None for ops that return none).

        Raises:
            WorkerError: the worker crashed, timed out or could not start.
            ConvvizError: the worker raised it (same subclass, message prefixed with the
                backend and op); other worker exceptions become :class:`WorkerError`.
        """
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
                storage.write_bytes(req_path, storage.encode_npz(dict(arrays)))
                message["arrays"] = str(req_path)
            started = time.monotonic()
            try:
                self._proc.stdin.write(json.dumps(message) + "\n")
                self._proc.stdin.flush()
            except (OSError, ValueError):
                raise self._fail("died before it could read the request", op) from None
            reply = self._next_message(request_id, timeout, op, started)
            if req_path is not None:
                req_path.unlink(missing_ok=True)
            self.timings.append(
                {
                    "op": op,
                    "seconds": round(time.monotonic() - started, 4),
                    **(reply.get("timing") or {}),
                }
            )
            artifact = reply_artifact(reply)
            if not reply.get("ok"):
                raise rebuild(reply.get("error") or {}, f"[{self.backend} worker, {op}]")
            return reply.get("result") or {}, artifact


# --------------------------------------------------------------------------------------
# The pool
# --------------------------------------------------------------------------------------
_POOLS: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


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
        ops_module: an importable module name whose ``OPS`` dict (op name -> callable)
            adds ops to every worker (see :mod:`convviz_check.crossbackend.worker`);
            like ``custom_objects``, it travels as a name and is imported by the worker.
        env: extra environment variables for the workers.
        in_process: compute the backend of the Keras this process already runs here,
            without a worker (:mod:`~convviz_check.crossbackend.local`): one framework
            import and one model load fewer per check. Ignored with ``ops_module``
            (test ops that crash or hang must not do it here) and where Keras is not
            imported (the pool never imports it). The pytest plugin's pool and
            :func:`default_pool` set it.

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
        ops_module: str | None = None,
        env: Mapping[str, str] | None = None,
        in_process: bool = False,
    ) -> None:
        self.in_process = bool(in_process)
        self.timeout = float(timeout or DEFAULT_TIMEOUT_S)
        self.start_timeout = float(start_timeout or DEFAULT_START_TIMEOUT_S)
        if threads is None:
            threads = int(os.environ.get("CONVVIZ_THREADS", "0")) or max(
                1, (os.cpu_count() or 1) // len(BACKENDS)
            )
        self.threads = int(threads)
        self.ops_module = ops_module
        self.env = dict(env or {})
        self._workers: dict[str, WorkerProcess | LocalWorker] = {}
        self._lock = threading.Lock()
        self.closed = False
        _POOLS.add(self)

    def worker(self, backend: str) -> WorkerProcess | LocalWorker:
        """The (lazily created) worker of ``backend``; started on its first request (a
        :class:`~.local.LocalWorker` for this process's own backend with ``in_process``)."""
        if backend not in BACKENDS:
            raise InputError(f"Unknown backend. Received: {backend!r}. Expected one of {BACKENDS}.")
        with self._lock:
            if self.closed:
                raise BackendError("This WorkerPool is closed. Received a request after close().")
            if backend not in self._workers and self.is_local(backend):
                self._workers[backend] = LocalWorker(backend)
            if backend not in self._workers:
                self._workers[backend] = WorkerProcess(
                    backend,
                    threads=self.threads,
                    start_timeout=self.start_timeout,
                    ops_module=self.ops_module,
                    env=self.env,
                )
            return self._workers[backend]

    def is_local(self, backend: str) -> bool:
        """True when ``backend``'s requests run in this process (see ``in_process``)."""
        return self.in_process and self.ops_module is None and running_backend() == backend

    def request(
        self,
        backend: str,
        op: str,
        params: Mapping[str, Any] | None = None,
        arrays: Mapping[str, np.ndarray] | None = None,
        timeout: float | None = None,
    ) -> Reply:
        """Send one request to ``backend``'s worker (see :meth:`WorkerProcess.request`)."""
        return self.worker(backend).request(op, params, arrays, timeout or self.timeout)

    def prestart(self, backends: Iterable[str]) -> list[str]:
        """Start the workers of ``backends`` in the background and return at once, so
        that they import their frameworks while this process does other work (the
        first request to each then waits only for what is left of its start).
        Backends that are not installed are skipped (the check that needs them reports
        them). Returns the backends being started.

        Measured (benchmarks/bench_gate.py): see the table there.
        """
        names = [b for b in dict.fromkeys(backends) if b in BACKENDS]
        started = [b for b in names if b not in missing_backends([b])]
        for b in started:
            self.worker(b).start_in_background()
        return started

    def timings(self) -> dict[str, list[dict[str, Any]]]:
        """Each started worker's request timings (see :attr:`WorkerProcess.timings`)."""
        with self._lock:
            workers = dict(self._workers)
        return {b: list(w.timings) for b, w in workers.items()}

    def pid(self, backend: str) -> int | None:
        """Process id of ``backend``'s worker, None when not running."""
        worker = self._workers.get(backend)
        return worker.pid if worker is not None and worker.alive else None

    def close(self) -> None:
        """Stop every worker (idempotent)."""
        with self._lock:
            self.closed = True
            workers, self._workers = list(self._workers.values()), {}
        # Ask every worker first, then wait for each: their exits (a second or more
        # for a framework's teardown) overlap instead of adding up.
        for w in workers:
            w.ask_to_exit()
        for w in workers:
            w.stop()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_DEFAULT_POOL: WorkerPool | None = None


def default_pool() -> WorkerPool:
    """The process-wide pool used when :func:`~.agreement.agreement` gets no ``pool``
    (its workers stop at exit)."""
    global _DEFAULT_POOL
    if _DEFAULT_POOL is None or _DEFAULT_POOL.closed:
        _DEFAULT_POOL = WorkerPool(in_process=True)
    return _DEFAULT_POOL
