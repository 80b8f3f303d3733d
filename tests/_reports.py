"""Inputs shared by the report tests (not a test module): a heatmap check's request
and a cross-backend report whose arrays the pictures are drawn from."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

import numpy as np

from convviz_check.artifacts import Artifact
from convviz_check.checks import CheckRequest
from convviz_check.crossbackend import agreement as ag
from convviz_check.types import GradCAM


def heatmap_request(cam: GradCAM, images: np.ndarray, class_names: Sequence[str]) -> CheckRequest:
    """The retrain-profile check ``cam`` of ``test_x.py::test_cam`` on ``images``, with
    ``class_names`` in its sidecar (as the fixture passes the configured names)."""
    return CheckRequest(
        "cam",
        PurePosixPath("test_x.py/test_cam/cam"),
        Artifact.from_value(cam),
        "tensorflow",
        inputs=images,
        label="test_x.py::test_cam",
        profile="retrain",
        meta={"class_names": list(class_names)},
    )


def agreement_report(classes: Sequence[int] = (2, 0, 2)) -> ag.AgreementReport:
    """A two-backend Grad-CAM agreement report (tensorflow, jax: the same maps) that
    explains ``classes``, one per image."""
    n = len(classes)
    heat = np.random.default_rng(0).uniform(0, 1, (n, 5, 5)).astype(np.float32)
    heat /= heat.max(axis=(1, 2), keepdims=True)
    cam = GradCAM(
        heatmap=heat,
        raw=heat,
        class_index=np.asarray(classes),
        score=np.ones(n, np.float32),
        score_kind="logit",
        layer="conv",
        degenerate=np.zeros(n, bool),
        image_shape=(12, 12),
    )
    results = {"gradcam": Artifact.from_value(cam)}
    backends = ("tensorflow", "jax")
    return ag.build_report("m.keras", backends, ("gradcam",), dict.fromkeys(backends, results))
