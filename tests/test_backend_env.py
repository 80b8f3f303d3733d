"""The tox env runs the backend its name says (CONVVIZ_EXPECTED_BACKEND comes from the
env-name factor in tox.ini, independently of KERAS_BACKEND)."""

import os

import pytest


def test_keras_backend_matches_the_tox_env_name():
    expected = os.environ.get("CONVVIZ_EXPECTED_BACKEND")
    if expected is None:
        pytest.skip("not under tox: CONVVIZ_EXPECTED_BACKEND is not set")
    import keras

    assert keras.config.backend() == expected, (
        f"tox env expects backend {expected!r} but Keras runs {keras.config.backend()!r}: "
        "check set_env in tox.ini"
    )


def test_backend_dispatch_reports_the_running_backend():
    import keras

    from convviz_check import backends

    assert backends.current_backend() == keras.config.backend()
    versions = backends.framework_versions()
    assert versions["backend"] == keras.config.backend()
    assert versions["keras"] == keras.__version__


def test_pin_threads_reports_positive_counts():
    from convviz_check import backends

    pinned = backends.pin_threads(2)
    assert set(pinned) == {"intra_op", "inter_op"}
    assert all(isinstance(v, int) and v >= 0 for v in pinned.values())
