"""Conformance over the model zoo: every image classifier of ``keras.applications`` and
every keras-hub image classifier family that builds from a config here (no download).

Per model, at a small input and with NumPy-seeded weights (:func:`reinit`):

- activations of the default layers: all finite;
- Grad-CAM at the automatic layer: the layer equals the map that feeds the head's
  global pooling (or Flatten), found here independently by walking Keras' own graph
  back from the output (:func:`reference_layer`); the map is finite and, under the
  default score, not degenerate;
- filter patterns of one mid layer (few steps, two filters): finite, and the default
  ``input_range`` follows the model's own preprocessing (0-255 for EfficientNet,
  EfficientNetV2, MobileNetV3, ConvNeXt).

Transformers on tokens (keras-hub ViT, DeiT, Swin): Grad-CAM on the token grid of the
automatic layer; activations (no spatial map) are refused with a GraphError.

Tiers: ``FAST`` (MobileNetV3Small, and keras-hub's EfficientNet, ResNet and MiT:
seconds each on TensorFlow and torch, while on JAX building a model alone takes 5-20 s,
measured) runs in every backend env. The whole zoo is marked ``zoo`` and
``convviz_slow`` and runs in the ``zoo`` tox env (``pytest -m "zoo and convviz_slow"``,
TensorFlow). Across backends (marked ``crossbackend``): activations and Grad-CAM of
the fast subset agree within the cross-backend tolerances between the running backend
and each other one (the crossbackend tox env); the whole zoo likewise with ``-m
"crossbackend and convviz_slow"``. ``benchmarks/zoo_table.py`` times the same cases for
``docs/zoo.md``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import pytest

import convviz_check as cc
from convviz_check import GraphError, graph
from convviz_check.explain.filters import default_learning_rate, pattern_note, start_image
from convviz_check.explain.gradcam import DEGENERATE_RTOL, gradcam_note
from convviz_check.explain.inputs import infer_input_range
from convviz_check.graph import targets as graph_targets

BACKEND = keras.config.backend()
CLASSES = 5
N_IMAGES = 2
FILTER_STEPS = 3
FILTERS = (0, 1)


# ------------------------------------------------------------------------- the zoo


@dataclass(frozen=True)
class ZooModel:
    """One zoo entry: ``build()`` returns a fresh model taking ``size`` x ``size`` x 3."""

    name: str
    build: Callable[[], Any]
    size: int
    fast: bool = False
    refused_on: dict[str, str] = field(default_factory=dict)  # backend -> Keras' reason
    expected_range: tuple[float, float] | None = None
    seed: int = 0  # of :func:`reinit`


def _application(name: str, size: int) -> Callable[[], Any]:
    def build() -> Any:
        return getattr(keras.applications, name)(
            weights=None, classes=CLASSES, input_shape=(size, size, 3)
        )

    return build


# Input sides: 64 px where the head map is then 2x2 (a /32 network); Inception needs
# 107 px for a 2x2 head map (75 px, its minimum, gives 1x1); Xception's minimum 71 px
# gives 3x3.
_APP_SIZES = {"InceptionV3": 107, "InceptionResNetV2": 107, "Xception": 71}
_APP_NAMES = (
    "VGG16 VGG19 ResNet50 ResNet101 ResNet152 ResNet50V2 ResNet101V2 ResNet152V2 "
    "InceptionV3 InceptionResNetV2 Xception MobileNet MobileNetV2 MobileNetV3Small "
    "MobileNetV3Large DenseNet121 DenseNet169 DenseNet201 NASNetMobile NASNetLarge "
    "EfficientNetB0 EfficientNetB1 EfficientNetB2 EfficientNetB3 EfficientNetB4 "
    "EfficientNetB5 EfficientNetB6 EfficientNetB7 EfficientNetV2B0 EfficientNetV2B1 "
    "EfficientNetV2B2 EfficientNetV2B3 EfficientNetV2S EfficientNetV2M EfficientNetV2L "
    "ConvNeXtTiny ConvNeXtSmall ConvNeXtBase ConvNeXtLarge ConvNeXtXLarge"
).split()
_PIXELS = (0.0, 255.0)
_NASNET_TORCH = "NASNetMobile is not available with the torch backend"  # Keras' refusal


# NASNetMobile with reinit seed 0: all five logits negative for both images (top class
# y_c = -560 and -442), raw < 0 everywhere, so the maps are degenerate by the rule's
# "ReLU(raw) all zero" branch (max|raw| / |y_c| = 0.48, far from the ratio branch).
# Seed 1: y_c = 2254 and 2209, max|raw| / |y_c| = 0.31 (measured on TensorFlow).
_SEEDS = {"NASNetMobile": 1}


def _application_zoo() -> list[ZooModel]:
    zoo = []
    for name in _APP_NAMES:
        preprocessing = name.startswith(("EfficientNet", "MobileNetV3", "ConvNeXt"))
        zoo.append(
            ZooModel(
                name=name,
                build=_application(name, _APP_SIZES.get(name, 64)),
                size=_APP_SIZES.get(name, 64),
                fast=name == "MobileNetV3Small",
                refused_on={"torch": _NASNET_TORCH} if name == "NASNetMobile" else {},
                expected_range=_PIXELS if preprocessing else None,
                seed=_SEEDS.get(name, 0),
            )
        )
    return zoo


def _hub() -> Any:
    return pytest.importorskip("keras_hub").models


def _hub_resnet(size: int, v2: bool) -> Any:
    m = _hub()
    backbone = m.ResNetBackbone(
        input_conv_filters=[64],  # keras-hub requires 64 here
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 32, 32],
        stackwise_num_blocks=[1, 1, 1],
        stackwise_num_strides=[1, 2, 2],
        block_type="basic_block" if v2 else "bottleneck_block",
        use_pre_activation=v2,
        image_shape=(size, size, 3),
    )
    return m.ResNetImageClassifier(backbone=backbone, num_classes=CLASSES)


def _hub_efficientnet(size: int, v2: bool) -> Any:
    m = _hub()
    common = dict(
        stackwise_width_coefficients=[0.5] * 4,
        stackwise_depth_coefficients=[1.0] * 4,
        stackwise_strides=[1, 2, 2, 2],
        stackwise_force_input_filters=[0] * 4,
        stackwise_nores_option=[False] * 4,
        input_shape=(size, size, 3),
        num_features=128,
    )
    if v2:  # fused MBConv stages, then an MBConv stage with squeeze-and-excitation
        stages = dict(
            stackwise_kernel_sizes=[3, 3, 3, 3],
            stackwise_num_repeats=[1, 1, 1, 2],
            stackwise_input_filters=[24, 24, 48, 64],
            stackwise_output_filters=[24, 48, 64, 128],
            stackwise_expansion_ratios=[1, 4, 4, 4],
            stackwise_squeeze_and_excite_ratios=[0.0, 0.0, 0.0, 0.25],
            stackwise_block_types=["fused", "fused", "fused", "unfused"],
        )
    else:  # EfficientNet-B0's first four stages, half width
        stages = dict(
            stackwise_kernel_sizes=[3, 3, 5, 3],
            stackwise_num_repeats=[1, 1, 2, 1],
            stackwise_input_filters=[32, 16, 24, 40],
            stackwise_output_filters=[16, 24, 40, 80],
            stackwise_expansion_ratios=[1, 6, 6, 6],
            stackwise_squeeze_and_excite_ratios=[0.25] * 4,
            stackwise_block_types=["v1"] * 4,
        )
    backbone = m.EfficientNetBackbone(**common, **stages)
    return m.EfficientNetImageClassifier(backbone=backbone, num_classes=CLASSES)


def _hub_mobilenet(size: int) -> Any:
    m = _hub()
    backbone = m.MobileNetBackbone(
        stackwise_expansion=[[16], [72, 88], [96, 240]],
        stackwise_num_blocks=[1, 2, 2],
        stackwise_num_filters=[[16], [24, 24], [40, 40]],
        stackwise_kernel_size=[[3], [3, 3], [5, 5]],
        stackwise_num_strides=[[2], [2, 1], [2, 1]],
        stackwise_se_ratio=[[0.25], [None, None], [0.25, 0.25]],
        stackwise_activation=[["relu"], ["relu", "relu"], ["hard_swish", "hard_swish"]],
        stackwise_padding=[[1], [1, 1], [2, 2]],
        output_num_filters=96,
        depthwise_filters=8,
        depthwise_stride=2,
        depthwise_residual=False,
        last_layer_filter=96,
        image_shape=(size, size, 3),
    )
    return m.MobileNetImageClassifier(backbone=backbone, num_classes=CLASSES, num_features=64)


def _hub_mobilenetv5(size: int, msfa: bool) -> Any:
    m = _hub()
    none2 = [[0], [0, 0]]
    backbone = m.MobileNetV5Backbone(
        stackwise_block_types=[["er"], ["uir", "uir"]],
        stackwise_num_blocks=[1, 2],
        stackwise_num_filters=[[16], [24, 24]],
        stackwise_strides=[[2], [2, 1]],
        stackwise_act_layers=[["relu"], ["relu", "relu"]],
        stackwise_exp_ratios=[[2.0], [2.0, 2.0]],
        # keras-hub 0.32 fails to build a "uir" block with squeeze-and-excitation
        # (its se_layer lambda takes no `filters`): none here.
        stackwise_se_ratios=[[0.0], [0.0, 0.0]],
        stackwise_dw_kernel_sizes=[[0], [3, 3]],
        stackwise_dw_start_kernel_sizes=none2,
        stackwise_dw_end_kernel_sizes=none2,
        stackwise_exp_kernel_sizes=[[3], [0, 0]],
        stackwise_pw_kernel_sizes=[[1], [0, 0]],
        stackwise_num_heads=none2,
        stackwise_key_dims=none2,
        stackwise_value_dims=none2,
        stackwise_kv_strides=none2,
        stackwise_use_cpe=[[False], [False, False]],
        use_msfa=msfa,
        num_features=64,
        image_shape=(size, size, 3),
    )
    return m.MobileNetV5ImageClassifier(backbone=backbone, num_classes=CLASSES, head_hidden_size=64)


def _hub_densenet(size: int) -> Any:
    m = _hub()
    backbone = m.DenseNetBackbone(
        stackwise_num_repeats=[2, 2, 2], image_shape=(size, size, 3), growth_rate=8
    )
    return m.DenseNetImageClassifier(backbone=backbone, num_classes=CLASSES)


def _hub_xception(size: int) -> Any:
    m = _hub()
    backbone = m.XceptionBackbone(
        stackwise_conv_filters=[[8, 16], [32, 32], [32, 64]],
        stackwise_pooling=[False, True, True],
        image_shape=(size, size, 3),
    )
    return m.XceptionImageClassifier(backbone=backbone, num_classes=CLASSES)


def _hub_vgg(size: int, pooling: str) -> Any:
    m = _hub()
    backbone = m.VGGBackbone(
        stackwise_num_repeats=[1, 1, 2],
        stackwise_num_filters=[8, 16, 32],
        image_shape=(size, size, 3),
    )
    return m.VGGImageClassifier(
        backbone=backbone, num_classes=CLASSES, pooling=pooling, pooling_hidden_dim=32
    )


def _hub_cspnet(size: int) -> Any:
    m = _hub()
    backbone = m.CSPNetBackbone(
        stem_filters=16,
        stem_kernel_size=3,
        stem_strides=2,
        stackwise_depth=[1, 1, 1],
        stackwise_strides=[2, 2, 2],
        stackwise_num_filters=[16, 32, 64],
        block_type="dark_block",
        stage_type="dark",
        image_shape=(size, size, 3),
    )
    return m.CSPNetImageClassifier(backbone=backbone, num_classes=CLASSES)


def _hub_hgnetv2(size: int) -> Any:
    m = _hub()
    backbone = m.HGNetV2Backbone(
        depths=[1, 1],
        embedding_size=16,
        hidden_sizes=[32, 64],
        stem_channels=[3, 8, 16],
        hidden_act="relu",
        use_learnable_affine_block=False,
        stackwise_stage_filters=[(16, 8, 32, 1, 2, 3), (32, 16, 64, 1, 2, 3)],
        apply_downsample=[False, True],
        use_lightweight_conv_block=[False, True],
        image_shape=(size, size, 3),
    )
    return m.HGNetV2ImageClassifier(backbone=backbone, preprocessor=None, num_classes=CLASSES)


def _hub_mit(size: int) -> Any:
    m = _hub()
    backbone = m.MiTBackbone(
        layerwise_depths=[1, 1],
        num_layers=2,
        layerwise_num_heads=[1, 2],
        layerwise_sr_ratios=[2, 1],
        max_drop_path_rate=0.0,
        layerwise_patch_sizes=[7, 3],
        layerwise_strides=[4, 2],
        image_shape=(size, size, 3),
        hidden_dims=[16, 32],
    )
    return m.MiTImageClassifier(backbone=backbone, num_classes=CLASSES)


def _hub_zoo() -> list[ZooModel]:
    size = 64
    builders: dict[str, Callable[[], Any]] = {
        "hub.ResNet": lambda: _hub_resnet(size, v2=False),
        "hub.ResNetV2": lambda: _hub_resnet(size, v2=True),
        "hub.EfficientNet": lambda: _hub_efficientnet(size, v2=False),
        "hub.EfficientNetV2": lambda: _hub_efficientnet(size, v2=True),
        "hub.MobileNetV3": lambda: _hub_mobilenet(size),
        "hub.MobileNetV5": lambda: _hub_mobilenetv5(size, msfa=False),
        "hub.MobileNetV5-MSFA": lambda: _hub_mobilenetv5(size, msfa=True),
        "hub.DenseNet": lambda: _hub_densenet(size),
        "hub.Xception": lambda: _hub_xception(size),
        "hub.VGG": lambda: _hub_vgg(size, "avg"),
        "hub.VGG-flatten": lambda: _hub_vgg(size, "flatten"),
        "hub.CSPNet": lambda: _hub_cspnet(size),
        "hub.HGNetV2": lambda: _hub_hgnetv2(size),
        "hub.MiT": lambda: _hub_mit(size),
    }
    fast = ("hub.EfficientNet", "hub.ResNet", "hub.MiT")
    return [ZooModel(name=n, build=b, size=size, fast=n in fast) for n, b in builders.items()]


ZOO: list[ZooModel] = _application_zoo() + _hub_zoo()
FAST = [z for z in ZOO if z.fast]


# ----------------------------------------------------------------------- helpers


def reinit(model: Any, seed: int = 0) -> None:
    """NumPy-seeded weights, identical on every backend: He-normal kernels (fan-in
    over all but the last axis; a depthwise kernel's fan-in is its window), BatchNorm
    ``gamma ~ 1``, ``moving_variance`` in [0.5, 1.5], small ``beta``/means/biases.
    Non-trainable preprocessing statistics (``Normalization``) are left as built."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        leaf = v.path.rsplit("/", 1)[-1]
        shape = tuple(v.shape)
        if leaf in ("mean", "variance", "count") or not shape:
            continue
        if leaf == "gamma":
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        elif leaf == "moving_variance":
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf in ("beta", "moving_mean", "bias") or len(shape) == 1:
            value = 0.1 * rng.standard_normal(shape)
        else:
            axes = shape[:-2] if "depthwise" in leaf else shape[:-1]
            value = rng.standard_normal(shape) * np.sqrt(2.0 / max(int(np.prod(axes)), 1))
        v.assign(value.astype(v.dtype))


def _producer(tensor: Any, outer: dict) -> tuple[Any, list, dict]:
    """``(operation, input tensors, their context)`` of the call that produced
    ``tensor``, descending into nested models.

    Keras records the producing call of every symbolic tensor in ``_keras_history``
    (operation, node index, tensor index): the walk uses Keras' own graph, not
    convviz_check's flattening. ``outer`` maps a nested model's input tensors to the
    tensors its call received (``"parent"``: the enclosing context)."""
    op, node_index, tensor_index = tensor._keras_history
    if isinstance(op, keras.layers.InputLayer) and id(tensor) in outer:
        return _producer(outer[id(tensor)], outer["parent"])
    if isinstance(op, keras.Model):
        received = op._inbound_nodes[node_index].input_tensors
        inner = dict(zip(map(id, keras.tree.flatten(op.inputs)), received, strict=True))
        inner["parent"] = outer
        return _producer(keras.tree.flatten(op.outputs)[tensor_index], inner)
    return op, list(op._inbound_nodes[node_index].input_tensors), outer


# The head poolings met in the zoo (keras-hub MobileNetV5 uses its own adaptive pool).
_HEAD_POOLINGS = ("GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten", "SelectAdaptivePool2d")


def reference_layer(model: Any) -> str:
    """The name of the layer whose output feeds the head's pooling: walking back from
    the model's output, breadth first, the first global pooling (or Flatten) whose
    input is a map larger than 1x1 (a Flatten of an already pooled ``(1, 1, C)``
    tensor, as in the MobileNet heads, is passed by). Every zoo size gives head maps
    of at least 2x2."""
    queue: list[tuple[Any, dict]] = [(model.outputs[0], {"parent": {}})]
    seen = set()
    while queue:
        tensor, context = queue.pop(0)
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        op, inputs, context = _producer(tensor, context)
        if type(op).__name__ in _HEAD_POOLINGS and len(inputs[0].shape) == 4:
            if tuple(inputs[0].shape[1:3]) != (1, 1):  # the zoo is channels-last
                return _producer(inputs[0], context)[0].name
        queue.extend((t, context) for t in inputs)
    raise AssertionError(f"no head pooling found in {model.name}")


def mid_layer(model: Any, size: int) -> str:
    """A convolution (or other map, where the convolutions sit inside custom layers) in
    the middle of the network whose map is at least 8x8 at this input size."""
    flat = graph.flatten(model)
    maps = graph_targets.map_layers(model)
    convs = [n for n in maps if flat.record(n).is_conv] or maps
    wide = [n for n in convs if min(_map_hw(flat.record(n), size)) >= 8]
    return wide[len(wide) // 2]


def _map_hw(record: Any, size: int) -> tuple[int, int]:
    shape = record.output_shape
    hw = shape[2:4] if record.data_format == "channels_first" else shape[1:3]
    return tuple(int(d) if d is not None else size for d in hw)


def images_for(model: Any, size: int, seed: int = 0) -> np.ndarray:
    """``N_IMAGES`` seeded uniform images in the range the model expects."""
    lo, hi = infer_input_range(model) or (0.0, 1.0)
    rng = np.random.default_rng(seed)
    return (lo + (hi - lo) * rng.random((N_IMAGES, size, size, 3))).astype("float32")


@dataclass
class ZooResult:
    """What :func:`run_case` measured (seconds exclude the model build)."""

    name: str
    layer: str
    map_hw: tuple[int, int]
    activation_layers: int
    ratio: np.ndarray  # max|raw| / |y_c| per image
    degenerate: np.ndarray
    input_range: tuple[float, float] | None
    filter_layer: str
    seconds: dict[str, float]
    note: str
    reference: str
    cam: Any = None
    acts: dict = field(default_factory=dict)
    patterns: Any = None


def build(case: ZooModel) -> Any:
    """The case's model with :func:`reinit` weights; skips where Keras refuses it."""
    if BACKEND in case.refused_on:
        try:
            case.build()
        except ValueError as e:
            pytest.skip(f"{case.name}: {e}")
    model = case.build()
    reinit(model, case.seed)
    return model


def run_case(case: ZooModel, model: Any) -> ZooResult:
    """Activations of the default layers, Grad-CAM at the automatic layer and filter
    patterns of :func:`mid_layer`, each timed (first call: compilation included)."""
    x = images_for(model, case.size)
    seconds = {}
    t = time.perf_counter()
    acts = cc.activations(model, x)
    seconds["activations"] = time.perf_counter() - t
    t = time.perf_counter()
    cam = cc.gradcam(model, x)
    seconds["gradcam"] = time.perf_counter() - t
    layer = mid_layer(model, case.size)
    t = time.perf_counter()
    patterns = cc.filter_patterns(
        model, layer, filters=list(FILTERS), steps=FILTER_STEPS, batch_size=len(FILTERS)
    )
    seconds["filters"] = time.perf_counter() - t
    record = graph.flatten(model).record(cam.layer)
    return ZooResult(
        name=case.name,
        layer=cam.layer,
        map_hw=_map_hw(record, case.size),
        activation_layers=len(acts),
        ratio=np.abs(cam.raw).max(axis=(1, 2)) / np.maximum(np.abs(cam.score), 1e-30),
        degenerate=cam.degenerate,
        input_range=infer_input_range(model),
        filter_layer=layer,
        seconds=seconds,
        note=gradcam_note(model),
        reference=reference_layer(model),
        cam=cam,
        acts=acts,
        patterns=patterns,
    )


# ------------------------------------------------------------------------- tests


def check(case: ZooModel, model: Any, result: ZooResult) -> None:
    """The conformance rules of one zoo model (see the module docstring)."""
    assert result.layer == result.reference, (result.layer, result.reference)
    assert result.layer in graph_targets.gradcam_layers(model)
    assert min(result.map_hw) >= 2  # every zoo size gives a head map of 2x2 or more
    assert result.activation_layers > 0
    for name, act in result.acts.items():
        assert np.isfinite(act).all(), f"non-finite activations in {name}"
    cam = result.cam
    assert np.isfinite(cam.raw).all() and np.isfinite(cam.heatmap).all()
    assert cam.heatmap.shape == (N_IMAGES, *result.map_hw)
    # Not degenerate: the class score depends on the map (ratio far above the rule).
    assert not result.degenerate.any() and (result.ratio > DEGENERATE_RTOL).all(), result.ratio
    assert result.input_range == case.expected_range
    # The CLI's default filter layer (explain, agree): a conv map before the head, wide
    # enough for the pattern loss (stock models at 64 px end in 2x2 maps that are not).
    default = graph_targets.default_filters_layer(model)
    assert default in graph_targets.map_layers(model), default
    side = graph_targets.spatial_side(model, default)
    assert side is not None and side >= graph_targets.MIN_FILTER_MAP_CELLS, (default, side)
    patterns = result.patterns
    assert patterns.shape == (len(FILTERS), case.size, case.size, 3)
    assert np.isfinite(patterns).all()
    # Each step moves an image by the learning rate (unit-norm gradient). A filter that
    # is zero over the whole start image (ReLU) is a dead start: restarted from another
    # start, and the call's note names it (the others never leave the shared start's
    # reach).
    lo, hi = case.expected_range or (0.0, 1.0)
    start = start_image(case.size, case.size, 3, seed=0, input_range=(lo, hi))
    step = default_learning_rate(case.size, case.size, 3) * (hi - lo)
    moved = np.sqrt(((patterns.astype(np.float64) - start) ** 2).sum(axis=(1, 2, 3)))
    restarted = {int(f) for f in re.findall(r"filter (\d+): dead start", pattern_note(patterns))}
    steady = np.array([f not in restarted for f in FILTERS])
    assert (moved[steady] <= FILTER_STEPS * step * (1 + 1e-3)).all(), (moved, step, restarted)


def _run(case: ZooModel) -> None:
    model = build(case)
    try:
        check(case, model, run_case(case, model))
    finally:
        # Compiled functions are cached on the model (graph.model_cache) and go with it;
        # a cache that outlived its model kept the zoo at a 13 GB peak (measured).
        del model
        keras.backend.clear_session()


@pytest.mark.parametrize("case", FAST, ids=[z.name for z in FAST])
def test_zoo_fast_subset(case: ZooModel) -> None:
    _run(case)


@pytest.mark.zoo
@pytest.mark.convviz_slow
@pytest.mark.parametrize("case", ZOO, ids=[z.name for z in ZOO])
def test_zoo(case: ZooModel) -> None:
    _run(case)


def _token_transformer(family: str, layers: int = 1) -> Any:
    m = _hub()
    shape = (32, 32, 3)
    keras.utils.set_random_seed(0)
    if family == "ViT":
        backbone = m.ViTBackbone(
            image_shape=shape,
            patch_size=8,
            num_layers=layers,
            num_heads=2,
            hidden_dim=8,
            mlp_dim=16,
        )
        return m.ViTImageClassifier(backbone=backbone, num_classes=CLASSES)
    if family == "DeiT":
        backbone = m.DeiTBackbone(
            image_shape=shape,
            patch_size=8,
            num_layers=layers,
            num_heads=2,
            hidden_dim=8,
            intermediate_dim=16,
        )
        return m.DeiTImageClassifier(backbone=backbone, num_classes=CLASSES)
    backbone = m.SwinTransformerBackbone(
        image_shape=shape, embed_dim=8, depths=(layers,), num_heads=(1,), window_size=4
    )
    return m.SwinTransformerImageClassifier(backbone=backbone, num_classes=CLASSES)


# Operations that act on each token alone (the walk below passes them on its way back
# from a class-token head to the encoder).
_PER_TOKEN = ("Dropout", "LayerNormalization", "Dense", "Activation")


def reference_token_layer(model: Any) -> str:
    """The automatic Grad-CAM layer of a keras-hub transformer, found by walking Keras'
    own graph back from the output (not convviz_check's flattening or replay):

    - to the operation that turns ``(batch, tokens, features)`` into a vector (the
      head's token pooling);
    - a mean over tokens (Swin): the layer whose output the mean reads, dropout skipped;
    - a token pick (``x[:, 0]``, ViT and DeiT): back over per-token layers to the
      encoder that holds the blocks (``encoder_layers``); the layer is what its last
      block reads: the block before it, else the encoder's own dropout when it has one
      (keras-hub's ViTEncoder applies it before the first block), else the layer that
      feeds the encoder."""
    queue: list[tuple[Any, dict]] = [(model.outputs[0], {"parent": {}})]
    while queue:
        tensor, context = queue.pop(0)
        op, inputs, context = _producer(tensor, context)
        if len(inputs) == 1 and len(inputs[0].shape) == 3 and len(tensor.shape) == 2:
            break
        queue.extend((t, context) for t in inputs)
    else:
        raise AssertionError(f"no token pooling found in {model.name}")
    source, inputs, context = _producer(inputs[0], context)
    if "mean" in type(op).__name__.lower() or "average" in type(op).__name__.lower():
        while type(source).__name__ == "Dropout":
            source, inputs, context = _producer(inputs[0], context)
        return str(source.name)
    while not hasattr(source, "encoder_layers"):
        assert type(source).__name__ in _PER_TOKEN, type(source).__name__
        source, inputs, context = _producer(inputs[0], context)
    blocks = source.encoder_layers
    if len(blocks) > 1:
        return str(blocks[-2].name)
    dropout = getattr(source, "dropout", None)
    if isinstance(dropout, keras.layers.Dropout):
        return str(dropout.name)
    return str(_producer(inputs[0], context)[0].name)


@pytest.mark.parametrize(
    "family, layers, grid",
    [
        ("ViT", 1, (4, 4)),
        ("ViT", 2, (4, 4)),
        ("DeiT", 1, (4, 4)),
        ("DeiT", 2, (4, 4)),
        ("Swin", 1, (8, 8)),
    ],
)
def test_token_transformers_get_a_token_grid(family: str, layers: int, grid: tuple) -> None:
    # Runs under every backend (each tox env runs tests/ under one).
    model = _token_transformer(family, layers)
    x = np.random.default_rng(0).random((1, 32, 32, 3)).astype(np.float32)
    cam = cc.gradcam(model, x)
    assert cam.layer == reference_token_layer(model)
    assert cam.heatmap.shape == (1, *grid)
    assert np.isfinite(cam.heatmap).all() and np.isfinite(cam.raw).all()
    # The layer reaches the score: the map before ReLU is not zero (behind a class-token
    # head, the last block's output gives exactly zero). Whether ReLU leaves anything
    # depends on the random weights (JAX's DeiT with 2 blocks: all negative).
    assert np.abs(cam.raw).max() > DEGENERATE_RTOL * np.abs(cam.score).max()
    with pytest.raises(GraphError, match="no 2-D convolution or pooling layer"):
        cc.activations(model, x)
    assert graph_targets.map_layers(model) == []


# ----------------------------------------------------------------- across backends
# Cross-backend agreement of activations and Grad-CAM over the zoo: the model is built
# and seeded here, under the running backend (the reference), saved as .keras, and each
# other backend's worker loads the file (the route a user takes). One test per model
# and other backend, so a pair Keras refuses (NASNetMobile on torch) is skipped with
# Keras' reason while the rest of the model is still compared. Tolerances are the
# cross-backend defaults, unchanged. The fast subset runs in the crossbackend tox env
# (8 pairs, workers started cold: 124 s at load average ~5.5 on the 2-core box, 268 s
# at ~9).
OTHER_BACKENDS = tuple(b for b in ("tensorflow", "torch", "jax") if b != BACKEND)
AGREE_WHAT = ("activations", "gradcam")

# keras-hub 0.32's EfficientNet built from the small config above does not survive its
# own config round trip: from_config builds `top_conv` with 640 filters where the built
# model has 64 (measured: the .keras file and a preset both fail to load, on every
# backend, with "Layer 'top_conv' expected 1 variables, but received 0"). Its workers
# build it from this module instead; reinit's NumPy-seeded weights are the same on every
# backend, which the report's model fingerprints confirm.
_FACTORIES = {"hub.EfficientNet": "seeded_hub_efficientnet"}


def seeded_hub_efficientnet() -> Any:
    """hub.EfficientNet with :func:`reinit` weights (a ``module:factory`` source)."""
    return build(next(z for z in ZOO if z.name == "hub.EfficientNet"))


def _agree_params(cases: list[ZooModel]) -> list[Any]:
    return [pytest.param(c, b, id=f"{c.name}-{b}") for c in cases for b in OTHER_BACKENDS]


@pytest.fixture(scope="module")
def saved_zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Model name -> its source, each model built and saved once per module."""
    return {"dir": str(tmp_path_factory.mktemp("zoo"))}


def _source(case: ZooModel, saved: dict[str, str]) -> str:
    if case.name in _FACTORIES:
        return f"{__name__}:{_FACTORIES[case.name]}"
    if case.name not in saved:
        model = build(case)  # skips where Keras refuses it under the running backend
        path = f"{saved['dir']}/{case.name}.keras"
        model.save(path)
        saved[case.name] = path
        del model
        keras.backend.clear_session()
    return saved[case.name]


def _agree(case: ZooModel, other: str, saved: dict[str, str], config: Any) -> None:
    from convviz_check.crossbackend import agreement as ag
    from tests import _worker_ops
    from tests.test_agreement import require_or_skip

    if other in case.refused_on:
        pytest.skip(f"{case.name} vs {other}: refused by Keras ({case.refused_on[other]})")
    require_or_skip((BACKEND, other))
    source = _source(case, saved)
    lo, hi = case.expected_range or (0.0, 1.0)  # the range images_for infers
    images = (
        lo + (hi - lo) * np.random.default_rng(0).random((N_IMAGES, case.size, case.size, 3))
    ).astype("float32")
    custom = ["keras_hub"] if case.name.startswith("hub.") else None
    pool = _worker_ops.shared_pool(config)
    backends = (BACKEND, other)
    try:
        report = cc.agreement(
            source, images, AGREE_WHAT, backends, pool=pool, custom_objects=custom
        )
    finally:
        # Workers cache every model they load: drop this one (the reference keeps it
        # for the model's next pair), or the zoo piles up in the workers' memory.
        spec = ag.model_spec(source, True, custom)
        last = other == OTHER_BACKENDS[-1] or OTHER_BACKENDS[-1] in case.refused_on
        for b in backends if last else (other,):
            pool.request(b, "evict", {"model": spec})
        if last and case.name in saved:  # the whole zoo's files add up to gigabytes
            os.remove(saved.pop(case.name))
    assert report.passed, str(report)
    assert len({info["fingerprint"] for info in report.info.values()}) == 1, report.info
    # Meaningful maps were compared, not degenerate against degenerate.
    assert not [n for n in report.notes if "degenerate" in n], str(report)


@pytest.mark.crossbackend
@pytest.mark.parametrize("case, other", _agree_params(FAST))
def test_zoo_fast_subset_agrees_across_backends(
    case: ZooModel, other: str, saved_zoo: dict[str, str], request: pytest.FixtureRequest
) -> None:
    _agree(case, other, saved_zoo, request.config)


# The whole zoo across backends: about an hour on the 2-core box (17 models took
# 18 min at load average ~8), so it is in no tox env (the zoo env is TensorFlow only,
# and `-m crossbackend` deselects convviz_slow): run it with
# `pytest -m "crossbackend and convviz_slow" tests/test_zoo.py` where all three
# backends are installed.
@pytest.mark.crossbackend
@pytest.mark.convviz_slow
@pytest.mark.parametrize("case, other", _agree_params(ZOO))
def test_zoo_agrees_across_backends(
    case: ZooModel, other: str, saved_zoo: dict[str, str], request: pytest.FixtureRequest
) -> None:
    _agree(case, other, saved_zoo, request.config)
