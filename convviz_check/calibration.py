"""Retrain bounds calibrated on a project's own honest retrains.

The ``retrain`` profile's built-in bounds (:data:`convviz_check.tolerances.RETRAIN`)
were measured on the bundled small convnet and are wide on purpose; a user's model
retrains more (or less) alike. ``convviz-check calibrate`` runs a gate on K >= 3 honest
retrains, records every retrain metric of every golden check, and writes
``<golden dir>/convviz-profile-retrain.json`` (:data:`PROFILE_FILE`). The plugin reads it
at start-up: its bounds replace the built-in ones under the retrain profile (fields it
does not name keep theirs).

The bound of one Tolerance field: over the gate's checks each retrain's worst value (the
smallest similarity, the largest error: one field bounds every check of its kind), so K
values; ``worst`` the worst of them, ``spread`` their range (max - min); then

    bound = worst - margin * spread     (similarities, "min")
    bound = worst + margin * spread     (errors, "max")

with a spread of at least :data:`MIN_SPREAD`, clipped to [0, 1] for similarities and to
>= 0 for errors (and to a share's 1). Why: for K draws of a
roughly normal statistic the worst lies about 0.85 standard deviations past the mean
(K = 3) and the range is about 1.7 of them, so the default margin 1.5 puts the bound
about 3.4 standard deviations past the mean: a further honest retrain fails one metric
with a chance of a few in ten thousand, while a change the retrains never showed fails.
A field whose K values are equal (every retrain kept every class, say) would get its
value as the bound and fail the first image that moves: the spread counts as at least
:data:`MIN_SPREAD` (0.05: every retrain statistic is a share or a correlation, on a
scale of 1; with the default margin a class agreement of 1.0 gives 0.925, so 1 of 16
images may change and 2 may not), and the file says so (``"note"``).

A bound the statistic cannot fail (a share's bound at 1 or above, a similarity's at 0
or below) is written with ``"informative": false`` and a note, and ``calibrate`` prints
it: your honest retrains differ so much there that the statistic does not separate a
change from a retrain (judge more images, or rely on the counterfactual probe). A field
that is called out but not judged by default (``heatmap_class_flip_share_max``, bound
1.0) is not calibrated: it keeps its built-in bound.

Pure Python and NumPy: no framework, no pytest. The file is JSON only (never executed)
and validated on every read (:func:`read_profile`).
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from .errors import ConvvizError
from .tolerances import PROFILE_SPECS, RETRAIN, check_bounds
from .types import KINDS, Tolerance

PROFILE_FILE = "convviz-profile-retrain.json"
FORMAT = "convviz-profile-retrain"
FORMAT_VERSION = 1
# Fewer retrains give no spread worth the name (two values: one difference).
MIN_RETRAINS = 3
DEFAULT_MARGIN = 1.5
# The least spread a bound is widened by (see the module docstring).
MIN_SPREAD = 0.05
# The values each bounded retrain statistic can take: a bound at an edge fails nothing.
# Unlisted statistics are unbounded errors (>= 0 after clipping).
STAT_RANGES: dict[str, tuple[float, float]] = {
    "spearman_mean": (-1.0, 1.0),
    "topk_iou_mean": (0.0, 1.0),
    "class_agreement": (0.0, 1.0),
    "class_flip_share": (0.0, 1.0),
    "region_shift": (0.0, 1.0),
    "cka": (0.0, 1.0),
    "box_energy_drop_mean": (-1.0, 1.0),
    "box_energy_drop": (-1.0, 1.0),
    "pointing_drop": (-1.0, 1.0),
    # the layer's median matched correlation minus a channel's: two correlations apart
    "pattern_gap": (0.0, 2.0),
}
BUILTIN = "built-in bounds"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class CalibrationError(ConvvizError, ValueError):
    """A calibration cannot be made (too few retrains, no measurement) or a profile file
    is unreadable or malformed."""


@dataclass(frozen=True)
class FieldSpec:
    """A Tolerance field the retrain profile judges: its kind, metric and direction."""

    kind: str
    field: str
    metric: str
    direction: str


# Retrain metrics judged apart from PROFILE_SPECS' per-item measures: a filter-pattern
# golden with a response record is judged on what its patterns still excite in the new
# model (convviz_check.judge.patterns), metric pattern_gap, the largest gap of a channel
# whose pattern lost its response. A gate of pattern checks given their images measures
# it on every retrain, so it is calibrated by the same rule as the others.
JUDGED_APART = {
    "pattern_response_gap_max": FieldSpec(
        "pattern", "pattern_response_gap_max", "pattern_gap", "max"
    ),
}


def retrain_fields() -> dict[str, FieldSpec]:
    """Every bounded retrain metric, by Tolerance field, read from
    :data:`~convviz_check.tolerances.PROFILE_SPECS` (so metrics added there are
    calibrated without a change here), and the filter patterns' ``pattern_gap``
    (:data:`JUDGED_APART`)."""
    found = dict(JUDGED_APART)
    for kind, specs in PROFILE_SPECS["retrain"].items():
        for spec in specs:
            if spec.field is not None:
                found[spec.field] = FieldSpec(kind, spec.field, spec.name, spec.direction)
    return found


@dataclass(frozen=True)
class Calibration:
    """A read profile file: the bounds per kind and what they were measured on."""

    path: Path
    k: int
    date: str
    bounds: dict[str, dict[str, float]]

    def tolerance(self, kind: str) -> Tolerance | None:
        """The calibrated bounds of ``kind`` (None when the file has none)."""
        fields = self.bounds.get(kind)
        return Tolerance(**fields) if fields else None

    def describe(self) -> str:
        """``"bounds calibrated on 5 retrains, 2026-12-07"``."""
        return f"bounds calibrated on {self.k} retrains, {self.date}"


def bounds_text(calibration: Calibration | None) -> str:
    """What the retrain profile's bounds are, in words (the built-in ones without a file)."""
    return BUILTIN if calibration is None else calibration.describe()


def bounds_facts(calibration: Calibration | None, measuring: bool = False) -> dict[str, Any]:
    """Which bounds the retrain profile uses, for report.json and the terminal summary."""
    text = bounds_text(calibration)
    if calibration is not None:
        text += f" ({calibration.path.name})"
    if measuring:
        text += "; measuring: every check recorded, none failed (convviz-check calibrate)"
    return {"text": text, "calibrated": calibration is not None, "measuring": measuring}


def calibrated(calibration: Calibration | None, kind: str, profile: str) -> Tolerance | None:
    """The calibrated bounds of ``kind`` under ``profile`` (only ``retrain`` has any), to
    lay over the built-in defaults before a project's or a test's own tolerances."""
    if calibration is None or profile != "retrain":
        return None
    return calibration.tolerance(kind)


def choose_bound(
    values: Sequence[float], direction: str, margin: float, metric: str | None = None
) -> dict[str, Any]:
    """``values`` (one per retrain), their ``worst``, ``spread`` (range) and ``bound``
    by the rule of the module docstring; ``metric`` (a retrain metric's name) gives the
    statistic's range (:data:`STAT_RANGES`), so that a bound it cannot fail is flagged.

    Example:
        >>> choose_bound([0.9, 0.8, 0.85], "min", 1.5)["bound"]
        0.65
    """
    vals = [float(v) for v in values]
    worst = min(vals) if direction == "min" else max(vals)
    spread = max(vals) - min(vals)
    widen = margin * max(spread, MIN_SPREAD)
    high = STAT_RANGES.get(metric or "", (None, None))[1]
    if direction == "min":
        bound = min(1.0, max(0.0, worst - widen))
        informative = bound > 0.0
    else:
        bound = max(0.0, worst + widen)
        if high is not None:
            bound = min(bound, high)
        informative = high is None or bound < high
    found: dict[str, Any] = {
        "values": vals,
        "worst": worst,
        "spread": spread,
        "bound": round(bound, 6),
        "informative": informative,
    }
    notes = []
    if spread < MIN_SPREAD:
        notes.append(
            f"the retrains agreed within {MIN_SPREAD}: widened by margin x {MIN_SPREAD} "
            "(the least spread counted)"
        )
    if not informative:
        notes.append(
            "the honest retrains differ so much here that this bound fails nothing: the "
            "statistic does not separate a change from a retrain on these models (judge more "
            "images per check, or rely on the counterfactual probe)"
        )
    if notes:
        found["note"] = "; ".join(notes)
    return found


def _called_out_only(spec: FieldSpec) -> bool:
    """A field whose built-in bound fails nothing by design (called out, not judged):
    calibrating it would turn a reported fact into a verdict."""
    builtin = RETRAIN.get(spec.kind, {}).get(spec.field)
    high = STAT_RANGES.get(spec.metric, (None, None))[1]
    return spec.direction == "max" and builtin is not None and high is not None and builtin >= high


def check_retrains(models: Sequence[Any]) -> None:
    """Raises CalibrationError for fewer than :data:`MIN_RETRAINS` models."""
    if len(models) < MIN_RETRAINS:
        raise CalibrationError(
            f"Calibrating needs at least {MIN_RETRAINS} honest retrains (a spread of fewer "
            f"values says nothing). Received: {len(models)} model(s): "
            f"{[str(m) for m in models]}."
        )


def build_profile(
    measured: Sequence[Mapping[str, float]],
    models: Sequence[Mapping[str, str]],
    *,
    margin: float = DEFAULT_MARGIN,
    versions: Mapping[str, str] | None = None,
    checks: Mapping[str, Any] | None = None,
    date: str | None = None,
) -> dict[str, Any]:
    """The profile file's content.

    Args:
        measured: per retrain, Tolerance field -> its worst value over the gate's checks.
        models: per retrain, ``{"path": ..., "sha256": ...}``.
        margin: the rule's multiplier (>= 0).
        versions: package, keras and backend versions of the measuring runs.
        checks: per check, what was measured (kept for the reader, never read back).
        date: ``YYYY-MM-DD`` (default: today, UTC).

    Raises:
        CalibrationError: fewer than 3 retrains, a bad margin, or no field measured on
            every retrain.
    """
    check_retrains(models)
    if len(measured) != len(models):
        raise CalibrationError(
            f"One measurement per model expected. Received: {len(measured)} measurements "
            f"for {len(models)} models."
        )
    if not (isinstance(margin, int | float) and math.isfinite(margin) and margin >= 0):
        raise CalibrationError(f"margin must be a number >= 0. Received: margin={margin!r}")
    specs = retrain_fields()
    bounds: dict[str, dict[str, Any]] = {}
    for name, spec in specs.items():
        if _called_out_only(spec):
            continue  # keeps its built-in bound
        values = [m[name] for m in measured if name in m]
        if len(values) != len(measured):
            continue  # not measured on every retrain (no such check, no boxes): built-in
        entry = {"metric": spec.metric, "direction": spec.direction}
        entry.update(choose_bound(values, spec.direction, float(margin), spec.metric))
        bounds.setdefault(spec.kind, {})[name] = entry
    if not bounds:
        raise CalibrationError(
            "No retrain metric was measured on every model: the gate has no golden check "
            "the retrain profile judges (heatmaps, activations, filter patterns checked with "
            "their images), or its goldens are missing."
        )
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "profile": "retrain",
        "date": date or datetime.datetime.now(datetime.UTC).date().isoformat(),
        "k": len(models),
        "margin": float(margin),
        "rule": "bound = worst - margin * spread (similarities) or worst + margin * spread "
        "(errors); worst and spread (max - min) over the K retrains' worst values",
        "models": [dict(m) for m in models],
        "versions": dict(versions or {}),
        "bounds": bounds,
        "checks": dict(checks or {}),
    }


def write_profile(path: Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` (validated first: what is written can be read back)."""
    from . import storage

    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    parse_profile(json.loads(text), Path(path))
    return storage.write_text(path, text)


def read_profile(path: str | Path) -> Calibration:
    """Read and validate a profile file.

    Raises:
        CalibrationError: unreadable, not JSON, or a field that is missing or wrong,
            naming the file and the field.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CalibrationError(f"Cannot read the retrain profile {path}: {e}") from None
    except ValueError as e:
        raise CalibrationError(
            f"The retrain profile {path} is not valid JSON: {e}. Expected the file "
            "`convviz-check calibrate` writes."
        ) from None
    return parse_profile(data, path)


def load_for(golden_dir: str | Path) -> Calibration | None:
    """The golden dir's profile file, read and validated; None when there is none."""
    path = Path(golden_dir) / PROFILE_FILE
    return read_profile(path) if path.is_file() else None


def parse_profile(data: Any, path: Path) -> Calibration:
    """A :class:`Calibration` from a profile file's parsed JSON (see :func:`read_profile`)."""

    def bad(where: str, expected: str, value: Any) -> CalibrationError:
        return CalibrationError(
            f"Invalid retrain profile {path}: {where} must be {expected}. Received: {value!r}"
        )

    if not isinstance(data, dict):
        raise bad("the file", "a JSON object", type(data).__name__)
    if data.get("format") != FORMAT or data.get("version") != FORMAT_VERSION:
        got = (data.get("format"), data.get("version"))
        raise bad("format / version", f"{FORMAT!r} / {FORMAT_VERSION}", got)
    k = data.get("k")
    if isinstance(k, bool) or not isinstance(k, int) or k < MIN_RETRAINS:
        raise bad("k", f"an int >= {MIN_RETRAINS} (the number of retrains)", k)
    date = data.get("date")
    if not isinstance(date, str) or not _DATE.match(date):
        raise bad("date", "a YYYY-MM-DD string", date)
    models = data.get("models")
    if not isinstance(models, list) or len(models) != k:
        raise bad("models", f"a list of k={k} models", models)
    for i, model in enumerate(models):
        sha = model.get("sha256") if isinstance(model, dict) else None
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise bad(f"models[{i}].sha256", "64 lowercase hex digits", sha)
    bounds = _parse_bounds(data.get("bounds"), k, bad)
    return Calibration(path=path, k=k, date=date, bounds=bounds)


def _parse_bounds(raw: Any, k: int, bad: Any) -> dict[str, dict[str, float]]:
    if not isinstance(raw, dict) or not raw:
        raise bad("bounds", "a non-empty object kind -> field -> entry", raw)
    specs = retrain_fields()
    bounds: dict[str, dict[str, float]] = {}
    for kind, fields in raw.items():
        if kind not in KINDS or not isinstance(fields, dict):
            raise bad(f"bounds.{kind}", f"an object under a kind of {KINDS}", fields)
        for name, entry in fields.items():
            where = f"bounds.{kind}.{name}"
            spec = specs.get(name)
            if spec is None or spec.kind != kind:
                known = sorted(f for f, s in specs.items() if s.kind == kind)
                raise bad(where, f"a retrain field of {kind} ({known})", name)
            if not isinstance(entry, dict):
                raise bad(where, "an object with bound and values", entry)
            values = entry.get("values")
            if (
                not isinstance(values, list)
                or len(values) != k
                or not all(_finite(v) for v in values)
            ):
                raise bad(f"{where}.values", f"a list of k={k} finite numbers", values)
            raw_bound = entry.get("bound")
            if not _finite(raw_bound):
                raise bad(f"{where}.bound", "a finite number", raw_bound)
            bound = float(raw_bound)
            try:
                check_bounds(Tolerance(**{name: bound}), f"{where}.bound")
            except ConvvizError as e:
                raise bad(f"{where}.bound", f"a passable bound ({e})", bound) from None
            bounds.setdefault(kind, {})[name] = bound
    return bounds


def _finite(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
