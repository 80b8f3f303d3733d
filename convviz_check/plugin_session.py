"""Session and per-test state behind the pytest plugin (kept out of plugin.py so that
the hook module stays thin). Per-test state lives on the fixture object; per-session
state in ``config.stash``."""

from __future__ import annotations

import functools
import os
import platform
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .errors import ComparisonError, GoldenError, InputError
from .types import Tolerance

UPDATE_MODES = ("missing", "failed", "all")
UNUSED_MODES = ("warn", "fail", "delete")


def option(config: pytest.Config, name: str) -> Any:
    """CLI value if given, else the ini value (marker values are applied by callers)."""
    cli = config.getoption("--" + name.replace("_", "-"), default=None)
    if cli not in (None, False):
        return cli
    try:
        return config.getini(name.replace("-", "_"))
    except ValueError:
        return None


def _str_option(config: pytest.Config, name: str) -> str | None:
    value = option(config, name)
    return str(value) if value not in (None, "", False) else None


def _bool_option(config: pytest.Config, name: str) -> bool:
    value = option(config, name)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _path_option(config: pytest.Config, name: str, default: Path | None) -> Path | None:
    """A directory option: CLI paths are relative to the invocation directory, ini
    paths to the ini file's directory (so both mean what they say)."""
    cli = config.getoption("--" + name.replace("_", "-"), default=None)
    if cli:
        return (Path(config.invocation_params.dir) / cli).resolve()
    try:
        ini = config.getini(name)
    except ValueError:
        ini = None
    if ini:
        base = config.inipath.parent if config.inipath else config.rootpath
        return (base / str(ini)).resolve()
    return default


@dataclass
class SessionState:
    """Everything the plugin keeps for one pytest process (stored in ``config.stash``).

    Under pytest-xdist each worker has its own; workers send theirs to the controller
    in ``workeroutput`` (see :meth:`export` / :meth:`merge`).
    """

    config: pytest.Config
    golden_dir: Path
    results_dir: Path | None
    update: str | None
    override: bool
    reference: str
    unused_mode: str
    worker: str
    backend: str | None = None
    touched: set[str] = field(default_factory=set)
    written: list[str] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    deselected: set[str] = field(default_factory=set)
    skipped: set[str] = field(default_factory=set)
    collected_files: set[str] = field(default_factory=set)
    failed: bool = False
    unused: list[str] = field(default_factory=list)
    unused_note: str = ""
    deleted: list[str] = field(default_factory=list)
    report_paths: dict[str, Path] = field(default_factory=dict)

    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    def current_backend(self) -> str:
        """The running Keras backend (imports keras on first use only)."""
        if self.backend is None:
            from .backends import current_backend

            self.backend = current_backend()
        return self.backend

    def export(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "touched": sorted(self.touched),
            "written": list(self.written),
            "deselected": sorted(self.deselected),
            "skipped": sorted(self.skipped),
            "collected_files": sorted(self.collected_files),
            "failed": self.failed,
        }

    def merge(self, data: dict[str, Any]) -> None:
        self.backend = self.backend or data.get("backend")
        self.touched.update(data.get("touched", ()))
        self.written.extend(data.get("written", ()))
        self.deselected.update(data.get("deselected", ()))
        self.skipped.update(data.get("skipped", ()))
        self.collected_files.update(data.get("collected_files", ()))
        self.failed = self.failed or bool(data.get("failed"))


SESSION = pytest.StashKey[SessionState]()


def session_state(config: pytest.Config) -> SessionState:
    return config.stash[SESSION]


def configure(config: pytest.Config) -> None:
    """Read the options once, refuse contradictory ones, register the session hooks."""
    update = _str_option(config, "convviz_update")
    if update is not None and update not in UPDATE_MODES:
        raise pytest.UsageError(
            f"convviz_update must be one of {UPDATE_MODES}. Received: {update!r}"
        )
    override = _bool_option(config, "convviz_update_override")
    if override and update is None:
        raise pytest.UsageError(
            "--convviz-update-override says where updates go (golden/_backend/<backend>/); it "
            "needs an update mode. Received: no --convviz-update. Expected e.g. "
            "`pytest --convviz-update=failed --convviz-update-override`."
        )
    if (
        update is not None
        and os.environ.get("CI")
        and not _bool_option(config, "convviz_allow_ci_update")
    ):
        raise pytest.UsageError(
            f"--convviz-update={update} is refused because the CI environment variable is set "
            f"(CI={os.environ['CI']!r}): goldens must not be rewritten silently in CI. Review "
            "the failures, download the results dir artifact and accept it with `convviz-check "
            "golden accept <results-dir>`, or pass --convviz-allow-ci-update on purpose."
        )
    unused = _str_option(config, "convviz_unused") or "warn"
    if unused not in UNUSED_MODES:
        raise pytest.UsageError(
            f"convviz_unused must be one of {UNUSED_MODES}. Received: {unused!r}"
        )
    workerinput = getattr(config, "workerinput", None)
    state = SessionState(
        config=config,
        golden_dir=_path_option(config, "convviz_golden_dir", config.rootpath / "golden")
        or config.rootpath / "golden",
        results_dir=_path_option(config, "convviz_results_dir", None),
        update=update,
        override=override,
        reference=_str_option(config, "convviz_golden_backend") or "tensorflow",
        unused_mode=unused,
        worker=str(workerinput["workerid"]) if workerinput else "main",
    )
    config.stash[SESSION] = state
    if state.results_dir is not None and workerinput is None:
        from .report import clear_parts

        clear_parts(state.results_dir)  # parts of an earlier run must not be merged
    config.pluginmanager.register(SessionHooks(state), "convviz_check_session")


def _nodeid_parts(nodeid: str, name: str) -> tuple[str, str]:
    """(test file relative to rootdir, test name with classes ``Cls.test[params]``)."""
    prefix = nodeid[: len(nodeid) - len(name)] if nodeid.endswith(name) else nodeid
    parts = [p for p in prefix.split("::") if p]
    test_file = parts[0] if parts else nodeid.split("::")[0]
    return test_file, ".".join([*parts[1:], name])


def _test_dir(nodeid: str, name: str) -> str:
    from . import golden

    test_file, test_name = _nodeid_parts(nodeid, name)
    return golden.relative_path(test_file, test_name, "_").parent.as_posix()


def _shell_command(
    state: SessionState,
    nodeid: str,
    *,
    mode: str,
    backend: str | None = None,
    override: bool = False,
) -> str:
    """The exact command line that rewrites a check of ``nodeid``."""
    config = state.config
    parts = []
    if Path(config.invocation_params.dir).resolve() != Path(config.rootpath).resolve():
        parts.append(f"cd {shlex.quote(str(config.rootpath))} &&")
    if backend is not None:
        parts.append(f"KERAS_BACKEND={shlex.quote(backend)}")
    parts += ["pytest", f"--convviz-update={mode}"]
    if override:
        parts.append("--convviz-update-override")
    if config.getoption("--convviz-golden-dir", default=None):
        parts.append(f"--convviz-golden-dir={shlex.quote(str(state.golden_dir))}")
    parts.append(shlex.quote(nodeid))
    return " ".join(parts)


def _cpu_facts() -> dict[str, Any]:
    """Instruction set and thread count, for sidecars (float results may depend on
    both: vector width changes summation order)."""
    isa = platform.machine()
    try:
        flags = set()
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    break
        for feature in ("avx512f", "avx2", "avx", "sse4_2", "asimd", "neon"):
            if feature in flags:
                isa = f"{platform.machine()}/{feature}"
                break
    except OSError:
        pass
    threads = int(os.environ.get("CONVVIZ_THREADS", "0") or 0) or (os.cpu_count() or 1)
    return {"instruction_set": isa, "threads": threads}


def _as_tolerance(value: Any, source: str) -> Tolerance | None:
    if value is None:
        return None
    if isinstance(value, Tolerance):
        return value
    if isinstance(value, dict):
        return Tolerance.from_dict(value)
    raise InputError(
        f"{source} must be a Tolerance or a dict of its fields. Received: {value!r} "
        f"(type {type(value).__name__})"
    )


class SessionHooks:
    """Session-level hooks (registered at configure; state lives in ``config.stash``)."""

    def __init__(self, state: SessionState) -> None:
        self.state = state

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.state.deselected.update(_test_dir(i.nodeid, i.name) for i in items)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.state.collected_files.update(i.nodeid.split("::")[0] for i in session.items)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        name = report.nodeid.rsplit("::", 1)[-1]
        if report.skipped:
            self.state.skipped.add(_test_dir(report.nodeid, name))
        elif report.failed:
            self.state.failed = True

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        data = getattr(node, "workeroutput", {}).get("convviz_check")
        if data:
            self.state.merge(data)
        if error:
            self.state.failed = True

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        state = self.state
        if state.results_dir is not None:
            from .report import write_part

            write_part(state.results_dir, state.worker, {"entries": state.entries})
        if state.is_worker:
            state.config.workeroutput["convviz_check"] = state.export()  # type: ignore[attr-defined]
            return
        _judge_unused(state, session, exitstatus)
        if state.unused and state.unused_mode == "fail":
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if state.results_dir is not None:
            from .report import merge_parts, write_report

            state.report_paths = write_report(
                state.results_dir,
                merge_parts(state.results_dir),
                {
                    "backend": state.backend,
                    "golden_backend": state.reference,
                    "golden_dir": str(state.golden_dir),
                    "written": sorted(state.written),
                    "unused": {
                        "action": state.unused_mode,
                        "files": state.unused,
                        "note": state.unused_note,
                        "deleted": state.deleted,
                    },
                },
            )

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        state = self.state
        if state.is_worker:
            return
        tr = terminalreporter
        if state.written:
            tr.write_sep("-", f"convviz: wrote {len(state.written)} golden file(s)")
            for path in sorted(state.written):
                tr.write_line(f"  {path}")
        if state.unused:
            verb = {"warn": "unused", "fail": "unused (failing the run)", "delete": "deleted"}
            tr.write_sep("-", f"convviz: {len(state.unused)} golden(s) {verb[state.unused_mode]}")
            for rel in state.unused:
                tr.write_line(f"  {rel}")
            if state.unused_mode == "warn":
                tr.write_line(
                    "  no test in this complete run used them; delete them with "
                    "--convviz-unused=delete, or fail on them with --convviz-unused=fail"
                )
        elif state.unused_note and state.config.option.verbose > 0:
            tr.write_line(f"convviz: unused goldens not judged: {state.unused_note}")
        if state.report_paths:
            tr.write_line(f"convviz: report {state.report_paths['html']}")


def _complete_args(config: pytest.Config) -> bool:
    """True when the run collected what a bare ``pytest`` collects (no explicit paths)."""
    source = getattr(config, "args_source", None)
    if source is None:
        return not config.args
    if source == pytest.Config.ArgsSource.ARGS:
        return False
    return True


def _judge_unused(state: SessionState, session: pytest.Session, exitstatus: int) -> None:
    """Find goldens of the running backend's scope that no test touched.

    Judged only for a run that passed and ran its selection completely: a failed test
    may have stopped before its checks. Goldens of skipped or deselected tests do not
    count; with explicit paths only the collected files' goldens are judged.
    """
    from . import golden

    config = state.config
    if config.option.collectonly:
        state.unused_note = "collect-only run"
        return
    if state.failed or exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        state.unused_note = "the run failed or was interrupted"
        return
    if session.shouldstop or session.shouldfail:
        state.unused_note = "the run stopped early"
        return
    stored = list(golden.iter_checks(state.golden_dir))
    if not stored:
        return
    backend = state.current_backend()
    owned_prefix = f"{golden.OVERRIDE_DIR}/{backend}/"
    complete = _complete_args(config)
    excluded = state.deselected | state.skipped
    unused = []
    for rel in stored:
        text = rel.as_posix()
        scope = golden.scope_of(rel)
        if scope is None and backend != state.reference:
            continue  # neutral goldens belong to the reference backend
        if scope is not None and scope != backend:
            continue
        neutral = text[len(owned_prefix) :] if scope is not None else text
        if neutral.rsplit("/", 1)[0] in excluded:
            continue
        if not complete and not any(
            neutral.startswith(golden.relative_path(f, "_", "_").parent.parent.as_posix() + "/")
            for f in state.collected_files
        ):
            continue
        if text not in state.touched:
            unused.append(text)
    state.unused = unused
    if unused and state.unused_mode == "delete":
        for text in unused:
            base = golden.inside(state.golden_dir, text)
            state.deleted += [str(p) for p in golden.remove(base, state.golden_dir)]


class ConvvizFixture:
    """The object the ``convviz`` fixture returns."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request
        self.node = request.node
        self.config = request.config

    # -- compute shortcuts bound to the running backend -------------------------------
    def load_model(self, source: Any, **kwargs: Any) -> Any:
        from .models import load_model

        return load_model(source, **kwargs)

    def activations(self, *args: Any, **kwargs: Any) -> Any:
        from .explain.activations import activations

        return activations(*args, **kwargs)

    def filter_patterns(self, *args: Any, **kwargs: Any) -> Any:
        from .explain.filters import filter_patterns

        return filter_patterns(*args, **kwargs)

    def gradcam(self, *args: Any, **kwargs: Any) -> Any:
        from .explain.gradcam import gradcam

        return gradcam(*args, **kwargs)

    @property
    def backend(self) -> str:
        from .backends import current_backend

        return current_backend()

    # -- golden checks ----------------------------------------------------------------
    def check(
        self,
        name: str,
        value: Any,
        kind: str | None = None,
        tolerance: Any = None,
        *,
        dtype: str | None = None,
        layers: Any = None,
        model: Any = None,
    ) -> None:
        """Compare ``value`` with its golden file (or write it in an update run).

        Args:
            name: the check's name, unique within the test (it names the file).
            value: an array, a dict of arrays (kind ``"activation"``) or a ``GradCAM``
                (kind ``"heatmap"``).
            kind: ``"activation"``, ``"heatmap"`` or ``"pattern"``; inferred for dicts,
                GradCAM and 2-D/3-D arrays, required for a bare 4-D array.
            tolerance: a ``Tolerance`` or dict of its fields; overrides the marker
                ``convviz(tolerance=...)``, which overrides the default table.
            dtype: storage dtype of new goldens: ``"float32"`` (default) or ``"float16"``.
            layers: for a dict, the layers to store and compare (keeps goldens small).
            model: the model that produced ``value``; its weight fingerprint goes into
                the sidecar, and a changed fingerprint leads the failure message.

        Example:
            >>> def test_cam(convviz):  # doctest: +SKIP
            ...     cam = convviz.gradcam(model, images)
            ...     convviz.check("cam", cam)
        """
        __tracebackhide__ = True
        from . import golden

        state = session_state(self.config)
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"convviz.check needs a non-empty name. Received: name={name!r}")
        safe = golden.sanitize_part(name)
        if safe in self._check_names:
            raise InputError(
                f"Check names must be unique within a test. Received: name={name!r} twice"
                + (f" (it is stored as {safe!r})" if safe != name else "")
                + f" in {self.node.nodeid}."
            )
        self._check_names.add(safe)
        obtained = golden.from_value(value, kind, dtype=dtype, layers=layers)
        backend = state.current_backend()
        test_file, test_name = _nodeid_parts(self.node.nodeid, self.node.name)
        rel = golden.relative_path(test_file, test_name, name)
        tol = self._tolerance(tolerance)
        fingerprint = self._fingerprint(model)
        meta = self._meta(state, obtained.kind, tol, fingerprint)
        found = golden.find(state.golden_dir, rel, backend)
        same = backend == state.reference
        if found is not None:
            base, is_override = found
            target = base
        else:
            base, is_override = None, False
            target = golden.inside(state.golden_dir, rel if same else golden.scoped(rel, backend))
        target_rel = target.relative_to(state.golden_dir).as_posix()
        entry: dict[str, Any] = {
            "nodeid": self.node.nodeid,
            "check": name,
            "kind": obtained.kind,
            "backend": backend,
            "golden": target_rel,
            "rel": rel.as_posix(),
        }
        record = functools.partial(self._record, state, entry, meta=meta)
        expected = None
        if base is not None:
            state.touched.add(base.relative_to(state.golden_dir).as_posix())
            try:
                expected = golden.load(base, kind=obtained.kind)
            except GoldenError as e:
                problem = str(e)
            else:
                problem = ""
            if problem:  # failed outside the except block: no chained traceback
                record("error", problem, obtained, None)
                pytest.fail(f"convviz check {name!r}: the golden cannot be used.\n{problem}")
        else:
            state.touched.add(target_rel)
        # A golden written by this backend (the reference, or this backend's override)
        # is held to same-backend bounds; the reference's golden under another backend
        # to cross-backend bounds.
        cross = not (same or is_override)
        comparison, plain = None, []
        if expected is not None:
            old_fp = expected.sidecar.get("model_fingerprint")
            if fingerprint and old_fp and fingerprint != old_fp:
                plain.append(
                    f"model fingerprint changed: golden {old_fp[:12]}, now {fingerprint[:12]} "
                    "(the model's weights are not those the golden was written with)"
                )
            comparison, mismatch = self._compare(expected, obtained, tol, cross)
            if mismatch:
                plain.append(mismatch)
        passed = comparison is not None and comparison.passed
        want_write = (
            (expected is None and state.update is not None)
            or (not passed and expected is not None and state.update in ("failed", "all"))
            or (
                passed
                and state.update == "all"
                and obtained.content_sha256() != expected.content_sha256()
            )
        )
        if want_write:
            if not (same or state.override):
                msg = self._refusal(state, name, rel, backend)
                record("error", msg, obtained, expected, comparison)
                pytest.fail(msg)
            write_base = (
                target
                if (same or is_override)
                else golden.inside(state.golden_dir, golden.scoped(rel, backend))
            )
            entry["golden"] = write_base.relative_to(state.golden_dir).as_posix()
            golden.save(write_base, obtained, meta)
            state.touched.add(entry["golden"])
            state.written.append(entry["golden"] + ".npz")
            record("written", "", obtained, expected, comparison)
            return
        if expected is None:
            msg = self._missing_message(state, name, target, backend)
            record("missing", msg, obtained, None)
            pytest.fail(msg)
        if passed:
            record("passed", "", obtained, expected, comparison)
            return
        images = record("failed", "", obtained, expected, comparison)
        msg = self._failure_message(state, name, base, expected, comparison, plain, cross, images)
        entry["message"] = msg
        pytest.fail(msg)

    # -- check helpers ------------------------------------------------------------------
    @property
    def _check_names(self) -> set[str]:
        names = self.__dict__.get("_names")
        if names is None:
            names = self.__dict__["_names"] = set()
        return names

    def _tolerance(self, tolerance: Any) -> Tolerance | None:
        """check(tolerance=) over the marker ``convviz(tolerance=...)`` over the table."""
        marker = self.node.get_closest_marker("convviz")
        from_marker = _as_tolerance(
            marker.kwargs.get("tolerance") if marker else None, "convviz(tolerance=...)"
        )
        from_arg = _as_tolerance(tolerance, "tolerance")
        if from_marker is None and from_arg is None:
            return None
        return (from_marker or Tolerance()).merged(from_arg)

    def _fingerprint(self, model: Any) -> str | None:
        if model is None:
            return None
        if isinstance(model, str):
            return model
        cache = self.__dict__.setdefault("_fingerprints", {})
        if id(model) not in cache:
            from .models import model_fingerprint

            cache[id(model)] = (model, model_fingerprint(model))
        return cache[id(model)][1]

    @staticmethod
    def _compare(expected: Any, obtained: Any, tol: Any, cross: bool) -> tuple[Any, str]:
        """(Comparison or None, a plain description when the two cannot be compared)."""
        from .compare import compare

        e_value, o_value = expected.value(), obtained.value()
        if expected.layout == "activations" and isinstance(o_value, dict):
            missing = [k for k in e_value if k not in o_value]
            added = [k for k in o_value if k not in e_value]
            if missing or added:
                return None, (
                    "layers changed: "
                    + (f"missing {missing}" if missing else "")
                    + ("; " if missing and added else "")
                    + (f"new {added}" if added else "")
                )
        if expected.layout != obtained.layout:
            return None, (
                f"value type changed: the golden holds {expected.layout!r}, the check got "
                f"{obtained.layout!r}"
            )
        try:
            return compare(e_value, o_value, obtained.kind, tol, cross_backend=cross), ""
        except ComparisonError as e:
            shapes_e = {k: tuple(v.shape) for k, v in expected.arrays.items()}
            shapes_o = {k: tuple(v.shape) for k, v in obtained.arrays.items()}
            if shapes_e != shapes_o:
                return None, f"shape changed: golden {shapes_e}, obtained {shapes_o}"
            return None, f"cannot be compared with its golden: {e}"

    def _meta(self, state: SessionState, kind: str, tol: Any, fingerprint: str | None) -> dict:
        from .tolerances import default_tolerance

        try:
            from .backends import framework_versions

            versions = framework_versions()
        except Exception as e:  # a sidecar fact must not block writing the golden
            versions = {"error": f"{type(e).__name__}: {e}"}
        return {
            "backend": state.current_backend(),
            "versions": versions,
            "cpu": _cpu_facts(),
            "model_fingerprint": fingerprint,
            "tolerance": default_tolerance(kind).merged(tol).to_dict(),
        }

    def _record(
        self,
        state: SessionState,
        entry: dict[str, Any],
        status: str,
        message: str,
        obtained: Any,
        expected: Any,
        comparison: Any = None,
        *,
        meta: dict[str, Any],
    ) -> dict[str, str]:
        """Add the check to the report; with a results dir, write its obtained arrays
        and expected / obtained / diff images. Returns role -> image path."""
        entry.update(status=status, message=message)
        if comparison is not None:
            entry["metrics"] = {
                k: {
                    "value": m.value,
                    "bound": m.bound,
                    "ok": m.ok,
                    "direction": m.direction,
                    "note": m.note,
                }
                for k, m in comparison.metrics.items()
            }
            entry["details"] = {
                k: v for k, v in comparison.details.items() if k not in ("per_item",)
            }
        images: dict[str, str] = {}
        if state.results_dir is not None:
            from . import golden
            from .report import write_check_images

            obtained_base = golden.inside(state.results_dir, "obtained/" + entry["golden"])
            golden.save(obtained_base, obtained, meta, warn_large=False)
            entry["obtained"] = obtained_base.relative_to(state.results_dir).as_posix()
            layer = comparison.details.get("worst_item") if comparison is not None else None
            images = write_check_images(
                golden.inside(state.results_dir, "images/" + entry["golden"]),
                obtained,
                expected,
                layer=layer if obtained.layout == "activations" else None,
            )
            entry["images"] = images
        state.entries.append(entry)
        return images

    def _refusal(self, state: SessionState, name: str, rel: Any, backend: str) -> str:
        from . import golden

        return (
            f"convviz check {name!r}: refusing to write the golden under backend {backend!r}.\n"
            f"Goldens are owned by the reference backend {state.reference!r} (ini "
            "convviz_golden_backend); other backends only compare against them with "
            "cross-backend bounds.\n"
            "Write it under the reference backend:\n"
            f"  {_shell_command(state, self.node.nodeid, mode=state.update or 'failed', backend=state.reference)}\n"
            f"or write an explicit {backend}-only override at "
            f"{golden.scoped(rel, backend).as_posix()}.npz:\n"
            f"  {_shell_command(state, self.node.nodeid, mode=state.update or 'failed', override=True)}"
        )

    def _missing_message(self, state: SessionState, name: str, target: Path, backend: str) -> str:
        same = backend == state.reference
        lines = [
            f"convviz check {name!r}: golden file missing: {target}.npz",
            "Write it with:",
            "  "
            + _shell_command(
                state, self.node.nodeid, mode="missing", backend=None if same else state.reference
            ),
        ]
        if not same:
            lines += [
                f"(goldens are written by the reference backend {state.reference!r}; this run "
                f"uses {backend!r}. A {backend}-only override: "
                + _shell_command(state, self.node.nodeid, mode="missing", override=True)
                + ")"
            ]
        return "\n".join(lines)

    def _failure_message(
        self,
        state: SessionState,
        name: str,
        base: Path,
        expected: Any,
        comparison: Any,
        plain: list[str],
        cross: bool,
        images: dict[str, str],
    ) -> str:
        kind = expected.kind
        writer = expected.sidecar.get("backend") or "?"
        lines = [f"convviz check {name!r} ({kind}) does not match its golden."]
        lines += plain
        if comparison is not None:
            lines += comparison.text.splitlines()
        lines.append(
            f"golden: {base}.npz (written by {writer}; compared with "
            f"{'cross-backend' if cross else 'same-backend'} bounds)"
        )
        if images:
            lines.append("images: " + ", ".join(f"{role} {path}" for role, path in images.items()))
        else:
            lines.append("images: pass --convviz-results-dir=DIR for expected/obtained/diff PNGs")
        if not cross:
            lines.append(
                "accept the new result: " + _shell_command(state, self.node.nodeid, mode="failed")
            )
        else:
            # The reference backend's golden: rewriting it here is refused; this backend
            # can only keep its own override (or the test can loosen its tolerance).
            lines.append(
                f"accept this result as a {state.current_backend()}-only override: "
                + _shell_command(state, self.node.nodeid, mode="failed", override=True)
            )
        return "\n".join(lines)

    # -- assertions (localization and agreement issues) ---------------------------------
    @property
    def results_dir(self) -> str | None:
        """``--convviz-results-dir`` (CLI > ini), resolved, or None."""
        state = self.config.stash.get(SESSION, None)
        if state is None:
            return option(self.config, "convviz_results_dir") or None
        return str(state.results_dir) if state.results_dir is not None else None

    def assert_localized(self, cam_or_heatmap: Any, target: Any, **kwargs: Any) -> None:
        """Assert a heatmap lands on ``target`` (Box or mask); see
        :func:`convviz_check.localization.assert_localized`. Owned by the localization
        issue (only this method)."""
        __tracebackhide__ = True
        from .localization import assert_localized

        # One overlay file per call: <results dir>/<test file>/<test name>/localized-<k>.png
        # (nodeid parts are sanitized by localization; "/" only makes subfolders).
        count = getattr(self, "_localized_calls", 0) + 1
        self._localized_calls = count
        kwargs.setdefault("results_dir", self.results_dir)
        kwargs.setdefault("name", f"{self.node.nodeid.replace('::', '/')}/localized-{count}")
        assert_localized(cam_or_heatmap, target, **kwargs)

    def assert_backends_agree(self, model_source: Any, images: Any, **kwargs: Any) -> Any:
        """Assert the backends agree on ``model_source`` for ``images``; see
        :func:`convviz_check.agreement.agreement` (keyword arguments are passed on).
        Owned by the agreement issue (only this method).

        Backends: ``backends=`` argument > marker ``convviz(backends=...)`` >
        ``--convviz-backends`` > ini ``convviz_backends``. Tolerance: the argument's
        fields over the marker's. A missing backend skips with the reason, or fails with
        ``--convviz-require-backends`` / ``CONVVIZ_REQUIRE_BACKENDS=1`` (the crossbackend
        tox env). With ``--convviz-export DIR`` nothing is compared here: the running
        backend's artifacts are computed in-process and written to ``DIR`` for
        ``convviz-check agree --exported DIR``. The workers are one session-scoped
        :class:`~convviz_check.agreement.WorkerPool` in ``config.stash``, closed at
        session end.

        Returns:
            The :class:`~convviz_check.agreement.AgreementReport` (None when exporting).
        """
        __tracebackhide__ = True
        import importlib
        import os
        from pathlib import Path

        from .errors import InputError
        from .types import Tolerance

        # The module, not the package attribute (cc.agreement is the function).
        ag = importlib.import_module("convviz_check.agreement")
        marker = self.node.get_closest_marker("convviz")
        marked = marker.kwargs if marker else {}
        backends = ag.parse_backends(
            kwargs.pop("backends", None)
            or marked.get("backends")
            or option(self.config, "convviz_backends")
            or None
        )
        tolerances = []
        for value in (marked.get("tolerance"), kwargs.pop("tolerance", None)):
            if isinstance(value, dict):
                value = Tolerance.from_dict(value)
            if value is not None and not isinstance(value, Tolerance):
                raise InputError(
                    "tolerance must be a Tolerance or a dict of its fields. Received: "
                    f"{value!r} (type {type(value).__name__})."
                )
            tolerances.append(value)
        tolerance = None
        if any(t is not None for t in tolerances):
            tolerance = (tolerances[0] or Tolerance()).merged(tolerances[1])
        export_dir = option(self.config, "convviz_export")
        if export_dir:
            from .backends import current_backend, framework_versions
            from .models import load_model, model_fingerprint
            from .worker import compute_artifacts

            what = tuple(kwargs.pop("what", ag.ARTIFACTS))
            safe_mode = kwargs.pop("safe_mode", True)
            spec = ag.model_spec(model_source, safe_mode, kwargs.pop("custom_objects", None))
            for ignored in ("pool", "timeout"):
                kwargs.pop(ignored, None)
            model = load_model(
                spec["source"], safe_mode=safe_mode, custom_objects=spec["custom_objects"] or None
            )
            artifacts = compute_artifacts(
                model, ag.as_images(images), what, ag.artifact_params(**kwargs)
            )
            root = Path(self.config.invocation_params.dir) / str(export_dir)
            ag.export_artifacts(
                root,
                current_backend(),
                self.node.nodeid,
                artifacts,
                info={
                    "model": str(model_source),
                    "fingerprint": model_fingerprint(model),
                    "versions": framework_versions(),
                },
            )
            return None
        require = bool(option(self.config, "convviz_require_backends")) or (
            os.environ.get("CONVVIZ_REQUIRE_BACKENDS", "") not in ("", "0")
        )
        try:
            ag.require_backends(backends)
        except ag.MissingBackendError as e:
            if require:
                pytest.fail(
                    f"{e} (required: CONVVIZ_REQUIRE_BACKENDS / --convviz-require-backends)",
                    pytrace=False,
                )
            pytest.skip(str(e))
        pool = kwargs.pop("pool", None) or ag.session_pool(self.config)
        report = ag.agreement(
            model_source, images, backends=backends, tolerance=tolerance, pool=pool, **kwargs
        )
        if not report.passed:
            raise AssertionError(str(report))
        return report

    def finish(self) -> None:
        """Called at fixture teardown."""
