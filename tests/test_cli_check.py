"""``crossentropy check``: every case within tolerance, and exit status 1 at a
zero tolerance."""

from __future__ import annotations

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("rich")
pytest.importorskip("matplotlib")

from _cli import run  # noqa: E402


def test_check_runs_the_registry_and_fails_at_a_zero_tolerance():
    """The command end to end on its NumPy path (tests/test_registry.py runs
    every path's cases; the whole registry here would take a minute more)."""
    proc = run("check", "--paths", "numpy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from crossentropy.cases import CASES

    for name in {c.fn for c in CASES}:  # every loss of the registry the tests run
        assert f" {name} " in proc.stdout
    assert "within tolerance" in proc.stdout and "through numpy in" in proc.stdout
    proc = run("check", "--paths", "numpy", "--dtypes", "float64", "--fd-tol", "0", "--fd-every", "50")
    assert proc.returncode == 1 and "exceed" in proc.stderr  # one path and dtype: it only has to fail


def test_check_takes_every_local_path_by_default():
    from crossentropy.cli import check

    assert check._paths("all") == check.LOCAL_PATHS
    assert set(check.LOCAL_PATHS) <= set(__import__("crossentropy.cases.paths", fromlist=["PATHS"]).PATHS)


def test_check_refuses_an_unknown_path():
    proc = run("check", "--paths", "numpy,gpu")
    assert proc.returncode == 2 and "--paths gpu" in proc.stderr and "\n" not in proc.stderr.strip()


def test_check_refuses_an_unknown_dtype():
    proc = run("check", "--dtypes", "float8")
    assert proc.returncode == 2 and "float8" in proc.stderr and "\n" not in proc.stderr.strip()


def test_transforms_table_reports_every_transform_and_a_failure(monkeypatch):
    """``--transforms`` (two minutes over the whole registry, so here over a
    few cases): one row per transform, and a failing case fails the check."""
    import io

    from rich.console import Console

    from crossentropy.cases import transforms
    from crossentropy.cli import check

    few = [c for c in __import__("crossentropy.cases", fromlist=["CASES"]).CASES if c.fn == "entropy"][:2]
    monkeypatch.setattr("crossentropy.cases.CASES", few)
    out, err = Console(file=io.StringIO(), width=200), Console(file=io.StringIO(), width=200)
    assert check._transforms_table(out, err) == 0
    text = out.file.getvalue()
    for t in transforms.TRANSFORMS:
        assert f" {t} " in text
    monkeypatch.setattr(transforms, "check", lambda case, t: transforms.Result(False, True, 1.0, "off"))
    assert check._transforms_table(out, err) > 0 and "off" in err.file.getvalue()
