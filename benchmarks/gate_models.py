"""The gate validation's models (``validate_gate.py``): a small convnet trained for a
few epochs on the photo-textured images, honest (another seed) or with a shortcut (the
cue pasted on a share of one class's training images); cached per recipe."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate_images import CLASS_NAMES, LABEL_NOISE, PROBE_N, SIZE, make_set

CACHE = Path(__file__).resolve().parent / ".cache" / "validate_gate"

# ------------------------------------------------------------------------------ recipe
DATA_SEED = 7  # the training images (every model the same)
TRAIN_N = 2000
# 3 epochs: 0.62-0.66 probe accuracy, median top-1 probability 0.56-0.60 (measured on
# seed 1); longer training makes the models surer than users' models on hard data.
EPOCHS = 3
BATCH_SIZE = 32
LEARNING_RATE = 2e-3
WIDTHS = (16, 32, 48, 64)
HONEST_SEEDS = (1, 2, 3, 4, 5, 6)  # the first is the golden
# co-occurrence rate -> training seed: the share of class-0 training images with the cue
SHORTCUT_RATES: dict[float, int] = {0.03: 101, 0.06: 102, 0.12: 103, 0.18: 105, 0.25: 104}


# ============================================================================== models
@dataclass
class Plan:
    """Which models to train and judge, and how: the full run, or the test's reduced
    one (fewer models, images and epochs; ``cache=None`` trains every model afresh)."""

    honest_seeds: tuple[int, ...] = HONEST_SEEDS
    shortcut_rates: dict[float, int] = field(default_factory=lambda: dict(SHORTCUT_RATES))
    train_n: int = TRAIN_N
    epochs: int = EPOCHS
    probe_n: int = PROBE_N
    cache: Path | None = CACHE


#: The slow test's run: the golden, three retrains (the calibrate command's minimum,
#: for the shortcut's calibrated bounds) and the strongest shortcut, on fewer images,
#: trained afresh.
REDUCED = Plan(
    honest_seeds=HONEST_SEEDS[:4],
    shortcut_rates={max(SHORTCUT_RATES): SHORTCUT_RATES[max(SHORTCUT_RATES)]},
    train_n=800,
    probe_n=48,
    cache=None,
)


def build_model(seed: int) -> Any:
    """The small convnet: 4 conv-batchnorm-relu blocks (3 pooled: a 6x6 map at 48 px),
    global average pooling, a softmax head. Keras functional."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = inputs
    for i, width in enumerate(WIDTHS):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        # batch norm: without it this convnet stays at chance for 12 epochs on these images;
        # momentum 0.9: the moving statistics must settle within a few epochs
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        if i < len(WIDTHS) - 1:
            x = keras.layers.MaxPooling2D(name=f"pool{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(len(CLASS_NAMES), activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name="validate_gate_convnet")


def model_name(kind: str, seed: int, rate: float) -> str:
    return f"honest-s{seed}" if kind == "honest" else f"shortcut-r{rate:g}-s{seed}"


def _recipe_key(plan: Plan) -> str:
    return f"n{plan.train_n}_e{plan.epochs}_d{DATA_SEED}_w{'-'.join(map(str, WIDTHS))}"


#: Seconds each model took to train (this run's, or recorded next to a cached model).
TRAIN_SECONDS: dict[str, float] = {}


def trained(kind: str, seed: int, rate: float, plan: Plan, verbose: int = 0) -> Any:
    """The model ``kind`` (``"honest"`` or ``"shortcut"``) trained with ``seed`` (and
    the cue on ``rate`` of the class-0 images), from the cache or trained now."""
    import keras

    path = None
    if plan.cache is not None:
        path = plan.cache / f"{model_name(kind, seed, rate)}_{_recipe_key(plan)}.keras"
    if path is not None and path.exists():
        sidecar = path.with_suffix(".json")
        if sidecar.exists():
            TRAIN_SECONDS[model_name(kind, seed, rate)] = float(
                json.loads(sidecar.read_text())["train_seconds"]
            )
        return keras.saving.load_model(path)
    start = time.perf_counter()
    data = make_set(plan.train_n, DATA_SEED, label_noise=LABEL_NOISE, cue_rate=rate)
    model = build_model(seed)
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(
        data.images, data.labels, batch_size=BATCH_SIZE, epochs=plan.epochs, verbose=verbose,
        shuffle=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    TRAIN_SECONDS[model_name(kind, seed, rate)] = seconds
    if path is None:
        return model
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.keras")
    model.save(tmp)
    os.replace(tmp, path)  # atomic: a concurrent run never reads half a file
    path.with_suffix(".json").write_text(json.dumps({"train_seconds": round(seconds, 1)}))
    print(f"trained {path.name} in {seconds:.0f} s", flush=True)
    return model


def set_threads() -> None:
    """One thread each: the machine's cores are shared (and results do not depend on
    the thread count when determinism is on)."""
    import tensorflow as tf

    from convviz_check.backends import enable_determinism

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    enable_determinism()
