"""The golden-check lifecycle, with no pytest in it.

Every golden check goes through :func:`run_check`: the pytest fixture's
``convviz.check`` and ``convviz-check golden accept`` both call it. One call:

1. places the check (:func:`convviz_check.golden.place`: which golden, same- or
   cross-backend bounds, may this backend write);
2. loads the expected golden, if any, and resolves the tolerance once;
3. compares, and decides: write, refuse, pass, fail or missing;
4. writes what it decided (the golden, and in a results directory the obtained
   arrays and the expected / obtained / diff images);
5. returns a :class:`CheckResult` with the message a person reads; its
   :attr:`~CheckResult.outcome` is the judgment's :class:`~convviz_check.types.Outcome`
   (judgment ``"golden"``), the record every other judgment returns too.

The gate profile (``exact`` or ``retrain``, :mod:`convviz_check.tolerances`) decides
the bounds and metrics; a check the profile does not judge (filter patterns without a
response record under ``retrain``) ends as ``skipped`` with the reason, and is still
written when its golden is missing in an update run.

How a person runs the next command (a pytest command line, or nothing for the CLI)
comes from a :class:`Commands` object the caller passes.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np

from . import golden, sidecars, tolerances
from . import regions as regions_lib
from .artifacts import BOXES, Artifact, comparable
from .calibration import Calibration, bounds_text, calibrated
from .errors import ComparisonError, GoldenError, LocalizationError
from .judge.patterns import judge_retrain
from .metrics import check_boxes, compare, not_judged
from .report.causes import boxes_text, cause_first, what_changed
from .report.classes import shown_images
from .report.gallery import write_pictures
from .report.pictures import inputs_thumbnail
from .types import DEFAULT_REFERENCE_BACKEND, Comparison, Outcome, Tolerance

UPDATE_MODES = ("missing", "failed", "all")
# Items (layers, images, filters) of one check listed in report.json.
MAX_ITEMS = 64
STATUSES = ("passed", "failed", "missing", "written", "error", "skipped")


class Commands(Protocol):
    """Command lines that a message may suggest (the plugin builds pytest lines)."""

    def update(self, mode: str, *, backend: str | None = None, override: bool = False) -> str:
        """The command that rewrites this check with ``--convviz-update=mode``."""
        ...

    def ci_route(self) -> str | None:
        """Where update commands are refused (in CI), how to accept results instead."""
        ...


@dataclass(frozen=True)
class Settings:
    """What stays the same for every check of a run.

    Attributes:
        golden_dir: the golden directory.
        reference: the backend that owns neutral goldens.
        update: ``None`` (verify), ``"missing"``, ``"failed"`` or ``"all"``.
        allow_override: writes under a non-reference backend go to its override tree.
        results_dir: where obtained arrays and images go (None: nowhere).
        calibration: the golden dir's calibrated retrain bounds (None: built-in bounds).
    """

    golden_dir: Path
    reference: str = DEFAULT_REFERENCE_BACKEND
    update: str | None = None
    allow_override: bool = False
    results_dir: Path | None = None
    calibration: Calibration | None = None


@dataclass
class CheckRequest:
    """One value to check.

    Attributes:
        name: the check's name (unique within its test).
        rel: the check's neutral path relative to the golden dir.
        obtained: the value just computed, as an artifact.
        backend: the backend that computed it.
        tolerance: the caller's overrides (marker, argument), merged; None for none.
        meta: sidecar facts for a write (versions, cpu, model fingerprint...).
        inputs: the input images (any range), for the thumbnail that reports draw
            heatmaps over; None when unknown.
        label: who asked (a pytest node id), for the accept command of a report.
        profile: the gate profile; None: the ``profile`` of ``meta`` (a result being
            accepted keeps the profile it was checked under), else ``exact``.
        note: a remark on how the value was computed (a GradCAM's ``note``), repeated
            in a failure message; never stored.

    A ``class_names`` list in ``meta`` (stored in the sidecar) names the classes in
    the messages; without one, the golden's sidecar's.
    """

    name: str
    rel: PurePosixPath
    obtained: Artifact
    backend: str
    tolerance: Tolerance | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    inputs: np.ndarray | None = None
    label: str = ""
    profile: str | None = None
    # An inputs thumbnail already made (a results dir's ``.inputs.png``), used when the
    # images themselves are not at hand: ``golden accept`` writes the same preview.
    thumbnail_strip: np.ndarray | None = None
    note: str = ""
    probe: Any = None  # filter patterns: images -> the new model's layer (retrain profile)

    def thumbnail(self) -> np.ndarray | None:
        if self.obtained.kind != "heatmap":
            return None
        if self.inputs is None:
            return self.thumbnail_strip
        try:
            return inputs_thumbnail(self.inputs)
        except Exception:  # noqa: BLE001 - a thumbnail is only a picture
            return None


@dataclass
class CheckResult:
    """What :func:`run_check` found and did.

    Attributes:
        status: ``passed``, ``failed``, ``missing``, ``written``, ``error`` (a golden
            that cannot be used, or a write this backend may not do) or ``skipped``
            (the gate profile does not judge this kind; the message says why).
        message: what a person reads (empty when passed or written).
        comparison: the comparison, when one was made.
        golden: the golden's path relative to the golden dir.
        written: files written in the golden dir.
        touched: goldens this check used or wrote (relative paths without suffix), so
            that unused goldens can be told apart.
        entry: the JSON-ready record for ``report.json``.
    """

    status: str
    message: str = ""
    comparison: Comparison | None = None
    golden: str = ""
    written: list[Path] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)
    entry: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("passed", "written", "skipped")

    @property
    def outcome(self) -> Outcome:
        """The judgment as every judgment reports it (judgment ``"golden"``): the
        status, the message's first line as the lead, the metrics against their
        bounds and the per-item facts of ``report.json``."""
        lines = self.message.splitlines()
        lead = lines[0] if lines else f"{self.entry.get('check', 'check')}: {self.status}"
        metrics = dict(self.comparison.metrics) if self.comparison is not None else {}
        items = {str(k): dict(v) for k, v in (self.entry.get("per_item") or {}).items()}
        facts: dict[str, Any] = {
            k: self.entry[k] for k in ("kind", "profile", "golden") if k in self.entry
        }
        return Outcome("golden", self.status, lead, self.message, metrics, items, {}, facts)


def run_check(settings: Settings, request: CheckRequest, commands: Commands | None) -> CheckResult:
    """Run one golden check through its whole lifecycle (see the module docstring)."""
    place = golden.place(
        settings.golden_dir,
        request.rel,
        request.backend,
        settings.reference,
        settings.allow_override,
    )
    run = _Run(settings, request, commands, place)
    expected, problem = run.load_expected()
    if problem:
        return run.finish(
            "error",
            lambda: f"convviz check {request.name!r}: the golden cannot be used.\n{problem}",
        )
    run.comparison, run.unjudged = judge_retrain(expected, run)
    if run.unjudged:
        return run.not_judged(expected)
    if expected is not None and run.comparison is None:
        run.compare(expected)
    if run.wants_write(expected):
        if place.write_to is None:
            return run.finish("error", run.refusal)
        return run.write(place.write_to)
    if expected is None:
        return run.finish("missing", run.missing_message)
    if run.passed:
        return run.finish("passed")
    return run.finish("failed", lambda: run.failure_message(expected))


class _Run:
    """The state of one :func:`run_check` call (kept off the public surface)."""

    def __init__(
        self,
        settings: Settings,
        request: CheckRequest,
        commands: Commands | None,
        place: golden.Placement,
    ) -> None:
        self.settings, self.request, self.commands, self.place = settings, request, commands, place
        self.expected: golden.Golden | None = None
        self.comparison: Comparison | None = None
        self.plain: list[str] = []
        self.profile = tolerances.check_profile(
            request.profile or request.meta.get("profile") or tolerances.DEFAULT_PROFILE,
            "the check's profile",
        )
        kind = request.obtained.kind
        # Why the profile does not judge this kind ("" when it does): such a check is
        # written when missing, never compared; its sidecar keeps the exact bounds
        # that judge it under the exact profile.
        self.unjudged = not_judged(kind, self.profile)
        self.tolerance = tolerances.resolve(
            kind,
            calibrated(settings.calibration, kind, self.profile),  # under the test's own
            request.tolerance,
            cross_backend=place.cross,
            profile=tolerances.DEFAULT_PROFILE if self.unjudged else self.profile,
        )
        self.golden_rel = self._rel(place.target)
        self.images: dict[str, str] = {}
        self.suggested: list[str] = []  # the commands the message suggests

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.settings.golden_dir).as_posix()

    @property
    def passed(self) -> bool:
        return self.comparison is not None and self.comparison.passed

    # ------------------------------------------------------------------ steps
    def load_expected(self) -> tuple[golden.Golden | None, str]:
        if self.place.existing is None:
            return None, ""
        try:
            self.expected = golden.load(self.place.existing, kind=self.request.obtained.kind)
        except GoldenError as e:
            return None, str(e)
        meta = sidecars.with_class_names(self.request.meta, self.expected.sidecar)
        self.request = replace(self.request, meta=meta)  # the golden's names, unless given
        return self.expected, ""

    def compare(self, expected: golden.Golden) -> None:
        self.plain += what_changed(expected.sidecar, self.request.meta)
        boxes, mismatch = self._boxes(expected.artifact)
        given = self.request.obtained.regions
        regions, changed = regions_lib.settle(expected.artifact.regions, given)
        if given is None and regions is not None:  # inherited, as boxes are
            obtained = self.request.obtained.with_regions(regions)
            self.request = replace(self.request, obtained=obtained)
        mismatch = mismatch or changed
        if mismatch:
            self.plain.append(mismatch)
            return
        self.comparison, mismatch = _compare(expected.artifact, self.request.obtained, self, boxes)
        if mismatch:
            self.plain.append(mismatch)

    def _boxes(self, expected: Artifact) -> tuple[np.ndarray | None, str]:
        """The object boxes both sides are measured in, or a plain mismatch.

        The golden's boxes are part of its content. A check that gives none inherits
        them (so later runs need not repeat them, and an update keeps them); a check
        that gives other boxes no longer matches its golden; a golden written without
        boxes is measured in the check's boxes (the images are the same ones unless
        the input fingerprint line says otherwise)."""
        stored, given = expected.boxes, self.request.obtained.boxes
        if given is None and stored is not None:
            self.request = replace(self.request, obtained=self.request.obtained.with_boxes(stored))
            return stored, ""
        if given is not None and stored is not None and not np.array_equal(given, stored):
            return None, (
                f"object boxes changed: the golden holds {boxes_text(stored)}, the check "
                f"gives {boxes_text(given)} (rewrite the golden to keep the new boxes)"
            )
        if given is not None and stored is None and self.profile != tolerances.DEFAULT_PROFILE:
            self.plain.append(
                "the golden holds no object boxes: its maps are measured in this check's boxes"
            )
        return given, ""

    def wants_write(self, expected: golden.Golden | None) -> bool:
        update = self.settings.update
        if update is None:
            return False
        if expected is None:
            return True
        if not self.passed:
            return update in ("failed", "all")
        changed = self.request.obtained.content_sha256() != expected.artifact.content_sha256()
        return update == "all" and changed

    def not_judged(self, expected: golden.Golden | None) -> CheckResult:
        """A kind the profile does not judge: written when missing (or, with
        ``update=all``, when changed), else skipped with the reason."""
        update = self.settings.update
        changed = (
            expected is not None
            and self.request.obtained.content_sha256() != expected.artifact.content_sha256()
        )
        if update is not None and (expected is None or (update == "all" and changed)):
            if self.place.write_to is None:
                return self.finish("error", self.refusal)
            return self.write(self.place.write_to)
        if expected is None:
            return self.finish("missing", self.missing_message)
        r = self.request
        return self.finish(
            "skipped",
            lambda: f"convviz check {r.name!r} ({r.obtained.kind}) not judged: {self.unjudged}",
        )

    @property
    def _meta(self) -> dict[str, Any]:
        """The sidecar facts of a write: the request's, and the profile it ran under."""
        return {**self.request.meta, "profile": self.profile}

    def write(self, base: Path) -> CheckResult:
        # A golden no later run could pass is refused before anything is written.
        problem = golden.unwritable(
            self.request.obtained,
            self.tolerance,
            profile=tolerances.DEFAULT_PROFILE if self.unjudged else self.profile,
        )
        if problem:
            name = self.request.name
            return self.finish(
                "error", lambda: f"convviz check {name!r}: refusing to write its golden: {problem}."
            )
        meta = {**self._meta, "tolerance": self.tolerance.to_dict()}
        paths = golden.save(base, self.request.obtained, meta, inputs=self.request.thumbnail())
        self.golden_rel = self._rel(base)
        return self.finish("written", written=list(paths.values()))

    def finish(
        self,
        status: str,
        message: Callable[[], str] | None = None,
        written: list[Path] | None = None,
    ) -> CheckResult:
        """Record the outcome (and, with a results dir, the obtained arrays and images
        the message points to), then write the message."""
        touched = {self._rel(self.place.target), self.golden_rel}
        outcome = CheckResult(status, "", self.comparison, self.golden_rel, written or [], touched)
        if self.settings.results_dir is not None:
            self._record_results(outcome)
        outcome.message = message() if message is not None else ""
        outcome.entry.update(self._entry(outcome))
        return outcome

    # ------------------------------------------------------------------ the record
    def _entry(self, outcome: CheckResult) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "judgment": "golden",
            "check": self.request.name,
            "kind": self.request.obtained.kind,
            "profile": self.profile,
            "backend": self.request.backend,
            "golden": outcome.golden,
            "rel": self.request.rel.as_posix(),
            "status": outcome.status,
            "message": outcome.message,
        }
        if self.profile != tolerances.DEFAULT_PROFILE:  # which bounds judged it
            entry["bounds"] = bounds_text(self.settings.calibration)
        if self.comparison is not None:
            details = self.comparison.details
            entry["metrics"] = {k: m.to_dict() for k, m in self.comparison.metrics.items()}
            entry["details"] = {k: v for k, v in details.items() if k != "per_item"}
            # per layer / image / filter, so a report shows where a change begins
            entry["per_item"] = dict(list(details.get("per_item", {}).items())[:MAX_ITEMS])
        if self.request.meta.get("class_names"):  # the report's tables name the classes
            entry["class_names"] = list(self.request.meta["class_names"])
        entry["commands"] = list(dict.fromkeys(self.suggested))
        results = self.settings.results_dir
        if results is not None and outcome.status in ("failed", "missing") and self.request.label:
            label = f"{self.request.label} :: {self.request.name}"
            # A non-reference backend's result can only be kept as its own override.
            fork = " --override" if self.request.backend != self.settings.reference else ""
            entry["commands"].append(
                f"convviz-check golden accept {shlex.quote(str(results))} -k "
                f"{shlex.quote(label)}{fork}"
            )
        return entry

    def _record_results(self, outcome: CheckResult) -> None:
        results = self.settings.results_dir
        assert results is not None
        obtained = self.request.obtained
        base = golden.inside(results, "obtained/" + outcome.golden)
        thumbnail = self.request.thumbnail()
        golden.save(base, obtained, self._meta, inputs=thumbnail, warn_large=False)
        outcome.entry["obtained"] = base.relative_to(results).as_posix()
        layer = None
        if self.comparison is not None and obtained.layout == "activations":
            layer = self.comparison.details.get("worst_item")
        expected = self.expected.artifact if self.expected is not None else None
        expected_inputs = None
        if self.place.existing is not None:
            expected_inputs = golden.read_inputs(self.place.existing)
        order = shown_images(self.comparison, obtained)  # the worst images first
        if order is not None:
            outcome.entry["shown"] = [f"image {i}" for i in order]
        self.images, diff_scale, each = write_pictures(
            golden.inside(results, "images/" + outcome.golden),
            obtained,
            expected,
            layer=layer,
            inputs=thumbnail,
            expected_inputs=expected_inputs if expected_inputs is not None else thumbnail,
            order=order,
            images=self.request.inputs,
            every=self.comparison if outcome.status == "failed" else None,  # each image
        )
        outcome.entry.update(images=self.images, **each)
        if diff_scale is not None:
            outcome.entry["diff_scale"] = diff_scale

    # ------------------------------------------------------------------ messages
    def _command(self, mode: str, **kwargs: Any) -> str:
        if self.commands is None:
            return ""
        command = self.commands.update(mode, **kwargs)
        self.suggested.append(command)
        return command

    def refusal(self) -> str:
        s, r = self.settings, self.request
        lines = [
            f"convviz check {r.name!r}: refusing to write the golden under backend {r.backend!r}.",
            f"Goldens are owned by the reference backend {s.reference!r} (ini "
            "convviz_golden_backend); other backends only compare against them with "
            "cross-backend bounds.",
        ]
        mode = s.update or "failed"
        if self.commands is not None:
            lines += [
                "Write it under the reference backend:",
                f"  {self._command(mode, backend=s.reference)}",
                f"or write an explicit {r.backend}-only override at "
                f"{golden.scoped(r.rel, r.backend).as_posix()}.npz:",
                f"  {self._command(mode, override=True)}",
            ]
        return "\n".join(lines)

    def missing_message(self) -> str:
        s, r = self.settings, self.request
        same = r.backend == s.reference
        lines = [f"convviz check {r.name!r}: golden file missing: {self.place.target}.npz"]
        if self.commands is None:
            return lines[0]
        route = self.commands.ci_route()
        if route:
            lines.append(route)
        lines += [
            "Write it " + ("on a developer machine " if route else "") + "with:",
            "  " + self._command("missing", backend=None if same else s.reference),
        ]
        if not same:
            lines.append(
                f"(goldens are written by the reference backend {s.reference!r}; this run "
                f"uses {r.backend!r}. A {r.backend}-only override: "
                + self._command("missing", override=True)
                + ")"
            )
        return "\n".join(lines)

    def failure_message(self, expected: golden.Golden) -> str:
        r, cross = self.request, self.place.cross
        writer = expected.sidecar.get("backend") or "?"
        retrain = self.profile != tolerances.DEFAULT_PROFILE
        what = f"{r.obtained.kind}, profile {self.profile}" if retrain else r.obtained.kind
        lines = [f"convviz check {r.name!r} ({what}) does not match its golden."]
        text = self.comparison.text.splitlines() if self.comparison is not None else []
        names = r.meta.get("class_names") or expected.sidecar.get("class_names")
        lines += cause_first(expected.artifact, r.obtained, self.plain + text, names, retrain)
        lines += [f"note: {r.note}"] if r.note else []  # a GradCAM's, a pattern ascent's
        bounds = "cross-backend bounds" if cross else "same-backend bounds"
        if retrain:
            bounds = f"the {self.profile} profile's {bounds_text(self.settings.calibration)}"
        lines.append(
            f"golden: {self.place.target}.npz (written by {writer}; compared with {bounds})"
        )
        if not retrain and r.obtained.kind == "heatmap" and _model_changed(expected, r.meta):
            lines.append(
                "if the model was retrained on purpose, judge this check with the retrain "
                "profile (--convviz-profile=retrain, ini convviz_profile, or the marker "
                "convviz(profile='retrain')): its bounds absorb what a retrain moves"
            )
        if self.images:
            lines.append(
                "images: " + ", ".join(f"{role} {path}" for role, path in self.images.items())
            )
        else:
            lines.append("images: pass --convviz-results-dir=DIR for expected/obtained/diff PNGs")
        if self.commands is None:
            return "\n".join(lines)
        route = self.commands.ci_route()
        if route:
            lines.append(route)
        if not cross:
            lines.append("accept the new result: " + self._command("failed"))
        else:
            # The reference backend's golden cannot be rewritten here: a real change is
            # regenerated under the reference backend; only a backend that legitimately
            # differs keeps its own override (which forks the goldens).
            lines.append(
                "if the model or the code changed, regenerate the golden under the "
                f"reference backend: {self._command('failed', backend=self.settings.reference)}"
            )
            lines.append(
                f"only if {r.backend} legitimately differs, keep a {r.backend}-only "
                f"override: {self._command('failed', override=True)}"
            )
        return "\n".join(lines)


def attach_boxes(artifact: Artifact, boxes: Any, source: str = "boxes") -> Artifact:
    """``artifact`` holding one object box per heatmap, checked (see
    :func:`convviz_check.metrics.check_boxes`); None leaves it as it is.

    Boxes are in input-image pixels: a GradCAM knows its input size; a bare
    ``(N, h, w)`` array is taken to be at image resolution.

    Raises:
        LocalizationError: boxes on something other than heatmaps, not one per map,
            or not inside the image.
    """
    if boxes is None:
        return artifact
    maps, shape = regions_lib.heatmap_maps_and_shape(artifact, source)
    n = 1 if maps.ndim == 2 else int(maps.shape[0])
    return artifact.with_boxes(check_boxes(boxes, n, shape, source))


def _model_changed(expected: golden.Golden, meta: dict[str, Any]) -> bool:
    old, new = expected.sidecar.get("model_fingerprint"), meta.get("model_fingerprint")
    return bool(old and new and old != new)


def _compare(
    expected: Artifact, obtained: Artifact, run: _Run, boxes: np.ndarray | None = None
) -> tuple[Comparison | None, str]:
    """(Comparison or None, a plain description when the two cannot be compared)."""
    if expected.layout == "activations" and obtained.layout == "activations":
        missing = [k for k in expected.arrays if k not in obtained.arrays]
        added = [k for k in obtained.arrays if k not in expected.arrays]
        if missing or added:
            parts = ([f"missing {missing}"] if missing else []) + (
                [f"new {added}"] if added else []
            )
            return None, "layers changed: " + "; ".join(parts)
    if expected.layout != obtained.layout:
        return None, (
            f"value type changed: the golden holds {expected.layout!r}, the check got "
            f"{obtained.layout!r}"
        )
    try:
        comparison = compare(
            comparable(expected),
            comparable(obtained),
            obtained.kind,
            run.tolerance,
            cross_backend=run.place.cross,
            profile=run.profile,
            boxes=boxes,
            regions=obtained.regions,  # the retrain profile measures each map's mass there
        )
    except (ComparisonError, LocalizationError) as e:
        before, after = _value_shapes(expected), _value_shapes(obtained)
        if before != after:
            return None, f"shape changed: golden {before}, obtained {after}"
        return None, f"cannot be compared with its golden: {e}"
    return comparison, ""


def _value_shapes(artifact: Artifact) -> dict[str, tuple[int, ...]]:
    return {k: v for k, v in artifact.shapes().items() if k != BOXES}
