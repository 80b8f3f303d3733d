"""The gate's fixtures: the model under test and the images it is judged on.

Copy this folder into your repository (see README.md), then replace
:func:`evaluation_set` with your own evaluation images, labels and object boxes. The
model comes from the command line or the ini file:

    pytest path/to/gate --convviz-model=models/classifier.keras
    # or, in path/to/gate/pytest.ini:  convviz_model = ../../models/classifier.keras
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import convviz_check as cc
from convviz_check.plugin import gate_model

# Images the golden and localization checks run on (Grad-CAM per image is the cost).
N_CHECKED = 16
# Images the accuracy is measured on (one forward pass: cheap).
N_ACCURACY = 200

_ACCURACY = pytest.StashKey[str]()


@dataclass(frozen=True)
class EvalImages:
    """What the gate judges a model on.

    Attributes:
        inputs: ``(N, H, W, C)`` exactly as the model takes them.
        labels: ``(N,)`` the true class of each image.
        boxes: the object in each image, a ``cc.Box`` in input pixels.
        pictures: ``(N, H, W, 3)`` uint8, what overlays are drawn on.
    """

    inputs: np.ndarray
    labels: np.ndarray
    boxes: list[cc.Box]
    pictures: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:  # failure reports show fixtures: keep the arrays out
        return f"EvalImages({len(self)} images, inputs {self.inputs.shape} {self.inputs.dtype})"

    def first(self, n: int) -> EvalImages:
        return EvalImages(self.inputs[:n], self.labels[:n], self.boxes[:n], self.pictures[:n])


@pytest.fixture(scope="session")
def model_source(pytestconfig: pytest.Config) -> str:
    """``--convviz-model`` or the ini key ``convviz_model`` (an error when neither is set)."""
    return gate_model(pytestconfig)


@pytest.fixture(scope="session")
def model(model_source: str) -> Any:
    """The model under test, loaded under the running Keras backend (safe mode)."""
    return cc.load_model(model_source)


@pytest.fixture(scope="session")
def evaluation_set() -> EvalImages:
    """Your evaluation images: replace this with your own data.

    Here: the shortcut example's *biased* evaluation set, scenes whose corner mark has
    the colour of the object's class, as in data collected where a spurious correlation
    holds. Every model of the example is equally accurate on it.
    """
    from convviz_check.examples.shortcut import biased_eval_set

    scenes = biased_eval_set(N_ACCURACY)
    return EvalImages(scenes.floats, scenes.labels, scenes.boxes, scenes.images)


@pytest.fixture(scope="session")
def images(evaluation_set: EvalImages) -> EvalImages:
    """The first :data:`N_CHECKED` evaluation images: what the golden and localization
    checks run on."""
    return evaluation_set.first(N_CHECKED)


@pytest.fixture(scope="session")
def accuracy(
    pytestconfig: pytest.Config, model_source: str, model: Any, evaluation_set: EvalImages
) -> float:
    """Top-1 accuracy on the evaluation set; printed at the end of the run."""
    probabilities = np.asarray(model.predict(evaluation_set.inputs, verbose=0))
    value = float((probabilities.argmax(axis=-1) == evaluation_set.labels).mean())
    pytestconfig.stash[_ACCURACY] = (
        f"{model_source}: accuracy {value:.3f} on {len(evaluation_set)} evaluation images"
    )
    return value


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    line = config.stash.get(_ACCURACY, None)
    if line is not None:
        terminalreporter.write_sep("-", "convviz gate")
        terminalreporter.write_line(line)
