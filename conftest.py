"""Root conftest: import order, hypothesis profiles, pytester."""

import os

# keras-hub imports tensorflow under every backend; where torch and tensorflow share a
# process, torch must be imported first (the other order can segfault; Keras' own
# conftest does the same).
try:
    import torch  # noqa: F401
except ImportError:
    pass

import pytest
from hypothesis import HealthCheck, settings

# "ci": deterministic and bounded (hypothesis checks what must always hold; rates are
# asserted over fixed seeded samples, never hunted by hypothesis).
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session", autouse=True)
def _imported_before_inner_runs() -> None:
    """pytester's in-process runs drop the modules an inner run imported first when it
    ends, and importing a framework or another C extension twice in one process crashes
    it (seen: a segfault re-importing tensorflow; "cannot load module more than once per
    process"). Import them once, before any inner run."""
    import keras
    import numpy as np
    import scipy.ndimage  # noqa: F401
    import skimage.metrics  # noqa: F401

    import convviz_check.checks  # noqa: F401
    import convviz_check.plugin_fixture  # noqa: F401
    from convviz_check.backends import framework_versions

    framework_versions()
    keras.ops.convert_to_tensor(np.zeros(1, np.float32))
