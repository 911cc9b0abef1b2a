import os

import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
settings.register_profile("long", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(config, items):
    if os.environ.get("CROSSENTROPY_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="long stress run: set CROSSENTROPY_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def assert_close(actual, expected, rtol=1e-10, what=""):
    """|actual - expected| <= rtol * max(1, |expected|) entrywise, where a value
    near 0 is compared on the scale of the largest entry."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    scale = max(1.0, float(np.max(np.abs(e[np.isfinite(e)]), initial=0.0)))
    np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * scale, err_msg=what)
