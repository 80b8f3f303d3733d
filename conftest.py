"""Root conftest: import order, hypothesis profiles, pytester."""

import os

# keras-hub imports tensorflow under every backend; where torch and tensorflow share a
# process, torch must be imported first (the other order can segfault; Keras' own
# conftest does the same).
try:
    import torch  # noqa: F401
except ImportError:
    pass

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
