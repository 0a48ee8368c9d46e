import gc
import os

import jax
import pytest

# The command line turns JAX's persistent compilation cache on by default; tests that run it (in this process or
# in subprocesses, which inherit the environment) must neither write to the user's cache folder nor reuse
# programs compiled by an earlier run. tests/test_cli_cache.py turns it back on where it tests it.
os.environ["EPJAX_COMPILE_CACHE"] = "off"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture
def x64():
    """Run the test body with 64-bit JAX arrays (exact identities are checked in float64)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    A worker runs hundreds of modules; without this its memory only grows with every distinct program compiled
    (several GB by the end of the suite), which on a small CI machine risks the out-of-memory killer taking a
    worker. Programs are rarely shared between modules, so the cost is a few recompilations.
    """
    yield
    jax.clear_caches()
    gc.collect()
