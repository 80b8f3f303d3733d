"""Small model builders shared by the foundation tests (not a test module)."""

from __future__ import annotations

import numpy as np


def seeded_weights(model, seed: int = 0, scale: float = 0.3) -> None:
    """Set every weight from NumPy (identical on every backend, unlike keras seeds)."""
    rng = np.random.default_rng(seed)
    model.set_weights(
        [rng.normal(0, scale, w.shape).astype("float32") for w in model.get_weights()]
    )


def sequential(input_shape=(16, 16, 3), seed: int = 0, name: str = "seq"):
    """Conv/pool/conv, GAP, softmax head; NumPy-seeded weights (identical on every
    backend, unlike Keras' seeded initializers)."""
    import keras
    from keras import layers

    model = keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(4, 3, activation="relu", name="c1"),
            layers.MaxPooling2D(2, name="p1"),
            layers.Conv2D(6, 3, activation="relu", padding="same", name="c2"),
            layers.GlobalAveragePooling2D(name="gap"),
            layers.Dense(3, activation="softmax", name="head"),
        ],
        name=name,
    )
    seeded_weights(model, seed)
    return model


def residual(input_shape=(12, 12, 3), activation="tanh"):
    """Functional model with a skip connection that jumps over ``mid``."""
    import keras
    from keras import layers

    x_in = keras.Input(input_shape, name="image")
    a = layers.Conv2D(4, 3, padding="same", activation=activation, name="first")(x_in)
    b = layers.Conv2D(4, 3, padding="same", activation=activation, name="mid")(a)
    c = layers.Conv2D(4, 3, padding="same", activation=activation, name="after")(b)
    s = layers.Add(name="skip_add")([a, c])  # skip from `first` over `mid`
    s2 = layers.Add(name="skip_mid")([b, s])  # `mid` also reaches the head directly
    g = layers.GlobalAveragePooling2D(name="gap")(s2)
    out = layers.Dense(3, activation="softmax", name="head")(g)
    model = keras.Model(x_in, out, name="residual")
    seeded_weights(model)
    return model


def nested_with_rescaling(input_shape=(12, 12, 3)):
    """Rescaling in front of a nested functional backbone whose layer names collide
    with the outer model's."""
    import keras
    from keras import layers

    inner_in = keras.Input(input_shape)
    h = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inner_in)
    h = layers.MaxPooling2D(2, name="pool")(h)
    h = layers.Conv2D(5, 3, padding="same", activation="relu", name="conv_b")(h)
    backbone = keras.Model(inner_in, h, name="backbone")
    x_in = keras.Input(input_shape)
    x = layers.Rescaling(1 / 255.0, name="rescale")(x_in)
    x = backbone(x)
    x = layers.Conv2D(3, 1, name="conv")(x)  # collides with backbone/conv
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(2, activation="sigmoid", name="head")(x)
    model = keras.Model(x_in, out, name="outer")
    seeded_weights(model)
    return model


def tiny_xception(image_shape=(32, 32, 3), num_classes=3):
    import keras_hub

    backbone = keras_hub.models.XceptionBackbone(
        stackwise_conv_filters=[[4, 4], [8, 8]],
        stackwise_pooling=[False, True],
        image_shape=image_shape,
    )
    model = keras_hub.models.XceptionImageClassifier(backbone=backbone, num_classes=num_classes)
    seeded_weights(model, scale=0.1)
    return model


def tiny_vit(class_token: bool = True, layers: int = 2, seed: int = 11, scale: float = 0.3):
    """A keras-hub ViT classifier on 32x32 images in 8-px patches (a 4x4 token grid),
    2 heads of width 8, 3 classes; NumPy-seeded weights (the same model on every backend;
    Keras' own initializers are unseeded here, and an unlucky draw can make a map
    degenerate). ``class_token=False`` pools the tokens by their mean."""
    import keras_hub as hub

    backbone = hub.models.ViTBackbone(
        image_shape=(32, 32, 3),
        patch_size=8,
        num_layers=layers,
        num_heads=2,
        hidden_dim=8,
        mlp_dim=16,
        use_class_token=class_token,
    )
    pooling = "token" if class_token else "gap"
    model = hub.models.ViTImageClassifier(backbone=backbone, num_classes=3, pooling=pooling)
    seeded_weights(model, seed, scale)
    return model


def tiny_deit(seed: int = 12, scale: float = 0.3):
    """The DeiT counterpart of :func:`tiny_vit` (class and distillation tokens)."""
    import keras_hub as hub

    backbone = hub.models.DeiTBackbone(
        image_shape=(32, 32, 3),
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
    )
    model = hub.models.DeiTImageClassifier(backbone=backbone, num_classes=3)
    seeded_weights(model, seed, scale)
    return model


def gradcam_result(n: int = 2, h: int = 5, w: int = 6, degenerate_second: bool = False):
    """A seeded GradCAM of n maps (h, w); with ``degenerate_second`` the second map is
    flagged degenerate (storage must keep the flags as given)."""
    from convviz_check.types import GradCAM

    heat = np.random.default_rng(3).random((n, h, w)).astype(np.float32)
    degenerate = np.zeros(n, bool)
    if degenerate_second and n > 1:
        degenerate[1] = True
    return GradCAM(
        heatmap=heat / heat.max(axis=(1, 2), keepdims=True),
        raw=heat * 3,
        class_index=np.arange(n, dtype=np.int64),
        score=np.linspace(1, 2, n).astype(np.float32),
        score_kind="logit",
        layer="block/conv",
        degenerate=degenerate,
        image_shape=(32, 40),
    )
