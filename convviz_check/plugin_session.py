"""Session state behind the pytest plugin: options read once, the stash, the
pytest-xdist merge, the report at session end and the judging of unused goldens.

Per-session state lives in ``config.stash``; per-test state on the fixture object
(:mod:`convviz_check.plugin_fixture`). Golden checks themselves run in
:mod:`convviz_check.checks`, which knows nothing of pytest."""

from __future__ import annotations

import os
import platform
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from . import golden, storage, tolerances
from .calibration import Calibration, bounds_facts
from .checks import UPDATE_MODES, Settings
from .errors import ConvvizError
from .plugin_options import (
    UNUSED_MODES,
    bool_option,
    calibration_options,
    check_backend_options,
    check_markers,
    path_option,
    str_option,
)
from .report.checks import clear_parts, merge_parts, write_part, write_report
from .report.outcomes import summary_line
from .types import DEFAULT_REFERENCE_BACKEND, KINDS, Tolerance


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
    profile: str = "exact"
    # the golden dir's calibrated retrain bounds (None: built-in), read at start-up
    calibration: Calibration | None = None
    # --convviz-measure: record every check, fail none (what `convviz-check calibrate` runs)
    measuring: bool = False
    backend: str | None = None
    touched: set[str] = field(default_factory=set)
    written: list[str] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    # (judgment, status) of the judgments xdist workers recorded
    merged_verdicts: list[tuple[str, str]] = field(default_factory=list)
    deselected: set[str] = field(default_factory=set)
    skipped: set[str] = field(default_factory=set)
    collected_files: set[str] = field(default_factory=set)
    collected_tests: set[str] = field(default_factory=set)
    failed: bool = False
    # pytest's test loop ran (not --fixtures, --fixtures-per-test or another command
    # that collects and stops): only such a run may find goldens unused.
    ran_tests: bool = False
    unused: list[str] = field(default_factory=list)
    unused_note: str = ""
    deleted: list[str] = field(default_factory=list)
    report_paths: dict[str, Path] = field(default_factory=dict)

    def project_tolerance(self, kind: str) -> Tolerance | None:
        """The ``--convviz-tolerance-<kind>`` flag, else the ini key of the same name."""
        text = str_option(self.config, f"convviz_tolerance_{kind}")
        if text is None:
            return None
        return tolerances.parse_fields(text, f"convviz_tolerance_{kind}", kind)

    @property
    def settings(self) -> Settings:
        """What every golden check of this run shares."""
        return Settings(
            golden_dir=self.golden_dir,
            reference=self.reference,
            update=self.update,
            allow_override=self.override,
            results_dir=self.results_dir,
            calibration=self.calibration,
        )

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
            "collected_tests": sorted(self.collected_tests),
            "failed": self.failed,
            "verdicts": self.verdicts(),
        }

    def verdicts(self) -> list[tuple[str, str]]:
        """``(judgment, status)`` of every judgment this process recorded (and, on the
        controller, those its xdist workers sent)."""
        return [(str(e.get("judgment", "golden")), str(e.get("status"))) for e in self.entries] + [
            (str(j), str(st)) for j, st in self.merged_verdicts
        ]

    def merge(self, data: dict[str, Any]) -> None:
        self.backend = self.backend or data.get("backend")
        self.touched.update(data.get("touched", ()))
        self.written.extend(data.get("written", ()))
        self.deselected.update(data.get("deselected", ()))
        self.skipped.update(data.get("skipped", ()))
        self.collected_files.update(data.get("collected_files", ()))
        self.collected_tests.update(data.get("collected_tests", ()))
        self.failed = self.failed or bool(data.get("failed"))
        self.merged_verdicts.extend(tuple(v) for v in data.get("verdicts", ()))


SESSION = pytest.StashKey[SessionState]()
# Per test: the messages of golden checks its gate profile did not judge.
NOT_JUDGED = pytest.StashKey[list[str]]()


def session_state(config: pytest.Config) -> SessionState:
    return config.stash[SESSION]


def _check_class_names_file(config: pytest.Config) -> None:
    """The ini key ``convviz_class_names`` names a file (relative to the ini file): read
    it at start-up, so a missing or malformed file stops the run before any test instead
    of failing the first check that prints a class."""
    from .class_names import read_class_names

    name = str_option(config, "convviz_class_names")
    if name is None:
        return
    base = config.inipath.parent if config.inipath else config.rootpath
    try:
        read_class_names(base / name)
    except ConvvizError as e:
        raise pytest.UsageError(f"convviz_class_names (ini): {e}") from None


def configure(config: pytest.Config) -> None:
    """Read the options once, refuse contradictory ones, register the session hooks."""
    check_backend_options(config)
    update = str_option(config, "convviz_update")
    if update is not None and update not in UPDATE_MODES:
        raise pytest.UsageError(
            f"convviz_update must be one of {UPDATE_MODES}. Received: {update!r}"
        )
    override = bool_option(config, "convviz_update_override")
    if override and update is None:
        raise pytest.UsageError(
            "--convviz-update-override says where updates go (golden/_backend/<backend>/); it "
            "needs an update mode. Received: no --convviz-update. Expected e.g. "
            "`pytest --convviz-update=failed --convviz-update-override`."
        )
    if update is not None and in_ci() and not bool_option(config, "convviz_allow_ci_update"):
        raise pytest.UsageError(
            f"--convviz-update={update} is refused because the CI environment variable is set "
            f"(CI={os.environ['CI']!r}): goldens must not be rewritten silently in CI. Review "
            "the failures, download the results dir artifact and accept it with `convviz-check "
            "golden accept <results-dir>`, or pass --convviz-allow-ci-update on purpose."
        )
    profile = str_option(config, "convviz_profile") or tolerances.DEFAULT_PROFILE
    try:  # the flag's choices are checked by argparse; the ini key here
        tolerances.check_profile(profile, "convviz_profile (ini) / --convviz-profile")
    except ConvvizError as e:
        raise pytest.UsageError(str(e)) from None
    unused = str_option(config, "convviz_unused") or "warn"
    if unused not in UNUSED_MODES:
        raise pytest.UsageError(
            f"convviz_unused must be one of {UNUSED_MODES}. Received: {unused!r}"
        )
    prestart = str_option(config, "convviz_prestart")
    if prestart is not None and prestart not in ("auto", "no"):
        raise pytest.UsageError(f"convviz_prestart must be 'auto' or 'no'. Received: {prestart!r}")
    for kind in KINDS:  # a malformed project tolerance is a usage error, found at once
        text = str_option(config, f"convviz_tolerance_{kind}")
        if text is not None:
            try:
                tolerances.parse_fields(text, f"convviz_tolerance_{kind}", kind)
            except ConvvizError as e:
                raise pytest.UsageError(str(e)) from None
    _check_class_names_file(config)
    workerinput = getattr(config, "workerinput", None)
    state = SessionState(
        config=config,
        golden_dir=path_option(config, "convviz_golden_dir", config.rootpath / "golden")
        or config.rootpath / "golden",
        results_dir=path_option(config, "convviz_results_dir", None),
        update=update,
        override=override,
        reference=str_option(config, "convviz_golden_backend") or DEFAULT_REFERENCE_BACKEND,
        unused_mode=unused,
        worker=str(workerinput["workerid"]) if workerinput else "main",
        profile=profile,
    )
    for key, path in (
        ("convviz_golden_dir", state.golden_dir),
        ("convviz_results_dir", state.results_dir),
    ):
        blocker = None if path is None else storage.file_in_the_way(path / "_")
        if blocker is not None:  # found now, not as a raw OSError at the first write
            raise pytest.UsageError(
                f"--{key.replace('_', '-')} / ini {key}: {blocker} is a file, not a "
                f"directory. Received: {path}. Expected a directory (created when missing): "
                "move the file away or choose another directory."
            )
    state.calibration, state.measuring = calibration_options(config, state.golden_dir, update)
    config.stash[SESSION] = state
    if state.results_dir is not None and workerinput is None:
        clear_parts(state.results_dir)  # parts of an earlier run must not be merged
    config.pluginmanager.register(SessionHooks(state), "convviz_check_session")


def nodeid_parts(nodeid: str, name: str) -> tuple[str, str]:
    """(test file relative to rootdir, test name with classes ``Cls.test[params]``)."""
    prefix = nodeid[: len(nodeid) - len(name)] if nodeid.endswith(name) else nodeid
    parts = [p for p in prefix.split("::") if p]
    test_file = parts[0] if parts else nodeid.split("::")[0]
    return test_file, ".".join([*parts[1:], name])


def _test_dir(nodeid: str, name: str) -> str:
    test_file, test_name = nodeid_parts(nodeid, name)
    return golden.relative_path(test_file, test_name, "_").parent.as_posix()


@dataclass(frozen=True)
class PytestCommands:
    """The pytest command lines that rewrite the checks of one test (for messages)."""

    state: SessionState
    nodeid: str

    def update(self, mode: str, *, backend: str | None = None, override: bool = False) -> str:
        return shell_command(self.state, self.nodeid, mode=mode, backend=backend, override=override)

    def ci_route(self) -> str | None:
        if not in_ci() or bool_option(self.state.config, "convviz_allow_ci_update"):
            return None
        results = self.state.results_dir
        where = (
            f"the results dir {results}"
            if results is not None
            else "a results dir (run pytest with --convviz-results-dir=DIR)"
        )
        return (
            f"CI is set, so --convviz-update is refused here. Download {where} (e.g. as a "
            "CI artifact), review report.html, then accept with `convviz-check golden "
            "accept DIR` (DIR: where you put it; run from the project root) and commit the "
            "goldens."
        )


def shell_command(
    state: SessionState,
    nodeid: str,
    *,
    mode: str,
    backend: str | None = None,
    override: bool = False,
) -> str:
    """The exact command line that rewrites a check of ``nodeid``.

    It runs from the rootdir (node ids are relative to it) under the backend that must
    write (``backend``, else the running one), and carries the command-line options that
    decide what the test computes and how it is judged, so that it can be pasted as is.
    """
    config = state.config
    parts = []
    if Path(config.invocation_params.dir).resolve() != Path(config.rootpath).resolve():
        parts.append(f"cd {shlex.quote(str(config.rootpath))} &&")
    # The running backend is named unless it is Keras' own default: a session started
    # with `KERAS_BACKEND=torch pytest` would otherwise be rerun under TensorFlow.
    writer = backend or state.current_backend()
    if backend is not None or override or writer != "tensorflow":
        parts.append(f"KERAS_BACKEND={shlex.quote(writer)}")
    parts += ["pytest", f"--convviz-update={mode}"]
    if override:
        parts.append("--convviz-update-override")
    if config.getoption("--convviz-golden-dir", default=None):
        parts.append(f"--convviz-golden-dir={shlex.quote(str(state.golden_dir))}")
    if config.getoption("--convviz-profile", default=None):  # so the rewrite records it
        parts.append(f"--convviz-profile={state.profile}")
    for name in CARRIED_OPTIONS:
        value = config.getoption(name, default=None)
        if value:
            parts.append(f"{name}={shlex.quote(_carried_value(config, name, str(value)))}")
    parts.append(shlex.quote(nodeid))
    return " ".join(parts)


# Command-line options an update command repeats (ini keys are read again by the rerun).
CARRIED_OPTIONS = (
    "--convviz-golden-backend",
    "--convviz-model",
    "--convviz-tolerance-activation",
    "--convviz-tolerance-heatmap",
    "--convviz-tolerance-pattern",
)


def _carried_value(config: pytest.Config, name: str, value: str) -> str:
    """``value`` as the rerun needs it: a model path is made absolute (it was relative to
    the invocation directory, and the rerun may ``cd`` to the rootdir)."""
    if name == "--convviz-model":
        path = Path(config.invocation_params.dir) / value
        if path.exists():
            return str(path.resolve())
    return value


def cpu_facts() -> dict[str, Any]:
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


@dataclass
class _UnusedGolden:
    """One entry of pytest's terminal stats (other plugins read their ``__dict__``)."""

    rel: str
    count_towards_summary: bool = True


class SessionHooks:
    """Session-level hooks (registered at configure; state lives in ``config.stash``)."""

    def __init__(self, state: SessionState) -> None:
        self.state = state

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.state.deselected.update(_test_dir(i.nodeid, i.name) for i in items)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        check_markers(session.items)
        self.state.collected_files.update(i.nodeid.split("::")[0] for i in session.items)
        self.state.collected_tests.update(_test_dir(i.nodeid, i.name) for i in session.items)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Any:
        # Entered by a run that executes its selection; `pytest --fixtures` and
        # `--fixtures-per-test` collect, print and finish the session without it.
        self.state.ran_tests = True
        return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Any:
        # A test whose golden checks the gate profile does not judge (activations or
        # filter patterns under "retrain") ran them to the end (a later heatmap check
        # is still judged, a failure still fails), but did not verify everything it
        # asks for: it is reported as skipped, with the reasons.
        result = yield
        reasons = item.stash.get(NOT_JUDGED, None)
        if reasons:
            try:  # reported at the test's location (as a skip marker is), not here
                skip = pytest.skip.Exception("\n".join(reasons), _use_item_location=True)
            except TypeError:  # a pytest without that keyword
                skip = pytest.skip.Exception("\n".join(reasons))
            raise skip
        return result

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
            write_part(state.results_dir, state.worker, {"entries": state.entries})
        if state.is_worker:
            state.config.workeroutput["convviz_check"] = state.export()  # type: ignore[attr-defined]
            return
        _judge_unused(state, session, exitstatus)
        if state.unused and state.unused_mode == "fail":
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if state.results_dir is not None:
            state.report_paths = write_report(
                state.results_dir,
                merge_parts(state.results_dir),
                {
                    "backend": state.backend,
                    "golden_backend": state.reference,
                    "golden_dir": str(state.golden_dir),
                    # where the goldens are in the project, for an artifact accepted on
                    # another machine (None: outside the rootdir)
                    "golden_dir_in_project": _inside_root(state.golden_dir, state.config),
                    # the project itself: `golden accept` writes only into it, found
                    # here or, from a CI artifact, relative to where pytest was invoked
                    "rootdir": str(Path(state.config.rootpath).resolve()),
                    "rootdir_from_invocation": Path(
                        os.path.relpath(
                            Path(state.config.rootpath).resolve(),
                            Path(state.config.invocation_params.dir).resolve(),
                        )
                    ).as_posix(),
                    "written": sorted(state.written),
                    "retrain_bounds": bounds_facts(state.calibration, state.measuring),
                    "unused": {
                        "action": state.unused_mode,
                        "files": state.unused,
                        "note": state.unused_note,
                        "judged": not state.unused_note,
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
            elif state.unused_mode == "fail":
                # Counted in pytest's closing line ("3 passed, 1 unused golden"), which
                # otherwise reads as a success while the run exits 1.
                tr.stats.setdefault("unused golden", []).extend(
                    _UnusedGolden(rel) for rel in state.unused
                )
        elif state.unused_note and state.config.option.verbose > 0:
            tr.write_line(f"convviz: unused goldens not judged: {state.unused_note}")
        if state.profile == "retrain" or state.calibration is not None:
            facts = bounds_facts(state.calibration, state.measuring)
            tr.write_line(f"convviz: retrain profile: {facts['text']}")
        line = summary_line(state.verdicts())
        if line:
            tr.write_line(f"convviz: {line}")
        if state.report_paths:
            tr.write_line(f"convviz: report {state.report_paths['html']}")


def in_ci() -> bool:
    """The ``CI`` environment variable is set to something other than an explicit no
    (``""``, ``0``, ``false``, ``no``, ``off``, any case), as CI services set it."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def _inside_root(path: Path, config: pytest.Config) -> str | None:
    try:
        return Path(path).resolve().relative_to(Path(config.rootpath).resolve()).as_posix()
    except ValueError:
        return None


def _complete_args(config: pytest.Config) -> bool:
    """True when the run collected what a bare ``pytest`` collects (no explicit paths)."""
    source = getattr(config, "args_source", None)
    if source is None:
        return not config.args
    if source == pytest.Config.ArgsSource.ARGS:
        return False
    return True


def _selects_tests(config: pytest.Config) -> bool:
    """True when an explicit argument names tests inside a file (``file.py::test``).

    Such a run collects only the named tests, and the file's other tests are neither
    collected nor reported as deselected: their goldens are out of its reach.
    """
    return not _complete_args(config) and any("::" in str(a) for a in config.args)


def _judge_unused(state: SessionState, session: pytest.Session, exitstatus: int) -> None:
    """Find goldens of the running backend's scope that no test touched.

    Judged only for a run that executed its tests (not ``--collect-only``,
    ``--fixtures``, ``--fixtures-per-test``, ``--setup-only`` or ``--setup-plan``),
    passed and ran its selection completely: a failed test may have stopped before its
    checks. Goldens of skipped or deselected tests do not
    count; with explicit paths only the collected files' goldens are judged, and where
    an argument names tests (``file.py::test``) only the collected tests' goldens (a
    golden of a test the run did not select is never unused, so never deleted).
    """
    config = state.config
    if config.option.collectonly:
        state.unused_note = "collect-only run"
        return
    if not state.ran_tests:
        state.unused_note = "no test was run (e.g. --fixtures or --fixtures-per-test)"
        return
    if getattr(config.option, "setuponly", False) or getattr(config.option, "setupplan", False):
        state.unused_note = "--setup-only / --setup-plan run no test bodies"
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
    by_test = _selects_tests(config)
    excluded = state.deselected | state.skipped
    unused = []
    for rel in stored:
        text = rel.as_posix()
        if golden.owner_of(rel, state.reference) != backend:
            continue  # judged only by the backend that owns it
        scope = golden.scope_of(rel)
        neutral = text[len(owned_prefix) :] if scope is not None else text
        test_dir = neutral.rsplit("/", 1)[0]
        if test_dir in excluded:
            continue
        if by_test and test_dir not in state.collected_tests:
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
