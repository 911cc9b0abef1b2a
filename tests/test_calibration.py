"""expected_calibration_error: near 0 for probabilities calibrated by
construction, large for overconfident ones."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from crossentropy.models import expected_calibration_error  # noqa: E402


def test_expected_calibration_error():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, size=200_000)
    y = (rng.uniform(size=conf.size) < conf).astype(int)  # class 1 right with prob conf
    proba = np.column_stack([1 - conf, conf])
    ece, bins = expected_calibration_error(np.where(y == 1, 1, 0), proba)
    assert ece < 0.01  # calibrated by construction
    assert bins["count"].sum() == conf.size
    overconfident = np.column_stack([1 - conf**0.2, conf**0.2])
    assert expected_calibration_error(y, overconfident)[0] > 0.1
