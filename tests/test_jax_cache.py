"""The persistent JAX compilation cache option (``--convviz-jax-cache`` / ini
``convviz_jax_cache_dir``, convviz_check.backends.set_jax_compilation_cache).

Every session runs in a subprocess: the option sets process-wide state (environment
variables, jax.config) that must not leak into this test process.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")

# A test that computes a Grad-CAM of the bundled convnet and writes down how many
# programs JAX read from the persistent cache (jax.monitoring's cache-hit event).
GRADCAM_TEST = """
import os
from pathlib import Path

import convviz_check as cc
from convviz_check.examples import load_example_model, make_scenes


def test_gradcam():
    hits = []
    if os.environ.get("KERAS_BACKEND") == "jax":
        import jax

        jax.monitoring.register_event_listener(
            lambda name, **kw: hits.append(name) if name.endswith("/cache_hits") else None
        )
    cam = cc.gradcam(load_example_model("convnet"), make_scenes(2, seed=0).images)
    assert cam.heatmap.shape[0] == 2
    Path("hits.txt").write_text(str(len(hits)))
"""


def _entries(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def test_flag_reaches_backend_workers_and_the_header_says_who_uses_it(pytester) -> None:
    pytester.makepyfile(
        test_env="""
        import os
        from convviz_check.crossbackend.pool import WorkerProcess

        def test_env():
            directory = os.environ["CONVVIZ_JAX_CACHE_DIR"]
            # a relative flag value is relative to the invocation directory
            assert directory == os.path.abspath("jaxcache")
            assert os.environ["JAX_COMPILATION_CACHE_DIR"] == directory
            env = WorkerProcess("jax", threads=1, start_timeout=1)._environment()
            assert env["CONVVIZ_JAX_CACHE_DIR"] == directory
        """
    )
    result = pytester.runpytest_subprocess(
        "--convviz-jax-cache", "jaxcache", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "convviz: JAX compilation cache */jaxcache (used where JAX compiles*TensorFlow and torch ignore it)"
        ]
    )


def test_ini_key_is_relative_to_the_ini_file(pytester) -> None:
    pytester.makeini("[pytest]\nconvviz_jax_cache_dir = build/jax-cache\n")
    pytester.makepyfile(
        test_env=f"""
        import os

        def test_env():
            assert os.environ["CONVVIZ_JAX_CACHE_DIR"] == {str(pytester.path / "build" / "jax-cache")!r}
        """
    )
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(pytester.path),
        str(pytester.path / "test_env.py"),
    )
    result.assert_outcomes(passed=1)


def test_without_the_option_no_cache_is_configured(pytester, monkeypatch) -> None:
    monkeypatch.delenv("CONVVIZ_JAX_CACHE_DIR", raising=False)
    pytester.makepyfile(
        test_env="""
        import os

        def test_env():
            assert "CONVVIZ_JAX_CACHE_DIR" not in os.environ
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "JAX compilation cache" not in result.stdout.str()


@pytest.mark.skipif(BACKEND == "jax", reason="under jax the cache is used: see the next test")
def test_under_tensorflow_and_torch_the_option_is_accepted_and_nothing_is_cached(pytester) -> None:
    pytester.makepyfile(test_gradcam=GRADCAM_TEST)
    cache = pytester.path / "jaxcache"
    result = pytester.runpytest_subprocess(
        "--convviz-jax-cache", str(cache), "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*JAX compilation cache*TensorFlow and torch ignore it*"])
    assert _entries(cache) == []


@pytest.mark.skipif(BACKEND != "jax", reason="only JAX compiles through this cache")
def test_under_jax_the_cache_fills_and_a_second_session_reads_it(pytester) -> None:
    pytester.makepyfile(test_gradcam=GRADCAM_TEST)
    cache = pytester.path / "jaxcache"
    first = pytester.runpytest_subprocess(
        "--convviz-jax-cache", str(cache), "-p", "no:cacheprovider"
    )
    first.assert_outcomes(passed=1)
    written = _entries(cache)
    assert written, "the first session compiled programs but wrote none to the cache"
    assert int((pytester.path / "hits.txt").read_text()) == 0
    second = pytester.runpytest_subprocess(
        "--convviz-jax-cache", str(cache), "-p", "no:cacheprovider"
    )
    second.assert_outcomes(passed=1)
    assert int((pytester.path / "hits.txt").read_text()) > 0
    # Every program the second session compiled came from the cache: nothing new written.
    assert [p.name for p in _entries(cache)] == [p.name for p in written]


@pytest.mark.crossbackend
def test_a_jax_worker_writes_its_programs_before_its_quick_exit(tmp_path: Path) -> None:
    # Workers end with os._exit (no interpreter teardown): what they compiled must
    # already be in the cache directory by then, and a second worker must read it.
    import numpy as np

    from convviz_check.backends import JAX_CACHE_ENV
    from convviz_check.crossbackend.pool import WorkerPool
    from convviz_check.crossbackend.requests import artifact_params, model_spec
    from convviz_check.examples import model_path
    from tests._worker_ops import require_or_skip

    require_or_skip(("jax",))
    cache = tmp_path / "jaxcache"
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    request = {**artifact_params()["gradcam"], "model": model_spec(model_path("convnet"))}
    results = []
    for _ in range(2):
        with WorkerPool(env={JAX_CACHE_ENV: str(cache)}) as pool:
            _, artifact = pool.request("jax", "gradcam", request, {"images": images})
            assert artifact is not None and pool.worker("jax").info["jax_cache"] == str(cache)
        results.append((artifact, _entries(cache)))  # the worker has exited
    (first, written), (second, after) = results
    assert written, "the JAX worker compiled programs but none reached the cache"
    assert [p.name for p in after] == [p.name for p in written]  # all read back
    for key, value in first.arrays.items():
        np.testing.assert_array_equal(second.arrays[key], value, err_msg=key)
