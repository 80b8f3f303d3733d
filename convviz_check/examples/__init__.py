"""Examples shipped with the package: the "scenes" dataset and two models trained on it.

No pretrained weights can be downloaded here, so the package makes its own from a
seed: :func:`make_scenes` draws coloured shapes on textured backgrounds, and
``python -m convviz_check.examples.train`` trains a chapter-style convnet and a tiny
keras-hub Xception on them, accepts each only when accuracy >= 95% AND a plain Grad-CAM
points inside the object's box in >= 90% of 200 fresh scenes, and writes them under
``examples/models/``. Their sha256 are recorded in :data:`MODEL_SHA256`: goldens key on
the weights, so retraining is a deliberate act that shows up in a diff.

Importing this package imports NumPy only; Keras is imported by
:func:`load_example_model`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError
from .scenes import CLASS_NAMES, IMAGE_SHAPE, Scenes, make_scenes, render_scene, scenes_sha256

MODELS_DIR = Path(__file__).resolve().parent / "models"
MODEL_NAMES: tuple[str, ...] = ("convnet", "xception")

# sha256 of the committed model files (directories: see train.tree_sha256). Written by
# hand from the output of `python -m convviz_check.examples.train`.
MODEL_SHA256: dict[str, str] = {
    "convnet": "26c6c0529c0e0be3bfc4bed3e50c9d41bbfab96ac51119221f99985058e6b38b",
    "xception": "03d59a91a825b9084755cf5c0b524fba19070f02c99842b5674a826c88bc14ca",
    "xception_preset": "d0bfb043adb70ae0f277e1d45806ac8b2abb78ac38a3617cf9ee0599de22e85d",
}

__all__ = [
    "CLASS_NAMES",
    "IMAGE_SHAPE",
    "MODEL_NAMES",
    "MODEL_SHA256",
    "Scenes",
    "load_example_model",
    "make_scenes",
    "model_path",
    "preset_dir",
    "render_scene",
    "scenes_sha256",
]


def _check_name(name: str) -> str:
    if name not in MODEL_NAMES:
        raise InputError(
            f"Unknown example model. Received: name={name!r}. Expected one of {MODEL_NAMES}."
        )
    return name


def model_path(name: str) -> Path:
    """Path of the bundled ``.keras`` file of model ``name`` (``"convnet"`` or ``"xception"``).

    Example:
        >>> cc.load_model(model_path("convnet"))
    """
    return MODELS_DIR / f"{_check_name(name)}.keras"


def preset_dir(name: str = "xception") -> Path:
    """Path of the keras-hub preset directory of model ``name`` (only ``"xception"``).

    Example:
        >>> keras_hub.models.ImageClassifier.from_preset(str(preset_dir("xception")))
    """
    if name != "xception":
        raise InputError(
            f"Only the xception example has a keras-hub preset. Received: name={name!r}."
        )
    return MODELS_DIR / "xception_preset"


def load_example_model(name: str) -> Any:
    """Load bundled model ``name`` under the running backend (through ``cc.load_model``).

    Args:
        name: ``"convnet"`` or ``"xception"``.

    Returns:
        A ``keras.Model`` taking ``(N, 64, 64, 3)`` float32 in [0, 1], softmax output.

    Example:
        >>> model = load_example_model("convnet")
        >>> model.predict(make_scenes(4, seed=7).floats).shape
        (4, 4)
    """
    from ..models import load_model

    path = model_path(name)
    if name == "xception":
        # The .keras file names keras-hub classes; importing keras_hub registers them.
        import keras_hub  # noqa: F401
    return load_model(path)
