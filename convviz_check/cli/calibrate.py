"""``convviz-check calibrate``: the retrain profile's bounds measured on a project's own
honest retrains (see :mod:`convviz_check.calibration`).

For each model the gate runs in a pytest subprocess, ``--convviz-model=M
--convviz-profile=retrain --convviz-measure --convviz-results-dir=TMP``: every golden
check is compared and recorded in ``report.json``, none fails. The worst value of each
retrain metric over the checks is one value per model; the profile file holds, per
metric, the K values, their worst and spread, and the bound chosen from them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..calibration import (
    DEFAULT_MARGIN,
    PROFILE_FILE,
    CalibrationError,
    build_profile,
    check_retrains,
    retrain_fields,
    write_profile,
)

# What the measuring run's pytest exit status may be: 0 (all passed) or 1 (a test that
# is no golden check failed, e.g. an accuracy floor: reported, not fatal).
_MEASURED_STATUSES = (0, 1)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``calibrate`` on the ``convviz-check`` subcommand tree."""
    p = subparsers.add_parser(
        "calibrate",
        help="measure the retrain profile's bounds on your own honest retrains",
        description="Run a gate on K >= 3 honest retrains of your model (the same recipe, "
        "other seeds), record every retrain metric of every golden check, and write "
        f"<golden dir>/{PROFILE_FILE}: per metric the K values, their worst and spread, "
        "and the bound (worst - margin x spread for similarities, worst + margin x spread "
        "for errors). The gate then judges --convviz-profile=retrain with these bounds.",
    )
    p.add_argument(
        "--models", nargs="+", required=True, metavar="MODEL", help="the retrains (.keras)"
    )
    p.add_argument(
        "--gate", required=True, metavar="DIR", help="the gate folder (its pytest project)"
    )
    p.add_argument(
        "--margin",
        type=float,
        default=DEFAULT_MARGIN,
        help=f"spreads added past the worst value (default {DEFAULT_MARGIN})",
    )
    p.add_argument("--out", metavar="FILE", help=f"default: <golden dir>/{PROFILE_FILE}")
    p.add_argument(
        "--pytest-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for every gate run (repeat for more)",
    )
    p.set_defaults(func=cmd_calibrate)
    return p


def cmd_calibrate(args: argparse.Namespace) -> int:
    models = [Path(m) for m in args.models]
    check_retrains(models)
    if not (math.isfinite(args.margin) and args.margin >= 0):  # before minutes of runs
        raise CalibrationError(f"--margin must be a number >= 0. Received: {args.margin}.")
    gate = Path(args.gate)
    if not gate.is_dir():
        raise CalibrationError(f"--gate must be the gate's folder. Received: {gate} (no folder).")
    missing = [str(m) for m in models if not m.is_file()]
    if missing:
        raise CalibrationError(f"Model files not found. Received: {missing}.")
    shas = [_sha256(m) for m in models]
    twice = sorted({str(m) for m, s in zip(models, shas, strict=True) if shas.count(s) > 1})
    if twice:
        raise CalibrationError(
            f"The same model file was given more than once ({twice}): calibrating needs K "
            "different honest retrains."
        )
    measured: list[dict[str, float]] = []
    checks: dict[str, list[dict[str, float]]] = {}
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="convviz-calibrate-") as tmp:
        for i, model in enumerate(models):
            print(f"convviz-check calibrate: {model} ({i + 1}/{len(models)})", file=sys.stderr)
            report = _measure_run(gate, model.resolve(), Path(tmp) / f"run{i}", args.pytest_arg)
            worst, per_check = worst_values(report, str(model))
            measured.append(worst)
            for name, values in per_check.items():
                checks.setdefault(name, []).append(values)
    golden_dir = Path(str(report.get("golden_dir") or gate / "golden"))
    out = Path(args.out) if args.out else golden_dir / PROFILE_FILE
    data = build_profile(
        measured,
        [{"path": str(m), "sha256": s} for m, s in zip(models, shas, strict=True)],
        margin=args.margin,
        versions=_versions(report),
        checks=checks,
    )
    write_profile(out, data)
    for fields in data["bounds"].values():
        for name, entry in fields.items():
            print(
                f"{name}: values {', '.join(f'{v:.4g}' for v in entry['values'])}; worst "
                f"{entry['worst']:.4g}, spread {entry['spread']:.4g} -> bound {entry['bound']:.4g}"
                + ("" if entry.get("informative", True) else " (fails nothing: see the note)")
            )
            if entry.get("note"):
                print(f"  note: {entry['note']}")
    print(f"wrote {out} (bounds calibrated on {len(models)} retrains)")
    return 0


def worst_values(report: dict[str, Any], source: str) -> tuple[dict[str, float], dict[str, Any]]:
    """Per Tolerance field the worst value over the report's retrain golden checks, and
    per check (``golden`` path) the values of its metrics.

    Raises:
        CalibrationError: a golden check without a golden, or one that errored.
    """
    specs = retrain_fields()
    by_metric = {(s.kind, s.metric): s for s in specs.values()}
    worst: dict[str, float] = {}
    per_check: dict[str, dict[str, float]] = {}
    for entry in report.get("entries", []):
        if entry.get("judgment", "golden") != "golden" or entry.get("profile") != "retrain":
            continue
        status = entry.get("status")
        if status in ("missing", "error"):
            raise CalibrationError(
                f"{source}: golden check {entry.get('golden') or entry.get('check')!r} is "
                f"{status}: {entry.get('message', '')[:300]} Write the goldens with the approved "
                "model first (pytest --convviz-update=missing)."
            )
        for metric, result in (entry.get("metrics") or {}).items():
            spec = by_metric.get((entry.get("kind"), metric))
            if spec is None or not isinstance(result, dict):
                continue
            value = float(result["value"])
            per_check.setdefault(str(entry.get("golden")), {})[spec.field] = value
            pick = min if spec.direction == "min" else max
            worst[spec.field] = pick(worst.get(spec.field, value), value)
    if not worst:
        raise CalibrationError(
            f"{source}: the gate recorded no retrain metric: it has no golden check the "
            "retrain profile judges (heatmaps, activations, filter patterns checked with "
            "their images)."
        )
    return worst, per_check


def _measure_run(gate: Path, model: Path, results: Path, extra: list[str]) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(gate.resolve()),
        f"--convviz-model={model}",
        "--convviz-profile=retrain",
        "--convviz-measure",
        f"--convviz-results-dir={results}",
        "-p",
        "no:cacheprovider",
        "-q",
        *extra,
    ]
    done = subprocess.run(
        command, cwd=gate, capture_output=True, text=True, env=dict(os.environ), check=False
    )
    report_path = results / "report.json"
    if done.returncode not in _MEASURED_STATUSES or not report_path.is_file():
        tail = (done.stdout + done.stderr)[-2000:]
        raise CalibrationError(
            f"The gate run on {model} ended with exit status {done.returncode} and no report: "
            f"{' '.join(command)}\n{tail}"
        )
    if done.returncode == 1:
        failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
        print(f"  note: tests failed on {model}: {failed}", file=sys.stderr)
    data = json.loads(report_path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _versions(report: dict[str, Any]) -> dict[str, str]:
    """The package's and the measuring backend's versions (keras and the framework from
    the recorded checks' sidecar facts when the report has them)."""
    from .. import __version__

    versions = {"convviz_check": __version__, "backend": str(report.get("backend") or "")}
    try:  # the running framework, as the gate's runs imported it (same environment)
        code = "import json; from convviz_check.backends import framework_versions as f; "
        code += "print(json.dumps(f()))"
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        versions.update({k: str(v) for k, v in json.loads(done.stdout).items()})
    except (subprocess.CalledProcessError, ValueError, OSError):
        versions["framework"] = "unknown (could not import keras)"
    return versions


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
