"""A small vision transformer trained on the scenes: an honest one and a shortcut one.

``python -m convviz_check.examples.vit`` trains, accepts and saves them under
``examples/models/vit/`` with their sha256 and measured numbers in ``models.json``.

The two models follow the shortcut example's recipe (:mod:`.shortcut`): ``honest`` is
trained on cue scenes whose corner mark has a random colour (only the object tells the
label), ``shortcut`` on scenes whose label is the mark's colour (only the corner tells
it). Both are judged on the shortcut example's biased evaluation set, where the mark
follows the object's class and both are equally accurate.

The architecture (:func:`build_model`) is a *hybrid* ViT (Dosovitskiy et al. 2021, "An
Image is Worth 16x16 Words", section 3.1): two conv-BN-ReLU-pool layers (64 -> 16 px,
32 channels) feed keras-hub's ``ViTBackbone`` with patch 2 on that 16x16 map, so every
token covers 8x8 image pixels (an 8x8 token grid after one class token, as the
convnets' 8x8 maps), then two transformer blocks (4 heads, width 32) and a class-token
head. A plain ViT with 8-px patches on the raw pixels did not learn the scenes in a few
minutes of CPU: measured here, four configurations (width 32 and 64, class-token and
mean head, with and without per-image standardisation, Adam 1e-3 to 3e-3) stayed at
25-36% training accuracy after 750-1500 steps, where this hybrid reached 90% after 625
(a convolutional stem makes a transformer train like a convnet early on: Xiao et al.
2021, "Early Convolutions Help Transformers See Better").

The transformer parts are keras-hub layers over ``keras.layers.MultiHeadAttention``:
the token grid is inferred from the patch embedding (stride 2 on a 64-px image: 32,
halved twice to 8x8), rollout finds the two attention layers. The automatic Grad-CAM
layer of this hybrid is its token layer, :data:`TOKEN_LAYER` (the last block's input, as
on a plain ViT: the rule starts from the class-token head); the stem's last map
(``stem2_pool``, 16x16, before the transformer) is asked for by name.

``build_model(head="mean")`` (``--head mean``) puts the head on the mean of the patch
tokens instead, with no class token (files ``honest_mean.keras``, ``shortcut_mean.keras``;
automatic CAM layer: the encoder's final norm ``ln``). Measured, it does not make Grad-CAM
localize (its map peaks off the objects, docs/transformers.md), so the committed models
keep the class token.

A model is written only when :func:`accept` passes: accuracy on the biased set and
attention rollout on the object (honest) or in the corner (shortcut). Grad-CAM on the
token grid is measured and recorded in ``models.json`` but not judged: on this model
it does not land on the objects (docs/transformers.md has the numbers).

Importing this module imports NumPy only; Keras is imported by the functions that need it.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import InputError
from . import _files, shortcut
from .scenes import CLASS_NAMES, IMAGE_SHAPE

MODELS_DIR = Path(__file__).resolve().parent / "models" / "vit"
MODEL_NAMES: tuple[str, ...] = ("honest", "shortcut")
MANIFEST = _files.MANIFEST

#: The two heads (:func:`build_model`): ``"class_token"``, a Dense on the class token,
#: and ``"mean"``, a Dense on the mean of the patch tokens (no class token).
HEADS_KINDS: tuple[str, ...] = ("class_token", "mean")
#: The head of the models :func:`load` and :func:`model_path` return by default.
DEFAULT_HEAD = "class_token"

#: The token layer Grad-CAM reads on the class-token models: the last transformer
#: block's input (the first block's output), an 8x8 grid after the class token.
TOKEN_LAYER = "transformer_block_1"
#: The token layer per head (the automatic CAM layer of each): on the mean-head models
#: the encoder's final norm, the last block's output as the mean reads it (8x8 grid, no
#: prefix token).
TOKEN_LAYERS: dict[str, str] = {"class_token": TOKEN_LAYER, "mean": "ln"}

# --------------------------------------------------------------------------- recipe
STEM_WIDTHS = (16, 32)  # two conv-BN-ReLU-pool layers: 64 -> 32 -> 16 px
PATCH = 2  # on the 16x16 stem map: 8x8 image pixels per token
BLOCKS = 2
HEADS = 4
WIDTH = 32
MLP_WIDTH = 64
TRAIN_N = 4000
EPOCHS = 10
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
# Halved each epoch from this (0-based) epoch on: six epochs at 1e-3, then 5e-4, 2.5e-4,
# 1.25e-4, 6.25e-5. The honest model leaves chance only in its 4th to
# 5th epoch (measured: training accuracy 0.27, 0.34, 0.60, 0.83 in epochs 3-6 of a
# first run); halving from the middle of 8 epochs (as the shortcut example) left it at
# 0.947 training accuracy and 0.892 on the biased set.
DECAY_FROM = 6
# Measured here (2 shared CPU cores, load average 7-11, both models at once, one thread
# each): 175 s and 179 s of CPU time, 13.6 and 14.9 min wall; 245 KB per file.
#: Training seeds (initial weights, shuffling and the training scenes).
SEEDS: dict[str, int] = {"honest": 21, "shortcut": 23}
TRAINING_CUE: dict[str, str] = {"honest": "random", "shortcut": "decoy"}

# --------------------------------------------------------------------------- acceptance
#: Both models on the biased evaluation set (400 scenes, as the shortcut example).
#: Measured on the committed models: honest 0.945 (0.975 on the gate's first 200),
#: shortcut 1.000; the convnets of the shortcut example reach 0.998-1.000.
MIN_ACCURACY = 0.94
MAX_ACCURACY_GAP = 0.06


def build_model(num_classes: int = len(CLASS_NAMES), head: str = "class_token") -> Any:
    """The hybrid ViT, untrained: conv stem, keras-hub ``ViTBackbone``, and a softmax
    Dense on the class token (``head="class_token"``) or on the mean of the patch tokens
    (``head="mean"``: the backbone has no class token).

    Raises:
        InputError: an unknown ``head``.
    """
    _check_head(head)
    import keras
    import keras_hub
    from keras import layers

    inputs = keras.Input(shape=IMAGE_SHAPE, name="image")
    x = inputs
    for i, filters in enumerate(STEM_WIDTHS, start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"stem{i}")(x)
        # BatchNormalization: what lets the bundled convnet leave chance quickly (see
        # examples/train.py); momentum 0.9 so the statistics keep up in a short run.
        x = layers.BatchNormalization(momentum=0.9, name=f"stem{i}_bn")(x)
        x = layers.Activation("relu", name=f"stem{i}_relu")(x)
        x = layers.MaxPooling2D(2, name=f"stem{i}_pool")(x)
    side = IMAGE_SHAPE[0] // 2 ** len(STEM_WIDTHS)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(side, side, STEM_WIDTHS[-1]),
        patch_size=PATCH,
        num_layers=BLOCKS,
        num_heads=HEADS,
        hidden_dim=WIDTH,
        mlp_dim=MLP_WIDTH,
        use_class_token=head == "class_token",
        name="vit_backbone",
    )
    tokens = backbone(x)
    if head == "class_token":
        pooled = tokens[:, 0]
    else:  # the mean of the patch tokens, as a convnet's global average pooling
        pooled = layers.GlobalAveragePooling1D(name="token_pool")(tokens)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(pooled)
    return keras.Model(
        inputs, outputs, name="scenes_vit" if head == "class_token" else "scenes_vit_mean"
    )


def _check_head(head: str) -> None:
    if head not in HEADS_KINDS:
        raise InputError(
            f"Unknown vision-transformer example head. Received: head={head!r}. Expected "
            f"one of {HEADS_KINDS}."
        )


def model_key(name: str, head: str = DEFAULT_HEAD) -> str:
    """The file stem and ``models.json`` key of model ``name`` with ``head``:
    ``"honest"`` / ``"shortcut"`` (class token), ``"honest_mean"`` / ``"shortcut_mean"``."""
    _check_head(head)
    return name if head == "class_token" else f"{name}_mean"


def model_path(name: str, models_dir: Path = MODELS_DIR, head: str = DEFAULT_HEAD) -> Path:
    """Path of the ``.keras`` file of ``name`` (``"honest"`` or ``"shortcut"``) with
    ``head`` (:data:`HEADS_KINDS`).

    Example:
        >>> cc.load_model(model_path("honest"))
    """
    return _files.model_file(
        models_dir, model_key(name, head), name, MODEL_NAMES, "vision-transformer example"
    )


def manifest(models_dir: Path = MODELS_DIR) -> dict[str, Any]:
    """``models.json``: per model its sha256 and the numbers measured when accepted."""
    return _files.read_manifest(models_dir)


def load(name: str, head: str = DEFAULT_HEAD) -> Any:
    """Load model ``name`` with ``head`` under the running backend (keras-hub registered
    first)."""
    import keras_hub  # noqa: F401 - registers the keras-hub layers for deserialization

    from ..models import load_model

    return load_model(model_path(name, head=head))


def head_of(model: Any) -> str:
    """``"mean"`` for a mean-head model of :func:`build_model`, else ``"class_token"``."""
    return "mean" if getattr(model, "name", "") == "scenes_vit_mean" else "class_token"


def measure(model: Any, scenes: shortcut.CueScenes) -> dict[str, shortcut.Measured]:
    """Accuracy, energy and pointing on the object and in the cue's corner
    (:func:`.shortcut.measure`) of Grad-CAM on the head's token layer
    (:data:`TOKEN_LAYERS`) and of attention rollout."""
    from ..explain.cam import cam as cam_fn

    gradcam = cam_fn(model, scenes.floats, layer=TOKEN_LAYERS[head_of(model)])
    rollout = cam_fn(model, scenes.floats, method="rollout")
    return {
        "gradcam": shortcut.measure(model, scenes, cam=gradcam),
        "rollout": shortcut.measure(model, scenes, cam=rollout),
    }


def accept(results: dict[str, dict[str, shortcut.Measured]]) -> list[str]:
    """Why the models fail acceptance (empty: accepted): accuracy on the biased set,
    accuracies close, and attention rollout more on the object than in the corner for
    the honest model, the other way round for the shortcut model.

    Grad-CAM on the token grid is measured and recorded, not judged: on this model it
    does not tell the object from the corner reliably (docs/transformers.md)."""
    problems = []
    for name, by_method in results.items():
        accuracy = by_method["rollout"].accuracy
        if accuracy < MIN_ACCURACY:
            problems.append(f"{name}: accuracy {accuracy:.3f} < {MIN_ACCURACY}")
        m = by_method["rollout"]
        if (m.object_energy > m.cue_energy) != (name == "honest"):
            problems.append(
                f"{name}: rollout energy on the object {m.object_energy:.3f}, in the "
                f"corner {m.cue_energy:.3f}"
            )
    accuracies = [r["rollout"].accuracy for r in results.values()]
    if accuracies and max(accuracies) - min(accuracies) > MAX_ACCURACY_GAP:
        problems.append(f"accuracies {accuracies} differ by more than {MAX_ACCURACY_GAP}")
    return problems


def entry(
    name: str,
    path: Path,
    biased: shortcut.CueScenes,
    head: str = "class_token",
    seed: int | None = None,
) -> tuple[dict, dict[str, Any]]:
    """Measure the saved model ``path`` of ``name`` (with ``head``) on ``biased``: its
    results by method and its manifest entry."""
    from ..models import load_model

    results = measure(load_model(path), biased)
    for method, m in results.items():
        print(f"{name}: {method}: {m}")
    record = {
        **_files.file_entry(path),
        "seed": SEEDS[name] if seed is None else seed,
        "training_cue": TRAINING_CUE[name],
        "head": head,
        "token_layer": TOKEN_LAYERS[head],
        "biased_set": {k: m.as_dict() for k, m in results.items()},
    }
    return results, record


def train(name: str, verbose: int = 2, head: str = "class_token", seed: int | None = None) -> Any:
    """Build and fit model ``name`` with ``head`` (TensorFlow backend, fixed seeds:
    the recipe's :data:`SEEDS`, or ``seed`` for a retrain); returns an uncompiled copy holding the trained weights (no optimizer state in the
    file)."""
    import keras

    seed = SEEDS[name] if seed is None else seed
    scenes = shortcut.cue_scenes(TRAIN_N, seed, mode=TRAINING_CUE[name])
    keras.utils.set_random_seed(seed)
    model = build_model(head=head)
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    schedule = keras.callbacks.LearningRateScheduler(
        lambda epoch, lr: LEARNING_RATE * (0.5 ** max(0, epoch - DECAY_FROM + 1))
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
    fresh = build_model(head=head)
    fresh.set_weights(model.get_weights())
    return fresh


def main(argv: list[str] | None = None) -> int:
    parser = _files.training_parser(
        "python -m convviz_check.examples.vit",
        "Train the vision-transformer example's models (honest, shortcut); write them "
        "only when both pass the acceptance criteria.",
        MODELS_DIR,
        MODEL_NAMES,
        "train this model only; the other's file and manifest entry stay as they are",
    )
    parser.add_argument(
        "--head",
        choices=HEADS_KINDS,
        default=DEFAULT_HEAD,
        help="the models' head: class token or mean of the patch tokens",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="with --only: train with this seed instead of the recipe's (a retrain, e.g. "
        "to calibrate retrain bounds; use another --out to keep the committed models)",
    )
    args = parser.parse_args(argv)
    if args.seed is not None and (args.only is None or args.seed < 0):
        parser.error(
            f"--seed needs --only and a non-negative int. Received: --seed {args.seed}, "
            f"--only {args.only}."
        )
    from .train import prepare_training

    # Before anything imports TensorFlow: oneDNN off (its conv weight gradients crash
    # model.fit on some CPUs), determinism, threads.
    if not prepare_training(args.threads):
        return 2
    import keras_hub  # noqa: F401 - registers the keras-hub layers for loading

    biased = shortcut.biased_eval_set()
    names = MODEL_NAMES if args.only is None else (args.only,)
    head = args.head
    keys = {model_key(n, head): n for n in MODEL_NAMES}
    record: dict[str, Any] = {}  # every entry of the manifest but those trained now
    if (args.out / MANIFEST).is_file():
        trained = {model_key(n, head) for n in names}
        record = {k: e for k, e in manifest(args.out)["models"].items() if k not in trained}
    # The acceptance judges the pair of this head: the other one trained now or before.
    results: dict[str, dict[str, shortcut.Measured]] = {
        keys[k]: {m: shortcut.Measured(**v) for m, v in e["biased_set"].items()}
        for k, e in record.items()
        if k in keys
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        for name in names:
            start = time.perf_counter()
            model = train(name, head=head, seed=args.seed)
            seconds = time.perf_counter() - start
            path = Path(tmp) / f"{model_key(name, head)}.keras"
            model.save(path)
            results[name], record[model_key(name, head)] = entry(
                name, path, biased, head, args.seed
            )
            print(f"{name}: trained in {seconds:.0f} s")
        problems = accept(results)
        if problems:
            print("NOT written (fails acceptance):\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
        staged = {
            Path(tmp) / f"{model_key(n, head)}.keras": model_path(n, args.out, head) for n in names
        }
        payload = {
            "eval": {"seed": shortcut.EVAL_SEED, "n": shortcut.EVAL_N, "mode": "class"},
            "token_layer": TOKEN_LAYER,
            "models": record,
        }
        _files.publish(staged, args.out, payload, names)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
