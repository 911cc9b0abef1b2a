"""``crossentropy check``: every case within tolerance, and exit status 1 at a
zero tolerance."""

from __future__ import annotations

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("rich")
pytest.importorskip("matplotlib")

from _cli import run  # noqa: E402


def test_check_passes_and_fails_at_a_zero_tolerance():
    proc = run("check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("cross_entropy, softcap=3", "nll_loss", "focal_loss", "binary_cross_entropy",
                 "sigmoid_focal_loss", "entropy", "kl_divergence", "js_divergence", "kl_div"):
        assert name in proc.stdout
    assert "within tolerance" in proc.stdout
    proc = run("check", "--fd-tol", "0")
    assert proc.returncode == 1 and "exceed" in proc.stderr
