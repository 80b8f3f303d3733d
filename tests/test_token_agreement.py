"""Cross-backend agreement on a vision transformer: ``cc.agreement(..., token_grid=,
cam_method="rollout")``, the ``agree`` command's ``--token-grid`` and the parent-side
refusal of a bad grid.

The ``crossbackend`` tests share the session's pool of warm workers
(``tests._worker_ops.shared_pool``) and skip naming a missing backend (or fail where
``CONVVIZ_REQUIRE_BACKENDS=1``). The model is a tiny functional transformer (a patch
embedding, a class token, two ``keras.layers.MultiHeadAttention`` blocks, a head on the
class token) with NumPy-seeded weights, saved as ``.keras``: every backend loads the
same weights from the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convviz_check import cam
from convviz_check.backends import current_backend
from convviz_check.cli import agree as agree_cli
from convviz_check.crossbackend import agreement as ag
from convviz_check.crossbackend import pool as pool_mod
from convviz_check.crossbackend.requests import CamParams, from_json
from convviz_check.errors import InputError
from tests import _worker_ops

ALL = ("tensorflow", "torch", "jax")
# 16x16 images, patches of 4: a 4x4 grid after one class token.
SIZE, GRID = 16, (4, 4, 1)

require_or_skip = _worker_ops.require_or_skip


def _transformer():
    import keras

    layers = keras.layers
    x_in = keras.Input((SIZE, SIZE, 3))
    p = layers.Conv2D(8, 4, strides=4, name="patches")(x_in)
    t = layers.Reshape((16, 8), name="tokens")(p)
    cls = layers.Dense(8, name="cls_dense")(layers.GlobalAveragePooling1D()(t))
    t = layers.Concatenate(axis=1, name="with_cls")([layers.Reshape((1, 8))(cls), t])
    for i in (1, 2):
        out = layers.MultiHeadAttention(num_heads=2, key_dim=4, name=f"att{i}")(t, t)
        t = layers.Add(name=f"res{i}")([t, out])
        t = layers.LayerNormalization(name=f"norm{i}")(t)
    y = layers.Dense(3, name="logits")(t[:, 0])
    model = keras.Model(x_in, y, name="tiny_vit")
    rng = np.random.default_rng(5)  # NumPy-seeded: the same weights on every backend
    for w in model.weights:
        w.assign(rng.normal(0.0, 0.5, tuple(w.shape)).astype("float32"))
    return model


@pytest.fixture(scope="module")
def pool(request: pytest.FixtureRequest) -> pool_mod.WorkerPool:
    return _worker_ops.shared_pool(request.config)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    model = _transformer()
    path = tmp_path_factory.mktemp("vit") / "tiny_vit.keras"
    model.save(path)
    return path, model


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(3).random((3, SIZE, SIZE, 3)).astype("float32")


@pytest.mark.crossbackend
@pytest.mark.parametrize(("method", "layer"), [("gradcam", "norm1"), ("rollout", None)])
def test_a_transformer_agrees_across_the_three_backends(pool, saved, images, method, layer) -> None:
    require_or_skip()
    path, model = saved
    # Grad-CAM on the last attention block's input (a token layer; the patch embedding
    # is a conv map the grid does not apply to); rollout reads every attention layer.
    report = ag.agreement(
        path,
        images,
        what=("gradcam",),
        pool=pool,
        cam_method=method,
        gradcam_layer=layer,
        token_grid=GRID,
    )
    # The default cross-backend heatmap bounds, unchanged.
    assert report.passed, str(report)
    assert len(report.pairs) == 3
    assert not [n for n in report.notes if "degenerate" in n or "top class" in n], report.notes
    for backend in ALL:
        result = report.results[backend]["gradcam"]
        assert result.attrs["method"] == method
        assert result.to_value().heatmap.shape == (3, 4, 4)
    # The running backend's worker gives the maps of an in-process cc.cam call on the
    # same grid (that the grid reaches the workers: the next test).
    expected = cam(model, images, method=method, layer=layer, token_grid=GRID)
    obtained = report.results[current_backend()]["gradcam"].to_value()
    np.testing.assert_allclose(obtained.heatmap, expected.heatmap, atol=1e-6)


@pytest.mark.crossbackend
def test_a_grid_that_does_not_fit_fails_in_the_workers(pool, saved, images) -> None:
    require_or_skip(("tensorflow", "jax"))
    path, _ = saved
    with pytest.raises(Exception, match=r"token_grid=\(3, 3, 1\) does not fit"):
        ag.agreement(
            path,
            images,
            what=("gradcam",),
            backends="tensorflow,jax",
            pool=pool,
            gradcam_layer="norm1",
            token_grid=(3, 3, 1),
        )


# --------------------------------------------------------------------------- parent side
class _NoPool:
    """A pool that fails the test if any request reaches it."""

    def request(self, *args, **kwargs):
        raise AssertionError("a worker was asked although the arguments were refused")


@pytest.mark.parametrize("grid", [(4, 4), (0, 4, 1), (4, 4, -1), (4.0, 4, 1), "4,4,1"])
def test_a_bad_token_grid_is_refused_before_any_worker_starts(grid) -> None:
    images = np.zeros((1, SIZE, SIZE, 3), np.float32)
    with pytest.raises(InputError, match=r"token_grid must be \(height, width, prefix"):
        ag.agreement("model.keras", images, what=("gradcam",), pool=_NoPool(), token_grid=grid)


def test_the_token_grid_travels_as_json_and_back() -> None:
    params = ag.artifact_params(token_grid=np.array([4, 4, 1]), cam_method="rollout")
    sent = params["gradcam"]
    assert sent["token_grid"] == [4, 4, 1] and all(type(v) is int for v in sent["token_grid"])
    back = from_json("gradcam", sent)
    assert isinstance(back, CamParams)
    assert back.token_grid == (4, 4, 1) and back.method == "rollout"
    assert from_json("gradcam", {}).token_grid is None


def test_the_agree_command_reads_token_grid_and_takes_rollout() -> None:
    assert agree_cli._check_cam("rollout") == "rollout"
    with pytest.raises(InputError, match="Expected one of gradcam, .*, rollout"):
        agree_cli._check_cam("rollout2")
    assert agree_cli._token_grid("14,14,1") == (14, 14, 1)
    assert agree_cli._token_grid(None) is None
    with pytest.raises(InputError, match="--token-grid '14,x'"):
        agree_cli._token_grid("14,x")


def test_the_agree_command_passes_rollout_and_the_grid_on(monkeypatch) -> None:
    from convviz_check import cli
    from convviz_check.judge.agreement import AgreementReport

    calls = []

    def fake_agreement(model, images, **kwargs):
        calls.append(kwargs)
        return AgreementReport(model=model, backends=ALL, what=kwargs["what"])

    monkeypatch.setattr(ag, "agreement", fake_agreement)
    argv = ["agree", "m.keras", "--scenes", "1", "--what", "gradcam", "--cam", "rollout"]
    assert cli.main([*argv, "--token-grid", "4,4,1"]) == 0
    assert cli.main(argv) == 0
    assert calls[0]["cam_method"] == "rollout" and calls[0]["token_grid"] == (4, 4, 1)
    assert calls[1]["token_grid"] is None
