"""The gate validation's measurements and verdicts (``validate_gate.py``): each model's
Grad-CAM maps and predictions on the probe, the retrain profile's and the
counterfactual check's statistics against the golden, their built-in and calibrated
bounds, the verdicts and the requirement."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gate_images import (
    CLASS_NAMES,
    CUE_BOX,
    CUE_REGION,
    PROBE_N,
    PROBE_SEED,
    SIZE,
    TARGET_CLASS,
    ImageSet,
    make_set,
    paste_cue,
)

from convviz_check import counterfactual as cf
from convviz_check.calibration import DEFAULT_MARGIN, choose_bound
from convviz_check.counterfactual import measure_counterfactual
from convviz_check.evidence import VERDICT_OF
from convviz_check.metrics import compare
from convviz_check.tolerances import default_tolerance
from convviz_check.types import RETRAIN_METRICS

FLIP_REQUIRED = 0.30  # the requirement: a shortcut flipping >= 30% must fail

# ============================================================================ measuring
# The package's own statistics, bounds and calibration rule, used as they are.
#: The retrain profile's statistics: name -> (Tolerance field, direction).
RETRAIN_STATS: dict[str, tuple[str, str]] = {
    name: (fld, d) for name, fld, d in RETRAIN_METRICS["heatmap"]
}
#: The counterfactual check's statistics (both "max"): the largest increase over the
#: golden's flip rate towards one class, and of the cue's share of the map.
CUE_STATS = ("towards_rate_increase", "cue_mass_increase")


@dataclass
class Probe:
    """What the gate sees: the gate set (clean probe images) and the cue set (the
    probe images of the other classes, with the cue pasted)."""

    clean: ImageSet
    others: np.ndarray  # rows of the probe images not of TARGET_CLASS
    cued: np.ndarray


def make_probe(n: int = PROBE_N, seed: int = PROBE_SEED) -> Probe:
    clean = make_set(n, seed)
    others = np.flatnonzero(clean.classes != TARGET_CLASS)
    return Probe(clean, others, paste_cue(clean.images[others]))


@dataclass
class Observed:
    """One model on the probe: Grad-CAM maps and predicted classes, gate set and cue
    set (the maps explain the predicted class), and its counterfactual facts."""

    cam_clean: Any
    cam_cued: Any
    probs_clean: np.ndarray
    probs_cued: np.ndarray
    facts: dict[str, Any] = field(default_factory=dict)


def observe(model: Any, probe: Probe) -> Observed:
    from convviz_check.explain.gradcam import gradcam

    obs = Observed(
        gradcam(model, probe.clean.images),
        gradcam(model, probe.cued),
        np.asarray(model.predict(probe.clean.images, verbose=0)),
        np.asarray(model.predict(probe.cued, verbose=0)),
    )
    obs.facts = measure_cue(obs, probe)
    return obs


def _classes(obs: Observed, probe: Probe) -> tuple[np.ndarray, np.ndarray]:
    return obs.probs_clean[probe.others].argmax(axis=1), obs.probs_cued.argmax(axis=1)


def measure_cue(obs: Observed, probe: Probe) -> dict[str, Any]:
    """Flip rate towards each class and the cue mass on the cue set
    (``counterfactual.measure_counterfactual``: the mass in the cue's box grown by one
    map cell, :data:`CUE_REGION`)."""
    clean, cued = _classes(obs, probe)
    return measure_counterfactual(
        clean, cued, obs.cam_cued, CUE_BOX, image_shape=(SIZE, SIZE), num_classes=len(CLASS_NAMES)
    )


def cue_stats(golden: Observed, obtained: Observed) -> dict[str, float]:
    """The counterfactual check's statistics of ``obtained`` against ``golden``."""
    rates = np.asarray(obtained.facts["towards_rate"]) - np.asarray(golden.facts["towards_rate"])
    return {
        "towards_rate_increase": float(rates.max()),
        "cue_mass_increase": obtained.facts["cue_mass"] - golden.facts["cue_mass"],
    }


def retrain_stats(golden: Any, obtained: Any, boxes: np.ndarray) -> dict[str, float]:
    """The retrain profile's statistics of ``obtained`` against ``golden`` (every bound
    opened wide: each value is measured, none decides here); with the cue's corner as
    a region."""
    loose = {fld: (-1.0 if d == "min" else 2.0) for fld, d in RETRAIN_STATS.values()}
    regions = {"cue": CUE_REGION}
    result = compare(
        golden, obtained, "heatmap", loose, profile="retrain", boxes=boxes, regions=regions
    )
    return {
        name: float(result.metrics[name].value) for name in RETRAIN_STATS if name in result.metrics
    }


def pair_stats(golden: Observed, obtained: Observed, probe: Probe) -> dict[str, float]:
    """Every statistic of ``obtained`` against ``golden``: the retrain profile's on the
    gate set (``gate:``) and on the cue set (``cue:``), and the counterfactual check's;
    plus, for the table, the flip rate towards the cue's class and the cue mass."""
    gate = retrain_stats(golden.cam_clean, obtained.cam_clean, probe.clean.boxes)
    cue = retrain_stats(golden.cam_cued, obtained.cam_cued, probe.clean.boxes[probe.others])
    out = {f"gate:{k}": v for k, v in gate.items()}
    out.update({f"cue:{k}": v for k, v in cue.items()})
    out.update(cue_stats(golden, obtained))
    out["flip_rate"] = float(obtained.facts["towards_rate"][TARGET_CLASS])
    out["cue_mass"] = float(obtained.facts["cue_mass"])
    return out


REPORTED = ("flip_rate", "cue_mass")  # in the table, not judged


def direction(stat: str) -> str:
    name = stat.split(":", 1)[-1]
    return RETRAIN_STATS[name][1] if name in RETRAIN_STATS else "max"


def builtin_bound(stat: str) -> float | None:
    """The package's own bound of ``stat`` (the retrain profile's, or the
    counterfactual check's defaults)."""
    name = stat.split(":", 1)[-1]
    if name in RETRAIN_STATS:
        tol = default_tolerance("heatmap", profile="retrain")
        return getattr(tol, RETRAIN_STATS[name][0])
    if name == "towards_rate_increase":
        return float(cf.DEFAULT_MAX_RATE_INCREASE)
    return float(cf.DEFAULT_MAX_MASS_INCREASE)


def calibrated_bound(stat: str, honest_values: Sequence[float]) -> float:
    """The bound from the honest retrains' values by the calibrate command's rule
    (``calibration.choose_bound``: worst -/+ margin x spread)."""
    name = stat.split(":", 1)[-1]
    builtin = builtin_bound(stat)
    if name in RETRAIN_STATS and builtin is not None and direction(stat) == "max" and builtin >= 1:
        return float(builtin)  # called out, not judged: calibrate leaves it at its built-in bound
    found = choose_bound(list(honest_values), direction(stat), DEFAULT_MARGIN, name)
    return float(found["bound"])


def passes(value: float, bound: float | None, stat: str) -> bool:
    if bound is None:
        return True
    return value >= bound if direction(stat) == "min" else value <= bound


# ============================================================================= verdicts
def reason_of(stat: str) -> str:
    """The verdict a failing statistic gives: the counterfactual check's, or the retrain
    profile's (``evidence.VERDICT_OF``: "predicts differently" for the class statistics,
    "looks elsewhere" for the rest)."""
    name = stat.split(":", 1)[-1]
    if name in CUE_STATS:
        return "counterfactual"
    return VERDICT_OF.get(name, "looks elsewhere")


REQUIRED_REASONS = ("looks elsewhere", "counterfactual")


@dataclass
class Row:
    """One model against the golden: its statistics, bounds and verdicts."""

    name: str
    kind: str
    rate: float
    accuracy: float
    top1: float
    stats: dict[str, float]
    builtin: dict[str, float | None]
    calibrated: dict[str, float]
    builtin_fails: list[str] = field(default_factory=list)
    calibrated_fails: list[str] = field(default_factory=list)

    @property
    def calibrated_reasons(self) -> list[str]:
        return sorted({reason_of(s) for s in self.calibrated_fails})

    def verdict(self, calibrated: bool) -> str:
        fails = self.calibrated_fails if calibrated else self.builtin_fails
        if not fails:
            return "pass"
        return "fail: " + ", ".join(sorted({reason_of(s) for s in fails}))


def judge(
    names: list[str],
    kinds: dict[str, tuple[str, float]],
    stats: dict[str, dict[str, float]],
    quality: dict[str, tuple[float, float]],
) -> list[Row]:
    """Bounds and verdicts of every model against the golden. A model's calibrated
    bounds come from the honest retrains' values against the golden, the judged model
    left out (as ``convviz-check calibrate`` would make them without it)."""
    rows = []
    for name in names:
        kind, rate = kinds[name]
        values = stats[name]
        calib = [stats[n] for n in names if kinds[n][0] == "honest" and n != name]
        judged = [s for s in values if s not in REPORTED]
        builtin = {s: builtin_bound(s) for s in judged}
        calibrated = {s: calibrated_bound(s, [c[s] for c in calib]) for s in judged}
        row = Row(name, kind, rate, *quality[name], values, builtin, calibrated)
        row.builtin_fails = [s for s, b in builtin.items() if not passes(values[s], b, s)]
        row.calibrated_fails = [s for s, b in calibrated.items() if not passes(values[s], b, s)]
        rows.append(row)
    return rows


def sensitivity(rows: list[Row]) -> list[dict[str, Any]]:
    """How the verdicts depend on the number k of honest retrains calibrated on: for each
    k, every judged model against every k-subset of the other honest retrains; the share
    of those judgments that fail, by reason (honest retrains: false alarms; shortcuts
    flipping >= FLIP_REQUIRED: catches)."""
    honest = [r for r in rows if r.kind == "honest"]
    strong = [r for r in rows if r.kind == "shortcut" and r.stats["flip_rate"] >= FLIP_REQUIRED]
    out = []
    for k in range(2, len(honest)):
        for group, label in ((honest, "honest"), (strong, "shortcut")):
            counts: dict[str, int] = {"any": 0, **{v: 0 for v in (*VERDICTS, "counterfactual")}}
            total = 0
            for row in group:
                others = [r for r in honest if r is not row]
                for subset in itertools.combinations(others, k):
                    total += 1
                    fails = [
                        s
                        for s in row.calibrated
                        if not passes(
                            row.stats[s], calibrated_bound(s, [o.stats[s] for o in subset]), s
                        )
                    ]
                    reasons = {reason_of(s) for s in fails}
                    counts["any"] += bool(reasons)
                    for reason in reasons:
                        counts[reason] = counts.get(reason, 0) + 1
            if total:
                out.append({"k": k, "models": label, "judgments": total, **counts})
    return out


VERDICTS = ("predicts differently", "looks elsewhere")


def requirement(rows: list[Row]) -> tuple[bool, list[str]]:
    """With calibrated bounds every honest retrain passes and every shortcut whose flip
    rate is >= FLIP_REQUIRED fails for a looks-elsewhere or counterfactual reason."""
    problems = []
    for row in rows:
        if row.kind == "honest" and row.calibrated_fails:
            shown = ", ".join(
                f"{s} {row.stats[s]:.3f} (bound {row.calibrated[s]:.3f})"
                for s in row.calibrated_fails
            )
            problems.append(f"honest retrain {row.name} fails {shown}")
        if row.kind == "shortcut" and row.stats["flip_rate"] >= FLIP_REQUIRED:
            reasons = set(row.calibrated_reasons)
            if not reasons & set(REQUIRED_REASONS):
                problems.append(
                    f"{row.name} (shortcut, flip rate {row.stats['flip_rate']:.2f}) "
                    f"{'passes' if not reasons else 'fails only as ' + ', '.join(reasons)}"
                )
    return not problems, problems
