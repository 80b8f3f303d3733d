"""The tox env runs the backend its name says (CONVVIZ_EXPECTED_BACKEND comes from the
env-name factor in tox.ini, independently of KERAS_BACKEND)."""

import json
import os
import subprocess
import sys

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


def test_pin_threads_sets_and_reports_the_asked_count_in_a_fresh_process():
    # In a fresh process nothing has started the thread pools yet, so the asked count
    # must be the one in force (TensorFlow reports 0, "all cores", when it was not set).
    code = (
        "import json, keras\n"
        "from convviz_check import backends\n"
        "print(json.dumps(backends.pin_threads(2)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    pinned = json.loads(out.stdout.strip().splitlines()[-1])
    assert pinned["intra_op"] == 2
    assert pinned["inter_op"] in (1, 2)  # torch may keep one inter-op thread on 2 cores


def test_one_tensorflow_distribution_is_installed():
    # `tensorflow` and `tensorflow-cpu` install the same `tensorflow` package: with both,
    # whichever pip installed last wins file by file. keras-hub (through tensorflow-text)
    # requires `tensorflow`, so the extras ask for that one only.
    from importlib import metadata

    found = []
    for name in ("tensorflow", "tensorflow-cpu"):
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    assert len(found) <= 1, f"two TensorFlow distributions in one environment: {found}"
