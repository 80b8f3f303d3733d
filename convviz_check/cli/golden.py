"""``convviz-check golden list|show|diff|accept|prune``: inspect and maintain golden files.

``accept`` promotes the obtained results of a ``--convviz-results-dir`` (for instance a
CI artifact) into the golden directory through the same check lifecycle as the pytest
plugin (:func:`convviz_check.checks.run_check`): the same ownership rule, verified
files, atomic writes. No Keras and no framework are imported.
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import sys
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from .. import golden, sidecars, storage
from ..artifacts import comparable
from ..checks import CheckRequest, Settings, run_check
from ..errors import GoldenError, StorageError
from ..metrics import compare
from ..types import DEFAULT_REFERENCE_BACKEND

DEFAULT_GOLDEN_DIR = "golden"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``golden`` and its subcommands on the ``convviz-check`` parser."""
    parser = subparsers.add_parser(
        "golden",
        help="list, show, diff, accept and prune golden files",
        description="Inspect and maintain the golden files of convviz checks.",
    )
    parser.set_defaults(func=lambda args: (parser.print_help(), 0)[1])
    sub = parser.add_subparsers(dest="golden_command", metavar="ACTION")

    def with_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--golden-dir",
            default=None,
            help=f"root of the golden files (default: ./{DEFAULT_GOLDEN_DIR}; for accept, "
            "the one the results' run used)",
        )
        return p

    p = with_dir(sub.add_parser("list", help="list stored checks"))
    p.add_argument("--backend", help="only this backend's overrides ('neutral': no overrides)")
    p.set_defaults(func=cmd_list)

    p = with_dir(sub.add_parser("show", help="print a check's sidecar and verify its files"))
    p.add_argument("check", help="path of the check (relative to the golden dir, or a file)")
    p.add_argument(
        "--images", help="also write its picture (heatmaps over their inputs) into this directory"
    )
    p.set_defaults(func=cmd_show)

    p = with_dir(sub.add_parser("diff", help="compare two stored checks (exit 1 if they differ)"))
    p.add_argument("expected", help="a check path (golden dir relative, or a file)")
    p.add_argument("obtained", help="a check path (golden dir relative, or a file)")
    p.add_argument("--cross-backend", action="store_true", help="use cross-backend bounds")
    p.add_argument("--images", help="also write expected/obtained/diff PNGs into this directory")
    p.set_defaults(func=cmd_diff)

    p = with_dir(
        sub.add_parser("accept", help="promote obtained files of a results dir into goldens")
    )
    p.add_argument("results_dir", help="a --convviz-results-dir (with report.json)")
    p.add_argument(
        "--all",
        action="store_true",
        help="also accept checks that passed (default: failed/missing)",
    )
    p.add_argument(
        "--override",
        action="store_true",
        help="accept results of a non-reference backend as its overrides (golden/_backend/...)",
    )
    p.add_argument("-k", dest="match", help="only entries whose nodeid or check contains this")
    p.add_argument("--dry-run", action="store_true", help="print what would be written")
    p.set_defaults(func=cmd_accept)

    p = with_dir(
        sub.add_parser(
            "prune", help="delete goldens reported unused, orphan files and stale temp files"
        )
    )
    p.add_argument("--report", help="report.json of a complete run: delete its unused goldens")
    p.add_argument("--dry-run", action="store_true", help="print what would be deleted")
    p.set_defaults(func=cmd_prune)
    return parser


# --------------------------------------------------------------------------- helpers
def _root(args: argparse.Namespace) -> Path:
    return Path(args.golden_dir or DEFAULT_GOLDEN_DIR)


def _accept_root(args: argparse.Namespace, report: dict[str, Any]) -> Path:
    """The golden directory ``accept`` writes to: ``--golden-dir``; else exactly the one
    the results' run used: its project-relative path (``golden_dir_in_project``) inside
    the run's project as found here (:func:`_project_here`), or its recorded absolute
    path when it lay outside the project (and exists here).

    Raises:
        GoldenError: the run's project is not here (naming both), or its golden
            directory lay outside the project and is not on this machine.
    """
    if args.golden_dir:
        return Path(args.golden_dir)
    project = _project_here(report)
    relative = report.get("golden_dir_in_project")
    if relative:
        return project / str(relative)
    recorded = str(report.get("golden_dir") or "")
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    if not recorded:  # a report of a version that recorded neither: the default
        return project / DEFAULT_GOLDEN_DIR
    raise GoldenError(
        "No golden directory to accept into. Received: the results' run used "
        f"{recorded}, outside its project {report.get('rootdir') or '(not recorded)'}, "
        "and it is not a directory here. Expected: pass --golden-dir."
    )


def _test_files(report: dict[str, Any]) -> list[str]:
    """The test files of the report's entries, relative to the run's rootdir."""
    files = []
    for entry in report.get("entries", []):
        nodeid = entry.get("nodeid") if isinstance(entry, dict) else None
        if isinstance(nodeid, str) and nodeid:
            files.append(nodeid.split("::")[0])
    return list(dict.fromkeys(files))


def _project_here(report: dict[str, Any]) -> Path:
    """The run's project (its rootdir) on this machine.

    On the machine that ran it, the recorded rootdir, provided the current directory
    is inside it or above it (a gate with its own ini file in a subfolder). From a CI
    artifact (the recorded rootdir is not here): the rootdir as seen from where pytest
    was invoked (``rootdir_from_invocation``) relative to the current directory, else
    the current directory. In every case the report's test files must exist there:
    goldens are written only where the tests that read them are.

    Raises:
        GoldenError: naming the run's rootdir and golden directory, and the current
            directory, when none of these is the run's project.
    """
    cwd = Path.cwd().resolve()
    recorded = str(report.get("rootdir") or "")
    candidates: list[Path] = []
    unrelated = ""
    if recorded and Path(recorded).is_dir():
        root = Path(recorded).resolve()
        if root == cwd or root in cwd.parents or cwd in root.parents:
            candidates.append(root)
        else:
            unrelated = f"the current directory {cwd} is neither inside nor above it"
    else:
        seen = report.get("rootdir_from_invocation")
        if seen:
            candidates.append((cwd / str(seen)).resolve())
        candidates.append(cwd)
    files = _test_files(report)
    for candidate in dict.fromkeys(candidates):
        if all((candidate / f).exists() for f in files):
            return candidate
    if not unrelated:
        looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
        shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
        unrelated = f"its test files ({shown}) do not exist in {looked}"
    raise GoldenError(
        "Refusing to accept: this is not the project the results come from. Received: "
        f"results of a run in {recorded or '(rootdir not recorded)'} with goldens in "
        f"{report.get('golden_dir') or '(not recorded)'}; {unrelated}. Expected: run "
        "`convviz-check golden accept` from that project (where pytest ran, or its "
        "rootdir), or pass --golden-dir to choose the golden directory yourself."
    )


def _base(root: Path, text: str) -> Path:
    """A check path: golden-dir relative or a filesystem path, with or without suffix.

    Raises:
        GoldenError: no golden is there (the message names the closest stored checks).
    """
    path = Path(text)
    if path.suffix in golden.SUFFIXES:
        path = path.with_suffix("")
    if path.is_absolute() or (path.parent.exists() and not (root / path).parent.exists()):
        base = path
    else:
        base = golden.inside(root, PurePosixPath(path.as_posix()))
    files = golden.files_of(base)
    if not files[".npz"].exists() and not files[".json"].exists():
        stored = [rel.as_posix() for rel in golden.iter_checks(root)] if root.is_dir() else []
        close = difflib.get_close_matches(path.as_posix(), stored, n=3, cutoff=0.5)
        if close:
            hint = f"Did you mean: {', '.join(close)}?"
        elif root.is_dir():
            hint = f"`convviz-check golden list --golden-dir {root}` lists its checks."
        else:
            hint = (
                f"The golden directory {root} does not exist here: run from the project "
                "root or pass --golden-dir."
            )
        raise GoldenError(
            f"No golden for {text!r}: {base}.npz does not exist. Expected a check path "
            f"relative to the golden directory {root} (test file/test name/check, as "
            f"`golden list` prints it) or a path to its .npz. {hint}"
        )
    return base


def _shapes(side: dict[str, Any]) -> str:
    shapes = side.get("shape") or {}
    if list(shapes) == ["value"]:
        return "x".join(map(str, shapes["value"]))
    if side.get("layout") == "gradcam":
        return "cam " + "x".join(map(str, shapes.get("heatmap", [])))
    return f"{len(shapes)} layers"


# --------------------------------------------------------------------------- commands
def cmd_list(args: argparse.Namespace) -> int:
    root = _root(args)
    rows = []
    for rel in golden.iter_checks(root):
        scope = golden.scope_of(rel) or "neutral"
        if args.backend and args.backend != scope:
            continue
        files = golden.files_of(root / Path(rel.as_posix()))
        try:
            side = sidecars.read_sidecar(files[".json"])
            desc = (
                f"{side['kind']:<10} {_shapes(side):<16} "
                f"{','.join(sorted(set(side['dtype'].values())))}"
            )
            writer = side.get("backend") or "?"
            problem = _archive_problem(files[".npz"])
            if problem:
                desc = f"INVALID: {problem} ({desc.strip()})"
        except GoldenError as e:
            desc, writer = f"INVALID: {str(e).splitlines()[0]}", "?"
        size = files[".npz"].stat().st_size if files[".npz"].exists() else 0
        rows.append(f"{rel.as_posix()}  {desc}  {size / 1024:.1f} KiB  by {writer}")
    for row in rows:
        print(row)
    print(f"{len(rows)} check(s) in {root}", file=sys.stderr)
    return 0


def _archive_problem(npz: Path) -> str:
    """Why the ``.npz`` cannot be opened as an archive (missing, truncated: its
    directory is at the end, not a zip, a Git LFS pointer), or ``""``. Reads only the
    archive's directory, not its content (``golden show`` verifies that)."""
    if not npz.exists():
        return "the .npz is missing"
    try:
        with zipfile.ZipFile(npz):
            return ""
    except (zipfile.BadZipFile, OSError, EOFError):
        with npz.open("rb") as f:
            head = f.read(40)
        if head.startswith(b"version https://git-lfs"):
            return "the .npz is a Git LFS pointer (git lfs pull)"
        return "the .npz is not a readable archive (truncated or corrupt)"


def cmd_show(args: argparse.Namespace) -> int:
    base = _base(_root(args), args.check)
    g = golden.load(base)
    side = dict(g.sidecar)
    print(f"{base}.npz")
    print(storage.json_bytes(side).decode(), end="")
    print(f"verified: {len(g.artifact.arrays)} array(s), sha256 {side['sha256'][:12]} matches")
    if args.images:
        from ..report.pictures import picture

        path = storage.write_png(
            Path(args.images) / f"{base.name}.png",
            picture(g.artifact, inputs=golden.read_inputs(base)),
        )
        print(f"picture: {path}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    root = _root(args)
    expected = golden.load(_base(root, args.expected))
    obtained = golden.load(_base(root, args.obtained), kind=expected.artifact.kind)
    result = compare(
        comparable(expected.artifact),
        comparable(obtained.artifact),
        expected.artifact.kind,
        cross_backend=args.cross_backend,
    )
    from ..report.causes import class_named

    # the classes as the checks' messages name them, from the names a golden keeps
    names = expected.sidecar.get("class_names") or obtained.sidecar.get("class_names")
    print("\n".join(class_named(line, names) for line in result.text.splitlines()))
    if args.images:
        from ..report.classes import shown_images
        from ..report.pictures import write_check_images

        out = Path(args.images)
        written, scale = write_check_images(
            out / "check",
            obtained.artifact,
            expected.artifact,
            inputs=golden.read_inputs(_base(root, args.obtained)),
            expected_inputs=golden.read_inputs(_base(root, args.expected)),
            order=shown_images(result, obtained.artifact),  # the worst images, labelled
        )
        for role, path in written.items():
            note = (
                f" (white = |expected - obtained| of {scale:.3g})"
                if role == "diff" and scale
                else ""
            )
            print(f"{role}: {path}{note}")
    return 0 if result.passed else 1


def _read_report(results: Path) -> dict[str, Any]:
    path = results / "report.json"
    if not path.exists():
        raise GoldenError(
            f"No report.json in {results}. Expected the directory given to "
            "--convviz-results-dir (it holds report.json and obtained/)."
        )
    try:
        report = storage.read_json(path)
    except StorageError as e:
        raise GoldenError(str(e)) from None
    if not isinstance(report, dict):
        raise GoldenError(f"{path} must hold a JSON object. Received: {type(report).__name__}.")
    return report


# Sidecar keys that describe the arrays themselves (rebuilt on write), as opposed to
# the facts of the run that produced them (kept when a result is accepted).
_ARRAY_KEYS = (
    "format_version",
    "kind",
    "layout",
    "names",
    "shape",
    "dtype",
    "stats",
    "sha256",
    "attrs",
)


def cmd_accept(args: argparse.Namespace) -> int:
    results = Path(args.results_dir)
    report = _read_report(results)
    settings = Settings(
        golden_dir=_accept_root(args, report),
        reference=str(report.get("golden_backend") or DEFAULT_REFERENCE_BACKEND),
        update="all",
        allow_override=bool(args.override),
    )
    statuses = {"failed", "missing"} | ({"passed", "written"} if args.all else set())
    accepted, skipped = 0, []
    for entry in report.get("entries", []):
        if entry.get("status") not in statuses or not entry.get("obtained"):
            continue
        label = f"{entry.get('nodeid')} :: {entry.get('check')}"
        if args.match and args.match not in label:
            continue
        obtained_base = golden.inside(results, entry["obtained"])
        stored = golden.load(obtained_base, kind=entry.get("kind"))
        rel = PurePosixPath(entry.get("rel") or entry["golden"])
        request = CheckRequest(
            name=str(entry.get("check")),
            rel=rel,
            obtained=stored.artifact,
            backend=str(entry.get("backend") or settings.reference),
            meta={k: v for k, v in stored.sidecar.items() if k not in _ARRAY_KEYS},
            thumbnail_strip=golden.read_inputs(obtained_base),
        )
        place = golden.place(
            settings.golden_dir, rel, request.backend, settings.reference, args.override
        )
        if args.dry_run:
            if place.write_to is None:
                skipped.append(
                    f"{label}: {place.refusal}; pass --override to keep it as an override"
                )
            else:
                print(f"would write {place.write_to}.npz  <- {results / entry['obtained']}.npz")
                accepted += 1
            continue
        if place.write_to is None:
            skipped.append(f"{label}: {place.refusal}; pass --override to keep it as an override")
            continue
        outcome = run_check(settings, request, None)
        if outcome.status == "error":  # e.g. the stored golden cannot be used
            skipped.append(f"{label}: {' '.join(outcome.message.splitlines())}")
            continue
        print(f"accepted {settings.golden_dir / outcome.golden}.npz  ({label})")
        accepted += 1
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    print(
        f"{accepted} check(s) {'to accept' if args.dry_run else 'accepted'} into "
        f"{settings.golden_dir}",
        file=sys.stderr,
    )
    # Checks were chosen but none could be accepted: not a success a script may ignore.
    return 1 if skipped and not accepted else 0


def _orphan(path: Path) -> bool:
    """A check's companion file (sidecar, preview, inputs thumbnail) whose ``.npz`` is
    gone (the calibrated retrain bounds file is none)."""
    if path.name == golden.PROFILE_FILE:
        return False
    for suffix in sorted(golden.SUFFIXES[1:], key=len, reverse=True):  # .inputs.png first
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            base = path.with_name(path.name[: -len(suffix)])
            return not golden.files_of(base)[".npz"].exists()
    return False


def cmd_prune(args: argparse.Namespace) -> int:
    root = _root(args)
    doomed: list[Path] = []
    if args.report:
        try:
            report = storage.read_json(args.report)
        except StorageError as e:
            raise GoldenError(str(e)) from None
        unused = (report.get("unused") if isinstance(report, dict) else None) or {}
        if not unused.get("judged"):
            raise GoldenError(
                f"{args.report} cannot tell which goldens are unused: "
                f"{unused.get('note') or 'the run did not judge them'}. Prune with the "
                "report of a complete run that passed."
            )
        for rel in unused.get("files", []):
            doomed += [p for p in golden.files_of(golden.inside(root, rel)).values() if p.exists()]
    if root.is_dir():
        for path in root.rglob("*"):
            if not path.is_file():
                continue
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                doomed.append(path)  # left by an interrupted write
            elif _orphan(path):
                doomed.append(path)  # preview, thumbnail or sidecar without its data
    for path in sorted(set(doomed)):
        if args.dry_run:
            print(f"would delete {path}")
        else:
            path.unlink(missing_ok=True)
            print(f"deleted {path}")
    # A summary on stderr, also when there is nothing to do (silence reads as a hang or
    # as a no-op of unknown scope).
    scope = (
        "reported unused goldens, orphan and temp files"
        if args.report
        else (
            "orphan and temp files (pass --report REPORT.json of a passing run to also prune "
            "unused goldens)"
        )
    )
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {len(set(doomed))} file(s) in {root}: {scope}", file=sys.stderr)
    if not args.dry_run and root.is_dir():  # drop directories left empty
        for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if not any(d.iterdir()):
                shutil.rmtree(d)
    return 0
