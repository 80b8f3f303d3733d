"""What ``convviz.check_counterfactual`` computes: the predictions and maps of a model
on images with and without a pasted cue, the golden model's statistics, and the
judgment (:func:`convviz_check.counterfactual.judge_counterfactual`).

The fixture's method records the Outcome; this module imports no pytest. Keras is
reached through the compute functions it is given (the fixture's ``cam`` shortcut,
which applies the test's Grad-CAM layer) and the prediction helper.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .counterfactual import (
    DEFAULT_CELL_MARGIN,
    DEFAULT_MARGIN,
    DEFAULT_MAX_MASS_INCREASE,
    DEFAULT_MAX_RATE_INCREASE,
    judge_counterfactual,
    measure_counterfactual,
    paste_cue,
)
from .errors import InputError
from .types import Box, Outcome


def predictions(model: Any, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """Each image's top class (the model's compiled forward pass, as faithfulness runs
    it)."""
    from .explain.probabilities import prepare

    classifier, batch = prepare(model, images, batch_size)
    return np.asarray(classifier.probabilities(batch).argmax(axis=1), np.int64)


def _model_stats(
    model: Any,
    images: np.ndarray,
    cued: np.ndarray,
    box: Box,
    cam: Callable[..., Any],
    options: dict[str, Any],
    cell_margin: int,
) -> tuple[dict[str, Any], Any]:
    """The statistics of ``model`` (clean and cued predictions, maps of both explaining
    each prediction) and its cued maps (for the judgment's picture)."""
    batch_size = options.get("batch_size")
    clean_class = predictions(model, images, batch_size)
    cued_class = predictions(model, cued, batch_size)
    clean_maps = cam(model, images, class_index=clean_class, **options)
    cued_maps = cam(model, cued, class_index=cued_class, **options)
    stats = measure_counterfactual(
        clean_class,
        cued_class,
        cued_maps,
        box,
        clean_maps=clean_maps,
        num_classes=_num_classes(model),
        cell_margin=cell_margin,
    )
    return stats, cued_maps


def _num_classes(model: Any) -> int | None:
    shape = getattr(model, "output_shape", None)
    if isinstance(shape, tuple) and len(shape) == 2 and isinstance(shape[-1], int):
        return int(shape[-1])
    return None


def _is_stats_file(reference: Any) -> bool:
    return isinstance(reference, str | os.PathLike) and str(reference).endswith(".json")


def read_reference(path: Path) -> dict[str, Any]:
    """The golden model's statistics from a JSON file written by an update run."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(
            f"Cannot read the counterfactual reference {path}: {e}. Expected the JSON an "
            "update run writes (pytest ... --convviz-update=missing on the approved model)."
        ) from e
    if not isinstance(data, dict):
        raise InputError(f"The counterfactual reference {path} must hold a JSON object.")
    return data


def write_reference(path: Path, stats: dict[str, Any]) -> None:
    """Write the statistics (without per-image values) as stable, readable JSON."""
    kept = {k: v for k, v in stats.items() if not k.startswith("per_image")}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run_counterfactual(
    model: Any,
    images: Any,
    *,
    cue: Any,
    cam: Callable[..., Any],
    load_model: Callable[[Any], Any],
    at: Box | str = "bottom_right",
    margin: int = DEFAULT_MARGIN,
    reference: Any = None,
    class_names: Sequence[str] | None = None,
    update: str | None = None,
    max_rate_increase: float = DEFAULT_MAX_RATE_INCREASE,
    max_mass_increase: float = DEFAULT_MAX_MASS_INCREASE,
    cell_margin: int = DEFAULT_CELL_MARGIN,
    method: str = "gradcam",
    **cam_kwargs: Any,
) -> Outcome:
    """Paste ``cue`` into ``images``, measure ``model`` (and the golden model when
    ``reference`` is one) and judge; see ``ConvvizFixture.check_counterfactual``.

    ``reference``: None, the golden model's statistics (a dict), a Keras model or a
    model path (its statistics are measured here on the same images and cue), or a
    ``.json`` path holding the statistics: when the file is missing it is written from
    ``model`` in an update run (``update`` set) and the Outcome is ``"written"``, else
    ``"missing"``; ``update="all"`` rewrites it.
    """
    if isinstance(images, str | bytes) or images is None:
        raise InputError(f"images must be an image batch. Received: {images!r}")
    batch = np.asarray(images)
    cued, box = paste_cue(batch, cue, at, margin=margin)
    batch = batch.reshape(cued.shape)  # one (H, W, C) image: a batch of one
    options = {"method": method, **cam_kwargs}
    stats, cued_maps = _model_stats(model, batch, cued, box, cam, options, cell_margin)
    ref: Any = reference
    if _is_stats_file(reference):
        path = Path(reference)
        if update is not None and (update == "all" or not path.is_file()):
            write_reference(path, stats)
            return Outcome(
                "counterfactual",
                "written",
                f"wrote this model's counterfactual statistics to {path} (the reference "
                f"of later runs): the cue flips {max(stats['flipped'])} image(s) towards "
                f"one class; {stats['cue_mass']:.0%} of the map's mass sits on the cue",
                facts=stats,
            )
        if not path.is_file():
            return Outcome(
                "counterfactual",
                "missing",
                f"no counterfactual reference at {path}: write it from the approved model "
                "with `pytest ... --convviz-model=<approved model> --convviz-update=missing`",
            )
        ref = read_reference(path)
    elif isinstance(reference, str | os.PathLike) or hasattr(reference, "layers"):
        golden_model = load_model(reference) if not hasattr(reference, "layers") else reference
        ref = _model_stats(golden_model, batch, cued, box, cam, options, cell_margin)[0]
    return judge_counterfactual(
        stats,
        reference=ref,
        cued_maps=cued_maps,
        images=cued,
        class_names=class_names,
        max_rate_increase=max_rate_increase,
        max_mass_increase=max_mass_increase,
    )
