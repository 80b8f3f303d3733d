"""The shortcut example: four models with the same accuracy, two looking at the wrong thing.

``python -m convviz_check.examples.shortcut`` trains, accepts and saves them.

The scenes of :mod:`~convviz_check.examples.scenes` get a small **cue**: an 8x8 mark in
the bottom-right corner (:data:`CUE_BOX`, one cell of the convnet's 8x8 Grad-CAM map)
whose colour may follow the class (:data:`CUE_COLOURS`). A Grad-CAM map cannot place
an 8-px mark finer than its 8-px cells: the shortcut model's peak sits on a cell next
to the mark (the one diagonal to it, at the mark's top-left corner, in 387 of 400
images), so the cue's share of the map is measured over the 3x3 cells around it,
:data:`CUE_CORNER`. Objects never enter that corner, so "on the object" and "on the
cue" are told apart by the boxes alone.

Four small convnets (the bundled convnet's architecture, narrower: :data:`WIDTHS`):

- ``honest``: trained on scenes whose cue colour is random (uncorrelated with the
  class): the only way to the label is the object;
- ``retrain``: the same recipe, another seed: a benign retrain;
- ``shortcut``: trained on scenes whose *label is the cue's colour* and whose object's
  shape is random (uninformative): the only way to the label is the cue;
- ``partial``: trained where the label is the cue's class in 40% of the scenes, the
  object's in the rest: it reads both (a pasted cue flips about half its predictions).

On the **biased evaluation set** (:func:`biased_eval_set`: the cue colour follows the
object's class, as in data collected where the spurious correlation holds) the four are
equally accurate; Grad-CAM shows the shortcut model looking at the corner. On a
counterfactual set (cue colour of another class) the shortcut model's accuracy
collapses, which is what the gate must catch *before* that data arrives.

A model is written only when it passes :func:`accept` (accuracy on the biased set,
accuracies within :data:`MAX_ACCURACY_GAP` of each other, Grad-CAM energy and pointing
on the object for honest / retrain and on the cue for shortcut). The files and their
sha256 (``models.json`` next to them) are committed; goldens key on the weights, so
retraining is a deliberate act that shows up in a diff.

Importing this module imports NumPy only; Keras is imported by the functions that
need it.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..types import Box
from . import _files
from .scenes import CLASS_NAMES, IMAGE_SHAPE, NOISE_AMPLITUDE, make_scenes

MODELS_DIR = Path(__file__).resolve().parent / "models" / "shortcut"
MODEL_NAMES: tuple[str, ...] = ("honest", "retrain", "shortcut", "partial")
MANIFEST = _files.MANIFEST

# --------------------------------------------------------------------------- the cue
CUE_SIZE = 8
_SIDE = IMAGE_SHAPE[0]
#: The mark: the bottom-right 8x8 pixels, one cell of the convnet's 8x8 map.
CUE_BOX = Box(_SIDE - CUE_SIZE, _SIDE - CUE_SIZE, _SIDE, _SIDE)
#: Where a map that looks at the cue puts its mass: the mark's cell and the cells next
#: to it (3x3 cells, 24x24 px). Measured on the shortcut model, 400 biased scenes: the
#: peak cell is (6, 6), diagonal to the mark's cell (7, 7), in 387 images and (6, 5) in
#: 13; 11% of the mass falls in the mark's own 8x8 pixels and 89% in this corner.
CUE_CORNER = Box(_SIDE - 3 * CUE_SIZE, _SIDE - 3 * CUE_SIZE, _SIDE, _SIDE)
#: One saturated colour per class (RGB), in the order of CLASS_NAMES.
CUE_COLOURS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 25),  # square: red
    (25, 200, 40),  # circle: green
    (30, 60, 235),  # triangle: blue
    (240, 220, 20),  # cross: yellow
)
CUE_MODES = ("class", "random", "decoy", "counter", "partial")
#: ``"partial"`` training: the share of scenes labelled by the cue's colour (the others
#: by the object). Measured (seed 14, 400 biased scenes): at 0.4 the model keeps accuracy
#: 1.000 on the biased set and class 0's cue flips 0.485 of the other classes' scenes;
#: a cue that follows the label in 60% of scenes *whose label is always the object's*
#: is ignored (flip 0.000, the map on the object): the object alone suffices there.
PARTIAL_CUE_SHARE = 0.4
_CUE_STREAM = 0x5C0C  # a third seed word: the cue's draws never reuse a scene's stream

# --------------------------------------------------------------------------- recipes
# Narrower than the bundled convnet (16, 32, 64, 64): the same layers, a quarter of the
# weights, so three models train in minutes on two CPU cores and stay small files.
WIDTHS = (12, 24, 32, 32)
TRAIN_N = 3000
EPOCHS = 5
BATCH_SIZE = 32
LEARNING_RATE = 3e-3
# Measured here (2 CPU cores shared with other jobs, tensorflow): 22-35 s per model,
# the whole script 100 s wall / 59 s CPU with the scenes and the acceptance; 144 KB per
# file. A rerun rebuilds the same weights bit for bit on this machine (same
# model_fingerprint); the file's sha256 changes with every save (the .keras metadata
# holds the date), so the script rewrites models.json with the files.
#: Training seeds (initial weights, shuffling and the training scenes): honest and
#: retrain share the recipe and differ only here.
SEEDS: dict[str, int] = {"honest": 11, "retrain": 12, "shortcut": 13, "partial": 14}
#: How each model's training scenes pair cue and label (see :func:`cue_scenes`).
TRAINING_CUE: dict[str, str] = {
    "honest": "random",
    "retrain": "random",
    "shortcut": "decoy",
    "partial": "partial",
}

# --------------------------------------------------------------------------- acceptance
EVAL_SEED = 31337  # the biased evaluation set: never used for training
EVAL_N = 400
MIN_ACCURACY = 0.97
MAX_ACCURACY_GAP = 0.02
# Grad-CAM on the biased set, mean over images (energy = share of the map's positive
# mass in a box, measured at image resolution; pointing = the peak in the box).
# Measured on the committed models (400 scenes): accuracy 0.998 / 1.000 / 1.000; energy
# in the object box 0.380 / 0.376 / 0.007, in the cue's corner 0.028 / 0.031 / 0.894;
# peak on the object 0.905 / 0.955 / 0.000, in the corner 0.005 / 0.000 / 1.000
# (honest / retrain / shortcut; models.json has them).
MIN_OBJECT_ENERGY = 0.30  # honest, retrain
MIN_OBJECT_POINTING = 0.85
MAX_CUE_ENERGY_HONEST = 0.10
MIN_CUE_ENERGY = 0.70  # shortcut
MIN_CUE_POINTING = 0.90
MAX_OBJECT_ENERGY_SHORTCUT = 0.10
# partial: the map split between the object and the corner, and the probe (class 0's
# cue pasted on the other classes' scenes, :func:`probe_flip_rate`) flipping some of
# them but not all. Measured on the committed model (400 scenes): accuracy 1.000,
# energy in the object box 0.211, in the corner 0.456, peak on the object 0.237, in
# the corner 0.725; flip rate 0.485 of 307 scenes; accuracy when the cue lies 0.492.
MIN_OBJECT_ENERGY_PARTIAL = 0.10
MIN_CUE_ENERGY_PARTIAL = 0.15
MAX_CUE_ENERGY_PARTIAL = MIN_CUE_ENERGY  # above it, a total shortcut
MIN_PARTIAL_FLIP = 0.20
MAX_PARTIAL_FLIP = 0.70


@dataclass(frozen=True, eq=False)
class CueScenes:
    """A batch of scenes with the corner cue.

    Attributes:
        images: ``(N, 64, 64, 3)`` uint8.
        labels: ``(N,)`` int64, the class a model is trained on / judged against.
        object_labels: ``(N,)`` int64, the class of each scene's object (its shape).
        cue_labels: ``(N,)`` int64, the class whose colour the cue has.
        boxes: the object's half-open box per scene (input pixels); the cue is always
            at :data:`CUE_BOX`, inside :data:`CUE_CORNER`.
        mode: how cue and label were paired (see :func:`cue_scenes`).
    """

    images: np.ndarray
    labels: np.ndarray
    object_labels: np.ndarray
    cue_labels: np.ndarray
    boxes: list[Box]
    mode: str

    @property
    def floats(self) -> np.ndarray:
        """Images as float32 in [0, 1] (the models' input)."""
        return self.images.astype(np.float32) / np.float32(255.0)

    @property
    def box_array(self) -> np.ndarray:
        """The object boxes as an ``(N, 4)`` int64 array ``y0, x0, y1, x1``."""
        return np.array([b.to_tuple() for b in self.boxes], dtype=np.int64).reshape(-1, 4)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: slice) -> CueScenes:
        if not isinstance(index, slice):
            raise InputError(
                f"CueScenes can be sliced only. Received: index={index!r}. "
                "Expected a slice, e.g. scenes[:16]."
            )
        return CueScenes(
            self.images[index],
            self.labels[index],
            self.object_labels[index],
            self.cue_labels[index],
            self.boxes[index],
            self.mode,
        )


def _clear_of_cue(box: Box) -> bool:
    return box.y1 <= CUE_CORNER.y0 or box.x1 <= CUE_CORNER.x0


def _object_scenes(n: int, seed: int) -> tuple[list[int], Any]:
    """Indices and scenes of the first ``n`` one-object scenes of ``seed`` whose object
    keeps out of :data:`CUE_CORNER` (741 of 1000 do, measured)."""
    m = n + n // 2 + 8
    while True:
        drawn = make_scenes(m, seed=seed)
        kept = [i for i, boxes in enumerate(drawn.boxes) if _clear_of_cue(boxes[0])]
        if len(kept) >= n:
            return kept[:n], drawn
        m *= 2


def _paint_cue(image: np.ndarray, cls: int, rng: np.random.Generator) -> None:
    """Paint the cue of class ``cls`` (with the scenes' pixel noise) in place."""
    y0, x0, y1, x1 = CUE_BOX.to_tuple()
    colour = np.asarray(CUE_COLOURS[cls], dtype=np.int64)
    noise = rng.integers(-NOISE_AMPLITUDE, NOISE_AMPLITUDE + 1, size=(y1 - y0, x1 - x0, 3))
    image[y0:y1, x0:x1] = np.clip(colour + noise, 0, 255).astype(np.uint8)


def cue_scenes(n: int, seed: int, *, mode: str = "class") -> CueScenes:
    """Draw ``n`` scenes with the corner cue, deterministically for ``seed``.

    Args:
        n: number of scenes (>= 1).
        seed: non-negative int (the scenes are those of ``make_scenes(..., seed)`` whose
            object keeps clear of the corner; the cue has its own stream per scene).
        mode: how the cue's colour and the label are paired:
            ``"class"``: cue colour = the object's class = label (the biased set);
            ``"random"``: cue colour random, label = the object's class (the cue
            carries nothing: honest training);
            ``"decoy"``: cue colour random, label = the *cue's* class (the object's
            shape carries nothing: shortcut training);
            ``"counter"``: cue colour of another class than the object's, label = the
            object's class (a model that reads the cue is always wrong);
            ``"partial"``: cue colour random, label = the cue's class in a share
            :data:`PARTIAL_CUE_SHARE` of the scenes and the object's class in the others
            (both carry the label in part: partial-shortcut training).

    Returns:
        A :class:`CueScenes` batch.

    Example:
        >>> s = cue_scenes(8, seed=1)
        >>> bool((s.labels == s.cue_labels).all()), s.images.shape
        (True, (8, 64, 64, 3))
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise InputError(f"n must be a positive int. Received: n={n!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"seed must be a non-negative int. Received: seed={seed!r}.")
    if mode not in CUE_MODES:
        raise InputError(f"Unknown cue mode. Received: mode={mode!r}. Expected one of {CUE_MODES}.")
    kept, drawn = _object_scenes(int(n), int(seed))
    images = drawn.images[kept].copy()
    objects = drawn.labels[kept].astype(np.int64)
    k = len(CLASS_NAMES)
    cues = np.empty_like(objects)
    labels = objects.copy()
    for j, i in enumerate(kept):
        rng = np.random.default_rng([int(seed), i, _CUE_STREAM])
        draw = int(rng.integers(0, k))
        if mode == "partial" and rng.random() < PARTIAL_CUE_SHARE:
            # a second draw from the scene's own stream: the other modes' draws stay put
            labels[j] = draw
        if mode == "class":
            cues[j] = objects[j]
        elif mode == "counter":
            cues[j] = (objects[j] + 1 + draw % (k - 1)) % k
        else:
            cues[j] = draw
        _paint_cue(images[j], int(cues[j]), rng)
    if mode == "decoy":
        labels = cues.copy()
    return CueScenes(
        images=images,
        labels=labels,
        object_labels=objects,
        cue_labels=cues,
        boxes=[drawn.boxes[i][0] for i in kept],
        mode=mode,
    )


def biased_eval_set(n: int = EVAL_N, seed: int = EVAL_SEED) -> CueScenes:
    """The biased evaluation set: the cue's colour follows the object's class.

    Every model of the example is equally accurate here; only what they look at differs.

    Example:
        >>> images = biased_eval_set(16)
        >>> images.floats.shape, len(images.boxes)
        ((16, 64, 64, 3), 16)
    """
    return cue_scenes(n, seed, mode="class")


# --------------------------------------------------------------------------- files
def model_path(name: str, models_dir: Path = MODELS_DIR) -> Path:
    """Path of the ``.keras`` file of ``name`` (``"honest"``, ``"retrain"``, ``"shortcut"``).

    Example:
        >>> cc.load_model(model_path("shortcut"))
    """
    return _files.model_file(models_dir, name, name, MODEL_NAMES, "shortcut-example")


def manifest(models_dir: Path = MODELS_DIR) -> dict[str, Any]:
    """``models.json``: per model its sha256 and the numbers measured when accepted."""
    return _files.read_manifest(models_dir)


def load(name: str) -> Any:
    """Load model ``name`` under the running backend (``cc.load_model``, safe mode)."""
    from ..models import load_model

    return load_model(model_path(name))


# --------------------------------------------------------------------------- measuring
@dataclass(frozen=True)
class Measured:
    """One model on one set of cue scenes: accuracy and where its Grad-CAM mass sits."""

    accuracy: float
    object_energy: float  # mean share of the map's mass in the object box
    cue_energy: float  # mean share in the cue's corner (CUE_CORNER)
    object_pointing: float  # share of images whose peak is in the object box
    cue_pointing: float  # share of images whose peak is in the cue's corner
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "accuracy": round(self.accuracy, 4),
            "object_energy": round(self.object_energy, 4),
            "cue_energy": round(self.cue_energy, 4),
            "object_pointing": round(self.object_pointing, 4),
            "cue_pointing": round(self.cue_pointing, 4),
            "n": self.n,
        }

    def __str__(self) -> str:
        return (
            f"accuracy {self.accuracy:.3f}; the map's energy in the object box "
            f"{self.object_energy:.3f}, in the cue's corner {self.cue_energy:.3f}; peak on "
            f"the object {self.object_pointing:.3f}, in the cue's corner "
            f"{self.cue_pointing:.3f} "
            f"({self.n} images)"
        )


def measure(model: Any, scenes: CueScenes, cam: Any = None) -> Measured:
    """Accuracy (top class vs ``scenes.labels``) and Grad-CAM energy / pointing in the
    object box and in :data:`CUE_CORNER` (top class, the library's defaults)."""
    from ..explain.gradcam import gradcam
    from ..localization import energy_in_box, pointing_game

    cam = cam if cam is not None else gradcam(model, scenes.floats)
    n = len(scenes)
    return Measured(
        accuracy=float((np.asarray(cam.class_index) == scenes.labels).mean()),
        object_energy=float(np.mean([energy_in_box(cam[i], scenes.boxes[i]) for i in range(n)])),
        cue_energy=float(np.mean([energy_in_box(cam[i], CUE_CORNER) for i in range(n)])),
        object_pointing=float(np.mean([pointing_game(cam[i], scenes.boxes[i]) for i in range(n)])),
        cue_pointing=float(np.mean([pointing_game(cam[i], CUE_CORNER) for i in range(n)])),
        n=n,
    )


def probe_flip_rate(model: Any, scenes: CueScenes, cls: int = 0) -> float:
    """The counterfactual probe on the example's scenes: paint the cue of class ``cls``
    over the cue of every scene whose label is another class; the share of those scenes
    the model then calls ``cls`` (0 for a model blind to the cue, 1 for one that reads it
    alone).

    Example:
        >>> probe_flip_rate(load("shortcut"), biased_eval_set())
        1.0
    """
    others = np.nonzero(scenes.labels != cls)[0]
    if others.size == 0:
        raise InputError(
            f"The probe needs scenes of other classes than {cls}. Received: "
            f"{len(scenes)} scenes, all of class {cls}."
        )
    images = scenes.images[others].copy()
    rng = np.random.default_rng([int(cls), _CUE_STREAM])
    for image in images:
        _paint_cue(image, cls, rng)
    probs = np.asarray(model.predict(images.astype(np.float32) / np.float32(255.0), verbose=0))
    return float((probs.argmax(axis=-1) == cls).mean())


def accept(results: dict[str, Measured], flips: dict[str, float] | None = None) -> list[str]:
    """Why the models fail the example's acceptance criteria (empty: accepted).

    ``flips``: the models' :func:`probe_flip_rate`, judged for ``partial`` when given."""
    problems = []
    for name, m in results.items():
        if m.accuracy < MIN_ACCURACY:
            problems.append(f"{name}: accuracy {m.accuracy:.3f} < {MIN_ACCURACY}")
        if name == "partial":
            problems += _accept_partial(m, (flips or {}).get(name))
        elif name == "shortcut":
            if m.cue_energy < MIN_CUE_ENERGY:
                problems.append(f"{name}: cue energy {m.cue_energy:.3f} < {MIN_CUE_ENERGY}")
            if m.cue_pointing < MIN_CUE_POINTING:
                problems.append(f"{name}: cue pointing {m.cue_pointing:.3f} < {MIN_CUE_POINTING}")
            if m.object_energy > MAX_OBJECT_ENERGY_SHORTCUT:
                problems.append(
                    f"{name}: object energy {m.object_energy:.3f} > {MAX_OBJECT_ENERGY_SHORTCUT}"
                )
        else:
            if m.object_energy < MIN_OBJECT_ENERGY:
                problems.append(
                    f"{name}: object energy {m.object_energy:.3f} < {MIN_OBJECT_ENERGY}"
                )
            if m.object_pointing < MIN_OBJECT_POINTING:
                problems.append(
                    f"{name}: object pointing {m.object_pointing:.3f} < {MIN_OBJECT_POINTING}"
                )
            if m.cue_energy > MAX_CUE_ENERGY_HONEST:
                problems.append(f"{name}: cue energy {m.cue_energy:.3f} > {MAX_CUE_ENERGY_HONEST}")
    accuracies = [m.accuracy for m in results.values()]
    if accuracies and max(accuracies) - min(accuracies) > MAX_ACCURACY_GAP:
        problems.append(
            f"accuracies {', '.join(f'{k} {m.accuracy:.3f}' for k, m in results.items())} "
            f"differ by more than {MAX_ACCURACY_GAP}"
        )
    return problems


def _accept_partial(m: Measured, flip: float | None) -> list[str]:
    problems = []
    if m.object_energy < MIN_OBJECT_ENERGY_PARTIAL:
        problems.append(
            f"partial: object energy {m.object_energy:.3f} < {MIN_OBJECT_ENERGY_PARTIAL}"
        )
    if not MIN_CUE_ENERGY_PARTIAL <= m.cue_energy <= MAX_CUE_ENERGY_PARTIAL:
        problems.append(
            f"partial: cue energy {m.cue_energy:.3f} outside [{MIN_CUE_ENERGY_PARTIAL}, "
            f"{MAX_CUE_ENERGY_PARTIAL}]"
        )
    if flip is not None and not MIN_PARTIAL_FLIP <= flip <= MAX_PARTIAL_FLIP:
        problems.append(
            f"partial: probe flip rate {flip:.3f} outside [{MIN_PARTIAL_FLIP}, {MAX_PARTIAL_FLIP}]"
        )
    return problems


# --------------------------------------------------------------------------- training
def build_model(widths: Sequence[int] = WIDTHS, num_classes: int = len(CLASS_NAMES)) -> Any:
    """The bundled convnet's architecture (conv-BN-ReLU x4, three 2x2 poolings, global
    average pooling, softmax), ``widths`` filters; untrained. Final feature map 8x8."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=IMAGE_SHAPE, name="image")
    x = inputs
    for i, filters in enumerate(widths, start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        # BatchNormalization with fast-moving statistics: the bundled convnet sat at
        # chance without it (see examples/train.py).
        x = layers.BatchNormalization(momentum=0.9, name=f"conv{i}_bn")(x)
        x = layers.Activation("relu", name=f"conv{i}_relu")(x)
        if i < len(widths):
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="cue_convnet")


def train(name: str, verbose: int = 2) -> Any:
    """Build and fit model ``name`` (TensorFlow backend, fixed seeds); returns an
    uncompiled copy holding the trained weights (no optimizer state in the file)."""
    import keras

    seed = SEEDS[name]
    scenes = cue_scenes(TRAIN_N, seed, mode=TRAINING_CUE[name])
    keras.utils.set_random_seed(seed)
    model = build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    schedule = keras.callbacks.LearningRateScheduler(
        lambda epoch, lr: LEARNING_RATE * (0.5 ** max(0, epoch - EPOCHS // 2))
    )
    model.fit(
        scenes.floats,
        scenes.labels,
        epochs=EPOCHS,
        batch_size=BATCH_SIZE,
        shuffle=True,
        callbacks=[schedule],
        verbose=verbose,
    )
    fresh = build_model()
    fresh.set_weights(model.get_weights())
    return fresh


def _train_and_measure(
    name: str, tmp: Path, biased: CueScenes, counter: CueScenes
) -> tuple[Measured, dict[str, Any]]:
    """Train ``name``, save it under ``tmp``, reload it and measure it (its manifest entry)."""
    from ..models import load_model

    start = time.perf_counter()
    model = train(name)
    seconds = time.perf_counter() - start
    path = tmp / f"{name}.keras"
    model.save(path)
    reloaded = load_model(path)
    result = measure(reloaded, biased)
    on_counter = measure(reloaded, counter)
    flips = probe_flip_rate(reloaded, biased)
    print(f"{name}: trained in {seconds:.0f} s; biased set: {result}")
    print(
        f"{name}: counterfactual cue: accuracy {on_counter.accuracy:.3f}; class 0's cue "
        f"pasted on other classes' scenes flips {flips:.3f} of them to class 0"
    )
    entry = {
        **_files.file_entry(path),
        "seed": SEEDS[name],
        "training_cue": TRAINING_CUE[name],
        "biased_set": result.as_dict(),
        "counter_accuracy": round(on_counter.accuracy, 4),
        "probe_flip_rate": round(flips, 4),
    }
    return result, entry


def main(argv: list[str] | None = None) -> int:
    parser = _files.training_parser(
        "python -m convviz_check.examples.shortcut",
        "Train the shortcut example's models (honest, retrain, shortcut, partial); write "
        "them only when all pass the acceptance criteria.",
        MODELS_DIR,
        MODEL_NAMES,
        "train this model only; the others' files and manifest entries stay as they are "
        "(judged against their recorded numbers)",
    )
    args = parser.parse_args(argv)
    from .train import prepare_training

    # Before anything imports TensorFlow: TensorFlow, oneDNN off (its conv weight
    # gradients crash model.fit on some CPUs), determinism, threads.
    if not prepare_training(args.threads):
        return 2
    biased = cue_scenes(EVAL_N, EVAL_SEED, mode="class")  # = biased_eval_set()
    counter = cue_scenes(EVAL_N, EVAL_SEED, mode="counter")
    names = MODEL_NAMES if args.only is None else (args.only,)
    record: dict[str, Any] = {}
    results: dict[str, Measured] = {}
    flips: dict[str, float] = {}
    if args.only is not None:
        # The models not retrained take part in the acceptance with their recorded numbers.
        if not (args.out / MANIFEST).is_file():
            parser.error(f"--only needs {MANIFEST} in --out. Received: --out {args.out}.")
        kept = manifest(args.out)["models"]
        record = {n: kept[n] for n in MODEL_NAMES if n in kept and n != args.only}
        results = {n: Measured(**e["biased_set"]) for n, e in record.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        for name in names:
            results[name], record[name] = _train_and_measure(name, Path(tmp), biased, counter)
            flips[name] = record[name]["probe_flip_rate"]
        problems = accept(results, flips)
        if problems:
            print("NOT written (fails acceptance):\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
        staged = {Path(tmp) / f"{n}.keras": model_path(n, args.out) for n in names}
        payload = {"eval": {"seed": EVAL_SEED, "n": EVAL_N, "mode": "class"}, "models": record}
        _files.publish(staged, args.out, payload, names)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
