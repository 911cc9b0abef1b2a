"""``crossentropy check``: every case within tolerance, and exit status 1 at a
zero tolerance."""

from __future__ import annotations

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("rich")
pytest.importorskip("matplotlib")

from _cli import run  # noqa: E402


def test_check_runs_the_registry_and_fails_at_a_zero_tolerance():
    proc = run("check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from crossentropy.cases import CASES

    for name in {c.fn for c in CASES}:  # every loss of the registry the tests run
        assert f" {name} " in proc.stdout
    assert "within tolerance" in proc.stdout
    proc = run("check", "--fd-tol", "0", "--fd-every", "50")
    assert proc.returncode == 1 and "exceed" in proc.stderr


def test_check_refuses_an_unknown_dtype():
    proc = run("check", "--dtypes", "float8")
    assert proc.returncode == 2 and "float8" in proc.stderr and "\n" not in proc.stderr.strip()
