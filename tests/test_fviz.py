"""Robust feature visualization (``filter_patterns(parameterization="fft", ...)``).

NumPy references of each piece on small arrays; the keras.ops version against them on
the running backend; the ascent on a tiny model and on the bundled convnet. Run under
each backend with KERAS_BACKEND=tensorflow / torch / jax.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from convviz_check.errors import ConvvizError, InputError
from convviz_check.explain import fviz
from convviz_check.spectral import high_frequency_share

# --- NumPy references (no Keras) ---------------------------------------------------


@pytest.mark.parametrize("width", [6, 7])
def test_irfft2_bases_equal_numpy_irfft2(width: int) -> None:
    rng = np.random.default_rng(0)
    h = 5
    z = rng.normal(size=(2, 3, h, width // 2 + 1)) + 1j * rng.normal(size=(2, 3, h, width // 2 + 1))
    ch, sh, cw, sw = (m.astype(np.float64) for m in fviz.irfft2_bases(h, width))
    xr, xi = z.real, z.imag
    ours = (ch @ xr - sh @ xi) @ cw + (sh @ xr + ch @ xi) @ sw
    np.testing.assert_allclose(ours, np.fft.irfft2(z, s=(h, width), norm="ortho"), atol=1e-5)


def test_spectrum_scale_is_one_over_frequency() -> None:
    s = fviz.spectrum_scale(8, 8)
    # Frequencies (0, 1/8) and (0, 2/8): amplitudes in the ratio 2:1; DC takes the
    # lowest frequency's (1/max(H, W)); root mean square 1.
    assert s[0, 1] / s[0, 2] == pytest.approx(2.0, rel=1e-6)
    assert s[0, 0] == pytest.approx(s[0, 1], rel=1e-6)
    assert s[1, 1] / s[0, 1] == pytest.approx(1 / math.sqrt(2), rel=1e-6)
    assert np.sqrt(np.mean(s.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-5)


def test_spectrum_to_image_is_irfft2_of_scaled_spectrum() -> None:
    spectrum = np.zeros((1, 1, 4, 3, 2), np.float32)
    spectrum[0, 0, 0, 1, 0] = 1.0  # one cosine along x, period 4
    img = fviz.spectrum_to_image(spectrum, 4)[0, :, :, 0]
    amp = fviz.spectrum_scale(4, 4)[0, 1] * 2 / 4  # 2 bins (k and -k), ortho 1/sqrt(16)
    np.testing.assert_allclose(
        img, amp * np.cos(np.pi * np.arange(4) / 2)[None, :] + 0 * img, atol=1e-6
    )


def test_colour_matrix_is_the_square_root_of_the_covariance() -> None:
    m = fviz.COLOR_SQRT_COV.astype(np.float64)
    cov = np.array(fviz._EIGVEC) @ np.diag(fviz._EIGVAL) @ np.array(fviz._EIGVEC).T
    scale = np.linalg.norm(m, axis=0).max()
    assert scale == pytest.approx(1.0)
    k = np.linalg.norm(fviz._SQRT_COV, axis=0).max()
    np.testing.assert_allclose((m * k) @ (m * k).T, cov, rtol=1e-5, atol=1e-7)
    assert (m[:, 0] > 0).all()  # first channel: brightness, same sign in R, G, B


def test_pad_and_transform_shapes_and_identity() -> None:
    unit = np.random.default_rng(1).uniform(size=(2, 5, 6, 3)).astype(np.float32)
    padded = fviz.pad_image(unit, 2)
    assert padded.shape == (2, 9, 10, 3)
    assert (padded[:, :2] == 0.5).all() and (padded[:, :, -2:] == 0.5).all()
    t = fviz.Transforms(pad=2, jitter=1)
    identity = np.array([1.0, 0.0, 0.0, 0.0], np.float32)
    np.testing.assert_allclose(fviz.transform_image(unit, t, identity), unit, atol=1e-6)


def test_jitter_shifts_by_whole_pixels() -> None:
    unit = np.random.default_rng(2).uniform(size=(1, 5, 6, 1)).astype(np.float32)
    t = fviz.Transforms(pad=2, jitter=2)
    out = fviz.transform_image(unit, t, np.array([1.0, 0.0, 1.0, -2.0], np.float32))
    # Output (y, x) reads input (y + 1, x - 2): the image moves up 1 and right 2.
    np.testing.assert_allclose(out[0, :-1, 2:, 0], unit[0, 1:, :-2, 0], atol=1e-6)
    assert (out[0, -1, :, 0] == 0.5).all() and (out[0, :, :2, 0] == 0.5).all()


def test_rotation_by_90_degrees_and_scale() -> None:
    unit = np.random.default_rng(3).uniform(size=(1, 5, 5, 1)).astype(np.float32)
    out = fviz.transform_image(unit, fviz.Transforms(), np.array([1.0, math.pi / 2, 0, 0]))
    np.testing.assert_allclose(out[0, :, :, 0], np.rot90(unit[0, :, :, 0], -1), atol=1e-5)
    ys, xs = fviz.sample_coordinates(5, 5, 0, np.array([2.0, 0.0, 0.0, 0.0]))
    assert ys.reshape(5, 5)[0, 0] == pytest.approx(1.0) and xs.reshape(5, 5)[4, 4] == 3.0


def test_schedule_is_seeded_and_in_range() -> None:
    t = fviz.Transforms(pad=4, jitter=3, scale=(0.9, 1.1), rotate=10.0)
    a = fviz.transform_schedule(t, 50, seed=7)
    np.testing.assert_array_equal(a, fviz.transform_schedule(t, 50, seed=7))
    assert not np.array_equal(a, fviz.transform_schedule(t, 50, seed=8))
    assert a.shape == (50, 4)
    assert (0.9 <= a[:, 0]).all() and (a[:, 0] <= 1.1).all()
    assert (np.abs(a[:, 1]) <= math.radians(10)).all()
    assert set(np.unique(a[:, 2:])) <= {-3, -2, -1, 0, 1, 2, 3}
    assert (fviz.transform_schedule(fviz.Transforms(), 3, 0) == [1, 0, 0, 0]).all()


def test_penalties_against_hand_values() -> None:
    x = np.full((1, 2, 2, 1), 0.5, np.float32)
    x[0, 0, 0, 0] = 1.0  # one corner differs by 0.5 from its 2 neighbours
    assert fviz.total_variation(x)[0] == pytest.approx((0.5 + 0.5) / 4)
    assert fviz.l1_penalty(x)[0] == pytest.approx(0.5 / 4)
    assert fviz.l2_penalty(x)[0] == pytest.approx(0.25 / 4)


def test_high_frequency_share_hand_values() -> None:
    checker = (np.indices((8, 8)).sum(0) % 2).astype(float)
    assert high_frequency_share(checker) == pytest.approx(1.0)
    slow = np.cos(2 * np.pi * np.arange(16) / 16)[None, :].repeat(16, 0)
    assert high_frequency_share(slow) == pytest.approx(0.0, abs=1e-12)
    assert high_frequency_share(np.ones((4, 4, 3))) == 0.0
    noise = np.random.default_rng(0).normal(size=(64, 64))
    assert 0.7 < high_frequency_share(noise) < 0.9
    with pytest.raises(InputError, match="image must be"):
        high_frequency_share(np.zeros(5))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"parameterization": "fourier"}, "parameterization='fourier'.*'pixel', 'fft'"),
        ({"objective": "class"}, "objective='class'"),
        ({"transforms": {"zoom": 2}}, r"Unknown transforms key\(s\) \['zoom'\]"),
        ({"transforms": {"scale": (1.2, 0.8)}}, "0 < low <= high"),
        ({"transforms": "yes"}, "transforms must be None, False"),
        ({"penalties": {"tv": -1}}, "tv must be a finite weight >= 0. Received: tv=-1"),
        ({"decorrelate": "on"}, "decorrelate='on'"),
    ],
)
def test_bad_options_raise(kwargs: dict, match: str) -> None:
    args = dict(
        parameterization="fft",
        decorrelate=None,
        transforms=None,
        penalties=None,
        objective="channel",
    )
    args.update(kwargs)
    with pytest.raises(InputError, match=match) as info:
        fviz.resolve_config(height=8, width=8, **args)
    assert isinstance(info.value, ConvvizError)


def test_presets() -> None:
    assert fviz.resolve_config("pixel", None, None, None, "channel", 64, 64) is None
    c = fviz.resolve_config("fft", None, None, None, "channel", 64, 64)
    assert c is not None and c.decorrelate and c.penalties.tv == fviz.PRESET_TV
    assert c.transforms == fviz.Transforms(pad=4, jitter=4, scale=(0.9, 1.1), rotate=10.0)
    off = fviz.resolve_config("fft", False, False, False, "neuron", 64, 64)
    assert off is not None and off.transforms.identity and off.penalties == fviz.Penalties()
    pix = fviz.resolve_config("pixel", None, None, {"l1": 1}, "channel", 64, 64)
    assert pix is not None and not pix.decorrelate and pix.penalties.l1 == 1.0


# --- keras.ops on the running backend ------------------------------------------------


def _np(x: object) -> np.ndarray:
    from convviz_check import backends

    return backends.to_numpy(x)


def test_render_matches_numpy_reference() -> None:
    from keras import ops

    from convviz_check.explain.fviz_ascent import make_render

    config = fviz.resolve_config(
        "fft", None, False, {"tv": 0.3, "l1": 0.2, "l2": 0.1}, "channel", 6, 7
    )
    assert config is not None
    params = fviz.initial_params("fft", 2, 6, 7, 3, seed=0)
    params[1] *= 2  # the two images differ
    render = make_render(config, 6, 7, (-1.0, 1.0), channels_first=False)
    image, penalty = render(ops.convert_to_tensor(params), ops.convert_to_tensor(np.zeros(4)))
    unit = fviz.params_to_unit(config, params, 7)
    np.testing.assert_allclose(_np(image), -1 + 2 * unit, atol=1e-5)
    want = (
        0.3 * fviz.total_variation(unit) + 0.2 * fviz.l1_penalty(unit) + 0.1 * fviz.l2_penalty(unit)
    ).sum()
    assert float(_np(penalty)) == pytest.approx(float(want), rel=1e-4)


def test_transforms_match_numpy_reference() -> None:
    from keras import ops

    from convviz_check.explain.fviz_ascent import _transform

    config = fviz.resolve_config("pixel", False, {"pad": 2, "jitter": 2}, None, "channel", 5, 6)
    assert config is not None
    unit = np.random.default_rng(4).uniform(size=(2, 5, 6, 3)).astype(np.float32)
    warp = _transform(config, 5, 6)
    for row in ([1.0, 0.0, 1.0, -2.0], [1.07, 0.15, -1.0, 2.0], [0.9, -0.1, 0.0, 0.0]):
        r = np.asarray(row, np.float32)
        got = _np(warp(ops.convert_to_tensor(unit), ops.convert_to_tensor(r)))
        np.testing.assert_allclose(got, fviz.transform_image(unit, config.transforms, r), atol=1e-5)


# --- the ascent ------------------------------------------------------------------------


def _tiny_model() -> object:
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((24, 24, 3))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(4, 3, name="c2")(x)
    x = keras.layers.Activation("tanh", name="c2_tanh")(x)
    return keras.Model(inputs, x)


def _channel_means(model: object, layer: str, images: np.ndarray, filters: list[int]) -> np.ndarray:
    from convviz_check import backends
    from convviz_check import graph as graph_lib

    act = backends.make_forward(graph_lib.submodel(model, [layer]))([images])[0]
    return np.array([act[i, 2:-2, 2:-2, f].mean() for i, f in enumerate(filters)])


@pytest.mark.parametrize(
    ("layer", "objective"), [("c2", "channel"), ("c2", "neuron"), ("c2_tanh", "channel")]
)
def test_robust_pattern_raises_its_channel(layer: str, objective: str) -> None:
    import convviz_check as cc

    model = _tiny_model()
    filters = [0, 1, 3]
    patterns = cc.filter_patterns(
        model, layer, filters=filters, parameterization="fft", objective=objective, steps=40
    )
    assert patterns.shape == (3, 24, 24, 3) and patterns.dtype == np.float32
    from convviz_check import graph as graph_lib

    (ascent,) = graph_lib.model_cache(model, "fviz").values()
    assert ascent.restricted == (layer == "c2")  # only the asked channels of a Conv2D
    assert 0.0 <= patterns.min() and patterns.max() <= 1.0  # the sigmoid keeps the range
    config = fviz.resolve_config("fft", None, None, None, objective, 24, 24)
    assert config is not None
    start = fviz.params_to_unit(config, fviz.initial_params("fft", 3, 24, 24, 3, 0), 24)
    if objective == "channel":
        after = _channel_means(model, layer, patterns, filters)
        before = _channel_means(model, layer, start, filters)
    else:
        from convviz_check import backends

        fwd = backends.make_forward(graph_lib.submodel(model, [layer]))
        after = np.array([fwd([patterns])[0][i, 10, 10, f] for i, f in enumerate(filters)])
        before = np.array([fwd([start])[0][i, 10, 10, f] for i, f in enumerate(filters)])
    assert (after > before + 0.05).all(), (before, after)


def test_same_seed_same_bytes_and_batch_independent() -> None:
    import convviz_check as cc

    model = _tiny_model()
    kw = dict(parameterization="fft", steps=12)
    a = cc.filter_patterns(model, "c2", filters=[0, 2], seed=3, batch_size=2, **kw)
    b = cc.filter_patterns(model, "c2", filters=[0, 2], seed=3, batch_size=2, **kw)
    assert a.tobytes() == b.tobytes()
    c = cc.filter_patterns(model, "c2", filters=[0, 2], seed=4, batch_size=2, **kw)
    assert not np.array_equal(a, c)
    one = cc.filter_patterns(model, "c2", filters=[2], seed=3, **kw)
    np.testing.assert_allclose(one[0], a[1], atol=1e-4)


def test_default_path_is_the_chapters() -> None:
    """No robust option: the chapter's ascent (the goldens of test_filters pin its
    bytes); any option switches to the robust one."""
    import convviz_check as cc
    from convviz_check import graph as graph_lib

    model = _tiny_model()
    plain = cc.filter_patterns(model, "c2", filters=[1], steps=3)
    explicit = cc.filter_patterns(model, "c2", filters=[1], steps=3, parameterization="pixel")
    assert plain.tobytes() == explicit.tobytes()
    assert not graph_lib.model_cache(model, "fviz")  # the robust ascent never ran
    cc.filter_patterns(model, "c2", filters=[1], steps=2, penalties={"tv": 0.1})
    assert len(graph_lib.model_cache(model, "fviz")) == 1


def test_bad_option_through_filter_patterns() -> None:
    import convviz_check as cc

    with pytest.raises(InputError, match="parameterization='wavelet'"):
        cc.filter_patterns(_tiny_model(), "c2", filters=[0], parameterization="wavelet")


def test_robust_patterns_are_smoother_on_the_bundled_convnet() -> None:
    import convviz_check as cc

    model = cc.examples.load_example_model("convnet")
    filters = [0, 1, 2, 3]
    chapter = cc.filter_patterns(model, "conv3", filters=filters)
    robust = cc.filter_patterns(model, "conv3", filters=filters, parameterization="fft", steps=64)
    hf_chapter = [high_frequency_share(p) for p in chapter]
    hf_robust = [high_frequency_share(p) for p in robust]
    assert max(hf_robust) < min(hf_chapter), (hf_robust, hf_chapter)
    start = np.full_like(robust, 0.5)
    assert (
        _channel_means(model, "conv3", robust, filters)
        > _channel_means(model, "conv3", start, filters)
    ).all()


def test_cli_filters_param_fft_writes_robust_patterns(tmp_path: object) -> None:
    import json
    from pathlib import Path

    from convviz_check.cli import main
    from convviz_check.examples import model_path

    pngs = {}
    for param in ("pixel", "fft"):
        out = Path(str(tmp_path)) / param
        args = ["explain", str(model_path("convnet")), "--scenes", "1", "--what", "filters"]
        args += ["--filters", "2", "--filters-layer", "conv2", "--steps", "4"]
        assert main([*args, "--filters-param", param, "--out", str(out)]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["filters"]["parameterization"] == param
        assert summary["filters"]["steps"] == 4
        pngs[param] = (out / summary["filters"]["png"]).read_bytes()
    assert pngs["pixel"] != pngs["fft"]


def test_direction_objective() -> None:
    import convviz_check as cc

    model = _tiny_model()
    kw = dict(parameterization="fft", steps=15, seed=1)
    # A one-hot direction is the channel objective (both on the whole layer's output).
    onehot = cc.filter_patterns(model, "c2_tanh", objective=np.eye(4)[[2]], **kw)
    channel = cc.filter_patterns(model, "c2_tanh", filters=[2], **kw)
    np.testing.assert_allclose(onehot, channel, atol=1e-4)
    # Two mixed directions: one pattern each, each raising its own dot product.
    d = np.array([[1.0, -1.0, 0.5, 0.0], [0.0, 2.0, 0.0, 1.0]])
    patterns = cc.filter_patterns(
        model, "c2_tanh", objective=d, steps=40, seed=1, parameterization="fft"
    )
    assert patterns.shape == (2, 24, 24, 3)
    unit = d / np.linalg.norm(d, axis=1, keepdims=True)
    config = fviz.resolve_config("fft", None, None, None, d, 24, 24)
    assert config is not None and config.objective == "direction"
    start = fviz.params_to_unit(config, fviz.initial_params("fft", 2, 24, 24, 3, 1), 24)
    from convviz_check import backends
    from convviz_check import graph as graph_lib

    fwd = backends.make_forward(graph_lib.submodel(model, ["c2_tanh"]))

    def score(images: np.ndarray) -> np.ndarray:
        act = fwd([images])[0][:, 2:-2, 2:-2, :]
        return np.einsum("bhwc,bc->b", act, unit) / act.shape[1] / act.shape[2]

    assert (score(patterns) > score(start) + 0.05).all()


@pytest.mark.parametrize(
    ("objective", "filters", "match"),
    [
        (
            np.ones(5),
            None,
            r"C = 4, the channels of layer 'c2'. Received: objective of shape \(5,\)",
        ),
        (np.zeros(4), None, "must not be zero"),
        (np.ones(4), [0], "filters=None"),
        (3, None, "objective must be a name"),
    ],
)
def test_bad_directions_raise(objective: object, filters: object, match: str) -> None:
    import convviz_check as cc

    with pytest.raises(InputError, match=match):
        cc.filter_patterns(
            _tiny_model(), "c2", filters=filters, objective=objective, parameterization="fft"
        )


def test_gram_similarity_hand_values_and_keras_ops() -> None:
    from keras import ops

    from convviz_check.explain.fviz_ascent import _diversity

    a = np.zeros((3, 2, 2, 2), np.float32)
    a[0, ..., 0] = 1.0  # images 0 and 1: the same Gram matrix (scaled), image 2 disjoint
    a[1, ..., 0] = 3.0
    a[2, ..., 1] = 2.0
    np.testing.assert_allclose(fviz.gram_similarity(a), [0.5, 0.5, 0.0], atol=1e-6)
    assert fviz.gram_similarity(a[:1])[0] == 0.0
    acts = np.random.default_rng(5).normal(size=(3, 4, 5, 6)).astype(np.float32)
    got = float(_np(_diversity(ops.convert_to_tensor(acts))))
    assert got == pytest.approx(float(fviz.gram_similarity(acts).sum()), rel=1e-4)


def test_diversity_makes_variants_of_one_filter() -> None:
    import convviz_check as cc

    model = _tiny_model()
    kw = dict(parameterization="fft", steps=30, batch_size=3)
    same = cc.filter_patterns(model, "c2", filters=[1, 1, 1], **kw)
    # One start for all: the same pattern (up to rounding between sub-batches on torch).
    np.testing.assert_allclose(same[1:], same[:2], atol=1e-5)
    varied = cc.filter_patterns(model, "c2", filters=[1, 1, 1], penalties={"diversity": 1.0}, **kw)
    assert min(np.abs(varied[i] - varied[j]).max() for i, j in ((0, 1), (0, 2), (1, 2))) > 0.1
    config = fviz.resolve_config("fft", None, None, None, "channel", 24, 24)
    assert config is not None
    start = fviz.params_to_unit(config, fviz.initial_params("fft", 3, 24, 24, 3, 0, True), 24)
    assert (
        _channel_means(model, "c2", varied, [1, 1, 1])
        > _channel_means(model, "c2", start, [1, 1, 1]) + 0.05
    ).all()


def _twin(data_format: str) -> object:
    import keras

    keras.utils.set_random_seed(0)
    shape = (3, 24, 24) if data_format == "channels_first" else (24, 24, 3)
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(6, 3, activation="relu", data_format=data_format, name="c1")(inputs)
    x = keras.layers.Conv2D(4, 3, data_format=data_format, name="c2")(x)
    x = keras.layers.Activation("tanh", name="c2_tanh")(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize("layer", ["c2", "c2_tanh"])
def test_channels_first_model_gives_the_patterns_of_its_twin(layer: str) -> None:
    import keras

    if keras.config.backend() == "tensorflow":
        pytest.skip("TF on CPU has no channels_first Conv2D")
    import convviz_check as cc

    first, last = _twin("channels_first"), _twin("channels_last")
    last.set_weights(first.get_weights())
    kw = dict(filters=[0, 3], parameterization="fft", steps=10)
    a = cc.filter_patterns(first, layer, **kw)
    b = cc.filter_patterns(last, layer, **kw)
    assert a.shape == (2, 24, 24, 3)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)


def test_compiled_once_per_configuration() -> None:
    import keras

    import convviz_check as cc
    from convviz_check import graph as graph_lib

    model = _tiny_model()
    kw = dict(parameterization="fft", steps=3, batch_size=2)
    cc.filter_patterns(model, "c2", filters=[0, 1], **kw)
    cc.filter_patterns(model, "c2", filters=[2, 3, 1], seed=5, **kw)  # other filters, a pad
    (ascent,) = graph_lib.model_cache(model, "fviz").values()
    if keras.config.backend() == "tensorflow":
        assert ascent.concrete.experimental_get_tracing_count() == 1
    elif keras.config.backend() == "jax":
        assert ascent.jitted._cache_size() == 1
    cc.filter_patterns(model, "c2", filters=[0], objective="neuron", **kw)
    assert len(graph_lib.model_cache(model, "fviz")) == 2  # another configuration
