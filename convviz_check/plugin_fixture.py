"""The object the ``convviz`` fixture returns: compute shortcuts, golden checks and
assertions for one test.

Imported the first time a test asks for the fixture (it imports Keras through the
compute functions), never at collection.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from . import golden, tolerances
from .artifacts import Artifact
from .backends import current_backend, framework_versions
from .checks import CheckRequest, attach_boxes, run_check
from .errors import InputError
from .explain.pattern_response import with_record
from .models import model_fingerprint
from .plugin_agreement import _POOL as _POOL
from .plugin_agreement import session_pool as session_pool
from .plugin_options import chosen_regions
from .plugin_session import (
    NOT_JUDGED,
    PytestCommands,
    cpu_facts,
    nodeid_parts,
    session_state,
)
from .regions import attach_regions
from .storage import sanitize_part
from .types import Outcome

if TYPE_CHECKING:
    from .explain.activations import activations as _activations
    from .explain.cam import cam as _cam
    from .explain.filters import filter_patterns as _filter_patterns
    from .explain.gradcam import gradcam as _gradcam
    from .models import load_model as _load_model


class _Shortcut:
    """A compute function of the library, imported on first use (a test that only
    checks arrays never imports Keras) and called through the fixture, which remembers
    the model and images it saw. The bound function keeps the library function's
    name, signature and docstring."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __get__(self, fixture: ConvvizFixture | None, owner: type) -> Callable[..., Any]:
        fn = getattr(importlib.import_module(self.module, __package__), self.name)
        if fixture is None:
            return fn
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            # Rollout reads every attention layer: a project's chosen layer is not for it.
            rollout = bound.arguments.get("method") == "rollout"
            cam_like = self.name in ("gradcam", "cam") and not rollout
            if cam_like and bound.arguments.get("layer") is None:
                layer = _Shortcut.chosen_layer(fixture, bound.arguments.get("model"))
                if layer is not None:
                    bound.arguments["layer"] = layer
                    args, kwargs = bound.args, bound.kwargs
            fixture._last_model = bound.arguments.get("model")
            images = bound.arguments.get("images")
            fixture._last_images = None if images is None else _input_fingerprint(images)
            fixture._last_inputs = None if images is None else np.asarray(images)
            return fn(*args, **kwargs)

        return call

    @staticmethod
    def chosen_layer(fixture: ConvvizFixture, model: Any) -> str | None:
        """The test's Grad-CAM layer: marker ``convviz(gradcam_layer=...)`` >
        ``--convviz-gradcam-layer`` > ini ``convviz_gradcam_layer``, checked on
        ``model``; None when none is set."""
        from .graph.targets import check_chosen_layer

        marker = fixture.node.get_closest_marker("convviz")
        if marker is not None and marker.kwargs.get("gradcam_layer") is not None:
            return check_chosen_layer(
                model, marker.kwargs["gradcam_layer"], "the marker convviz(gradcam_layer=...)"
            )
        cli = fixture.config.getoption("--convviz-gradcam-layer", default=None)
        ini = None if cli else (fixture.config.getini("convviz_gradcam_layer") or None)
        if cli is None and ini is None:
            return None
        source = "--convviz-gradcam-layer" if cli else "the ini key convviz_gradcam_layer"
        return check_chosen_layer(model, cli or ini, source)


def _class_names_meta(fixture: ConvvizFixture, given: Any) -> dict[str, Any]:
    """``{"class_names": [...]}`` for a check's sidecar: ``check(class_names=)`` >
    ``convviz.class_names`` > ini ``convviz_class_names`` (a file, relative to the ini
    file); ``{}`` when none is set."""
    from .class_names import check_class_names, read_class_names

    if given is not None:
        return {"class_names": check_class_names(given, "check(class_names=...)")}
    if fixture.class_names is not None:
        return {"class_names": check_class_names(fixture.class_names, "convviz.class_names")}
    ini = fixture.config.getini("convviz_class_names") or None
    if ini is None:
        return {}
    base = fixture.config.inipath.parent if fixture.config.inipath else fixture.config.rootpath
    return {"class_names": read_class_names(base / str(ini))}


def _input_fingerprint(images: Any) -> str:
    arr = np.ascontiguousarray(np.asarray(images))
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


class ConvvizFixture:
    """Compute shortcuts bound to the running backend, golden checks and assertions:
    what the ``convviz`` fixture returns.

    Compute (the library's functions, same signatures; the model and images they see
    are fingerprinted into the next check's sidecar):
        gradcam(model, images, class_index=None, layer=None, score="auto",
            preprocess=False, batch_size=None, output=None, token_grid=None): Grad-CAM
            (``token_grid``: a vision transformer's grid, see ``cc.cam``); without
            ``layer=`` the marker ``convviz(gradcam_layer=...)`` >
            ``--convviz-gradcam-layer`` > ini ``convviz_gradcam_layer`` > the automatic
            layer (a class-score map of an all-convolutional head warns).
        cam(model, images, method="gradcam", class_index=None, layer=None,
            score="auto", preprocess=False, batch_size=None, output=None,
            token_grid=None, **method_options): the CAM family (same layer rule);
            ``method="rollout"``: attention rollout of a vision transformer.
        activations(model, images, layers=None, batch_size=32): per-layer maps.
        filter_patterns(model, layer, filters=None, steps=None, learning_rate=None,
            size=None, seed=0, batch_size=None, input_range=None, progress=None,
            parameterization="pixel", decorrelate=None, transforms=None,
            penalties=None, objective="channel"): the input each filter responds to
            most (gradient ascent; ``parameterization="fft"``: the robust preset).
        load_model(source, safe_mode=True, custom_objects=None): a Keras model.

    Golden checks:
        check(name, value, kind=None, tolerance=None, *, dtype=None, layers=None,
            model=None, boxes=None, class_names=None, regions=None, images=None): compare
            with the golden (or write it in an update run); ``boxes`` are the object boxes
            a heatmap golden keeps, ``regions`` its suspect regions (name -> Box; marker
            ``convviz(regions=...)`` > ini ``convviz_regions``), ``class_names`` name
            the classes in its failure message, ``images`` a pattern golden's record.
        class_names: the model's class names for every check of the test (a list;
            default: ini ``convviz_class_names``, a file).

    Assertions (each recorded in the report, passed or failed; ``name=`` names it):
        assert_localized(cam_or_heatmap, target, pointing=True, min_energy=None,
            min_iou=None, *, image=None, image_shape=None, tolerance_px=0,
            threshold=0.15, name=None): the heatmap lands on ``target`` (a ``Box`` or
            a mask).
        assert_faithful(model, images, cam, *, metric="insertion", margin=0.05,
            seed=0, baseline=None, steps=32, class_index=None,
            against=("random", "wrong_class"), wrong_map=None, batch_size=None,
            output=None, name=None): the map beats a random map and the wrong class's
            map at insertion (or deletion).
        assert_randomization(model, images, *, layers_to_reinit=None,
            max_correlation=0.5, class_index=None, layer=None, score="auto", seed=0,
            repeats=3, method="gradcam", method_options=None, name=None): the maps
            change when the head is re-initialized (they depend on what was learned).
        assert_backends_agree(model_source, images, *, backends=None, tolerance=None,
            what=("activations", "gradcam", "filters"), layers=None, class_index=None,
            gradcam_layer=None, score="auto", preprocess=False, cam_method="gradcam",
            cam_options=None, filters_layer=None, filters=8, filter_steps=30,
            filter_size=None, learning_rate=None, seed=0, input_range=None,
            safe_mode=True, custom_objects=None, timeout=None, token_grid=None, pool=None,
            name=None):
            the backends agree (``cc.agreement``); backends: the argument > marker
            ``convviz(backends=...)`` > ``--convviz-backends`` > ini.
        check_counterfactual(name, model, images, *, cue, at="bottom_right", margin=0,
            reference=None, classes=None, max_rate_increase=0.2,
            max_mass_increase=0.15, cell_margin=1, method="gradcam", **cam_kwargs):
            the cue pasted into images of other classes flips no more of them towards
            one class, and draws no more of the map onto itself, than on the golden
            model (``reference``: its statistics, model, or a ``.json`` an update run
            writes).

    Facts:
        backend: the running Keras backend.
        results_dir: ``--convviz-results-dir`` (CLI > ini), resolved, or None.
    """

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request
        self.node = request.node
        self.config = request.config
        self._names: set[str] = set()
        self._fingerprints: dict[int, tuple[Any, str]] = {}
        self._last_model: Any = None
        self._last_images: str | None = None
        self._last_inputs: np.ndarray | None = None
        self._localized_calls = 0
        self._agreement_calls = 0
        self._faithful_calls = 0
        self._randomization_calls = 0

    # The model's class names for failure messages (a list, one per class); see check().
    class_names: list[str] | None = None

    if TYPE_CHECKING:  # the real signatures, for type checkers and IDEs
        activations = staticmethod(_activations)
        filter_patterns = staticmethod(_filter_patterns)
        gradcam = staticmethod(_gradcam)
        cam = staticmethod(_cam)
        load_model = staticmethod(_load_model)
    else:
        activations = _Shortcut(".explain.activations", "activations")
        filter_patterns = _Shortcut(".explain.filters", "filter_patterns")
        gradcam = _Shortcut(".explain.gradcam", "gradcam")
        cam = _Shortcut(".explain.cam", "cam")
        load_model = _Shortcut(".models", "load_model")

    @property
    def backend(self) -> str:
        """The running Keras backend."""
        return current_backend()

    # ------------------------------------------------------------------ golden checks
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
        boxes: Any = None,
        class_names: Any = None,
        regions: Any = None,
        images: Any = None,
    ) -> None:
        """Compare ``value`` with its golden file (or write it in an update run).

        Args:
            name: the check's name, unique within the test (it names the file).
            value: an array, a dict of arrays (kind ``"activation"``) or a ``GradCAM``
                (kind ``"heatmap"``).
            kind: ``"activation"``, ``"heatmap"`` or ``"pattern"``; inferred for dicts,
                GradCAM and 2-D/3-D arrays, required for a bare 4-D array (filter
                patterns: ``kind="pattern"``).
            tolerance: a ``Tolerance`` or dict of its fields; overrides the marker
                ``convviz(tolerance=...)``, which overrides the default table.
            dtype: storage dtype of new goldens: ``"float32"`` (default) or ``"float16"``.
            layers: for a dict, the layers to store and compare (keeps goldens small).
            model: the model that produced ``value`` (default: the model of the last
                compute shortcut called); its weight fingerprint goes into the sidecar,
                and a changed fingerprint leads the failure message.
            boxes: heatmaps only: the object box of each image (a list of ``Box`` or an
                ``(N, 4)`` int array y0, x0, y1, x1 in input-image pixels), stored with
                the golden; the ``retrain`` profile judges the energy in them and the
                pointing game. Later runs may omit them (the golden's are used).
            class_names: the model's class names (a list, one per class) that the
                failure message prints next to class indices, stored in the sidecar;
                default ``convviz.class_names``, else the ini key
                ``convviz_class_names`` (a file), else the golden's.
            regions: heatmaps only: suspect regions where a shortcut may hide, the same
                for every image: a mapping name -> ``Box`` (or 4 ints y0, x0, y1, x1 in
                input-image pixels), each name an identifier (not ``box``, ``outside``,
                ``border`` or a corner's name), stored with the golden; the ``retrain``
                profile measures each map's mass in them. Default: the marker
                ``convviz(regions=...)``, else the ini key ``convviz_regions``, else the
                golden's (later runs may omit them).
            images: filter patterns: the images the retrain profile judges them on.

        The gate profile: the marker ``convviz(profile=...)`` >
        ``--convviz-profile`` > ini ``convviz_profile`` > ``"exact"``.

        Example:
            >>> def test_cam(convviz, model, images):  # doctest: +SKIP
            ...     cam = convviz.gradcam(model, images)
            ...     convviz.check("cam", cam)
        """
        __tracebackhide__ = True
        state = session_state(self.config)
        self._claim_name(name)
        obtained = Artifact.from_value(value, kind, dtype=dtype, layers=layers)
        obtained = attach_boxes(obtained, boxes, "convviz.check(boxes=...)")
        given, source = chosen_regions(self.config, self.node, regions)
        if regions is not None or obtained.kind == "heatmap":  # marker, ini: heatmaps only
            obtained = attach_regions(obtained, given, source)
        test_file, test_name = nodeid_parts(self.node.nodeid, self.node.name)
        marker = self.node.get_closest_marker("convviz")
        marked_profile = marker.kwargs.get("profile") if marker else None
        profile = tolerances.check_profile(
            marked_profile or state.profile,
            "convviz(profile=...)" if marked_profile else "--convviz-profile / convviz_profile",
        )
        request = CheckRequest(
            name=name,
            rel=golden.relative_path(test_file, test_name, name),
            obtained=obtained,
            backend=state.current_backend(),
            tolerance=tolerances.merge(
                state.project_tolerance(obtained.kind),
                tolerances.as_tolerance(
                    marker.kwargs.get("tolerance") if marker else None, "convviz(tolerance=...)"
                ),
                tolerances.as_tolerance(tolerance),
            ),
            meta={**self._meta(model), **_class_names_meta(self, class_names)},
            inputs=self._last_inputs if model is None else None,
            label=self.node.nodeid,
            profile=profile,
            note=str(getattr(value, "note", "") or ""),
        )
        request = with_record(request, value, model, images)  # filter patterns: retrain
        outcome = run_check(state.settings, request, PytestCommands(state, self.node.nodeid))
        if outcome.status == "skipped":  # the test is reported skipped once it has run
            self.node.stash.setdefault(NOT_JUDGED, []).append(outcome.message)
        state.touched.update(outcome.touched)
        if outcome.status == "written":
            state.written.append(outcome.golden + ".npz")
        state.entries.append({"nodeid": self.node.nodeid, **outcome.entry})
        if not outcome.ok and not (state.measuring and outcome.status == "failed"):
            pytest.fail(outcome.message)

    def _claim_name(self, name: str) -> None:
        """Refuse a name that is empty, cannot be a check's file name
        (:func:`golden.check_file_name`: no leading '.', no golden suffix at the end)
        or is already used in this test, also up to case (one file on a
        case-insensitive file system)."""
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"convviz.check needs a non-empty name. Received: name={name!r}")
        safe = golden.check_file_name(name)  # raises for a name that cannot be one
        assert safe == sanitize_part(name)  # the one sanitizer decides the stored name
        if safe.casefold() in self._names:
            raise InputError(
                f"Check names must be unique within a test (compared as stored, up to case: "
                f"one file on a case-insensitive file system). Received: name={name!r}"
                + (f", stored as {safe!r}," if safe != name else "")
                + f" after a check stored the same way in {self.node.nodeid}."
            )
        self._names.add(safe.casefold())

    def _fingerprint(self, model: Any) -> str | None:
        if model is None:
            return None
        if isinstance(model, str):
            return model
        if id(model) not in self._fingerprints:  # the model is kept so its id stays unique
            self._fingerprints[id(model)] = (model, model_fingerprint(model))
        return self._fingerprints[id(model)][1]

    def _meta(self, model: Any) -> dict[str, Any]:
        try:
            versions = framework_versions()
        except Exception as e:  # noqa: BLE001 - a sidecar fact must not block a check
            versions = {"error": f"{type(e).__name__}: {e}"}
        return {
            "backend": current_backend(),
            "versions": versions,
            "cpu": cpu_facts(),
            "model_fingerprint": self._fingerprint(
                model if model is not None else self._last_model
            ),
            "input_fingerprint": self._last_images if model is None else None,
        }

    # ------------------------------------------------------------------ assertions
    @property
    def results_dir(self) -> str | None:
        """``--convviz-results-dir`` (CLI > ini), resolved, or None."""
        state = session_state(self.config)
        return str(state.results_dir) if state.results_dir is not None else None

    def assert_localized(self, cam_or_heatmap: Any, target: Any, **kwargs: Any) -> Outcome:
        """Assert a heatmap lands on ``target`` (a ``Box`` or a mask); keyword arguments
        as :func:`convviz_check.localization.assert_localized` (``pointing``,
        ``min_energy``, ``min_iou``, ``image``, ``image_shape``, ``tolerance_px``,
        ``threshold``; ``name`` names the result in the report, default
        ``localized-<n>``). The result (metrics, overlay) is recorded in the report,
        passed or failed; a failure's message names the overlay's path.

        Returns:
            The :class:`~convviz_check.types.Outcome` (when it passes).
        """
        __tracebackhide__ = True
        from .localization import judge_localized

        self._localized_calls += 1
        name = kwargs.pop("name", None) or f"localized-{self._localized_calls}"
        if "results_dir" in kwargs:
            raise InputError(
                "convviz.assert_localized writes its overlay to --convviz-results-dir. "
                "Received: results_dir= (use convviz_check.localization.assert_localized "
                "for another directory)."
            )
        return self._record(judge_localized(cam_or_heatmap, target, **kwargs), name)

    def _record(self, outcome: Outcome, name: str) -> Outcome:
        """Record ``outcome`` for the report (its pictures written with a results dir),
        then fail the test when it is not ok."""
        __tracebackhide__ = True
        from .report.outcomes import entry_of

        state = session_state(self.config)
        if state.backend is None:  # the report names the backend (Keras never imported here)
            from .crossbackend.local import running_backend

            state.backend = running_backend()
        test_file, test_name = nodeid_parts(self.node.nodeid, self.node.name)
        entry = entry_of(
            outcome,
            nodeid=self.node.nodeid,
            name=name,
            rel=golden.relative_path(test_file, test_name, name),
            results_dir=state.results_dir,
        )
        state.entries.append(entry)
        if outcome.ok:
            return outcome
        message = outcome.text
        for role, path in (entry.get("images") or {}).items():
            message += f"\n  {role}: {path}"
        # An AssertionError, as the library's assert_* raise: a test may catch it and
        # judge a whole set (the gate example counts the images that miss).
        raise AssertionError(message)

    def assert_faithful(self, model: Any, images: Any, cam: Any, **kwargs: Any) -> Outcome:
        """Assert the map explains the model better than seeded random maps and the
        map of the least likely class (deletion or insertion AUC); keyword arguments
        as :func:`convviz_check.faithfulness.assert_faithful` (``metric``, ``margin``,
        ``seed``, ``baseline``, ``steps``, ``class_index``, ``against``,
        ``wrong_map``, ``batch_size``, ``output``; ``name`` names the result in the
        report, default ``faithful-<n>``). The result (the leads against their margin,
        the per-image AUCs) is recorded in the report, passed or failed.

        Returns:
            The :class:`~convviz_check.types.Outcome` (when it passes).
        """
        __tracebackhide__ = True
        from .faithfulness import check_faithful

        self._faithful_calls += 1
        name = kwargs.pop("name", None) or f"faithful-{self._faithful_calls}"
        return self._record(check_faithful(model, images, cam, **kwargs), name)

    def assert_randomization(self, model: Any, images: Any, **kwargs: Any) -> Outcome:
        """Assert the CAM maps depend on the learned weights (the model-randomization
        sanity check: re-initialize the head in a clone, the maps must change); keyword
        arguments as :func:`convviz_check.sanity.sanity_check_randomization`
        (``layers_to_reinit``, ``max_correlation``, ``class_index``, ``layer``,
        ``score``, ``seed``, ``repeats``, ``method``, ``method_options``; ``name``
        names the result in the report, default ``randomization-<n>``). The result is
        recorded in the report, passed or failed.

        Returns:
            The :class:`~convviz_check.types.Outcome` (when it passes).
        """
        __tracebackhide__ = True
        from .sanity import check_randomization

        self._randomization_calls += 1
        name = kwargs.pop("name", None) or f"randomization-{self._randomization_calls}"
        return self._record(check_randomization(model, images, **kwargs), name)

    def check_counterfactual(self, name: str, model: Any, images: Any, **kwargs: Any) -> Outcome:
        """Paste a cue (``cue=``, ``at=``, ``margin=``) into ``images`` and fail when it
        flips predictions towards one class, or draws the map onto itself, more than on
        the golden model (``reference=``: its statistics, a Keras model or path, or a
        ``.json`` file an update run writes); ``classes=`` names the classes, more
        keyword arguments as :func:`convviz_check.plugin_counterfactual.run_counterfactual`
        (``method``, bounds, ``**cam_kwargs``). Recorded in the report as ``name``.

        Returns:
            The :class:`~convviz_check.types.Outcome` (when it passes).
        """
        __tracebackhide__ = True
        from .plugin_counterfactual import run_counterfactual

        self._claim_name(name)
        names = _class_names_meta(self, kwargs.pop("classes", None)).get("class_names")
        update = session_state(self.config).update
        outcome = run_counterfactual(
            model,
            images,
            cam=self.cam,
            load_model=self.load_model,
            class_names=names,
            update=update,
            **kwargs,
        )
        return self._record(outcome, name)

    def assert_backends_agree(self, model_source: Any, images: Any, **kwargs: Any) -> Any:
        """Assert the backends agree on ``model_source`` for ``images``; keyword
        arguments go to :func:`convviz_check.agreement`.

        Backends: ``backends=`` > marker ``convviz(backends=...)`` >
        ``--convviz-backends`` > ini ``convviz_backends``. Tolerance: the argument's
        fields over the marker's. A missing backend skips with the reason, or fails with
        ``--convviz-require-backends`` / ``CONVVIZ_REQUIRE_BACKENDS=1``. With
        ``--convviz-export DIR`` nothing is compared here: the running backend's results
        are written to ``DIR`` for ``convviz-check agree --exported DIR``.

        The verdict (the table of every backend pair, the pictures of the backends side
        by side) is recorded in the report, passed or failed; ``name=`` names it there
        (default ``backends-agree-<n>``); the Grad-CAM picture names the explained
        classes with ``convviz.class_names``, else the ini key ``convviz_class_names``.

        Returns:
            The ``AgreementReport`` (None when exporting).
        """
        __tracebackhide__ = True
        from .plugin_agreement import compare_backends

        name = kwargs.pop("name", None)
        names = _class_names_meta(self, None).get("class_names")
        compared = compare_backends(self.node, model_source, images, kwargs, names)
        if compared is None:  # exported for `convviz-check agree --exported`
            return None
        report, outcome = compared
        self._agreement_calls += 1
        self._record(outcome, name or f"backends-agree-{self._agreement_calls}")
        return report
