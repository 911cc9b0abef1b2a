"""``crossentropy bench``: runs each script with --quick, reports failures,
and finds the benchmarks directory of the checkout it runs from."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("rich")
pytest.importorskip("matplotlib")

from _cli import run  # noqa: E402

import crossentropy  # noqa: E402
from crossentropy.cli.bench import find_benchmarks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_bench_runs_scripts_with_quick(tmp_path):
    (tmp_path / "bench_a.py").write_text(
        "import sys\nprint('table', 'quick' if '--quick' in sys.argv else 'full')\n"
    )
    (tmp_path / "_helper.py").write_text("raise SystemExit(3)\n")
    proc = run("bench", "--dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "bench_a.py" in proc.stdout and "table quick" in proc.stdout
    (tmp_path / "bench_b.py").write_text("raise SystemExit(4)\n")
    proc = run("bench", "--dir", tmp_path)
    assert proc.returncode == 1 and "bench_b.py (exit 4)" in proc.stderr


def test_bench_with_no_scripts(tmp_path):
    proc = run("bench", "--dir", tmp_path)
    assert proc.returncode == 0 and "No benchmark scripts" in proc.stdout


def test_find_benchmarks_is_the_checkouts_benchmarks_directory():
    if Path(crossentropy.__file__).resolve().parents[1] != ROOT / "src":
        pytest.skip("crossentropy is not imported from this checkout's src/")
    assert find_benchmarks() == ROOT / "benchmarks"
