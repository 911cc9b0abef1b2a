"""``crossentropy bench``: run every benchmark script of the source checkout
(``benchmarks/*.py``) with ``--quick``."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from .data import DataError

__all__ = ["add_parser", "run", "find_benchmarks"]


def add_parser(sub):
    """The ``bench`` subcommand and its options."""
    b = sub.add_parser(
        "bench", help="run the benchmark scripts quickly",
        description="Run every benchmarks/*.py of the source checkout with --quick.",
    )
    b.add_argument("--dir", metavar="DIR", help="the benchmarks directory (default: the checkout's)")
    b.add_argument("--timeout", type=float, default=600, help="seconds per script (default 600)")
    return b


def find_benchmarks():
    """The ``benchmarks`` directory of the source checkout this package runs from, or None."""
    root = Path(__file__).resolve().parents[3]  # src/crossentropy/cli/bench.py -> the checkout
    d = root / "benchmarks"
    return d if d.is_dir() and (root / "pyproject.toml").exists() else None


def _have_torch():
    """Whether torch can be imported, without importing it (seconds)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a finder that refuses it; sys.modules["torch"] = None
        return False


def run(args, out, err) -> int:
    """``crossentropy bench``: returns the exit status (1 if a script fails)."""
    d = Path(args.dir) if args.dir else find_benchmarks()
    if args.dir and not d.is_dir():
        raise DataError(f"{args.dir}: no such directory")
    if d is None:
        out.print("No benchmarks directory: 'crossentropy bench' runs the scripts in benchmarks/ of a "
                  "source checkout (pip install -e .), and this installation has none. "
                  "Use --dir DIR to point at one.")
        return 0
    scripts = sorted(p for p in d.glob("*.py") if not p.name.startswith("_"))
    if scripts and not _have_torch():
        # the scripts measure the torch kernels against PyTorch's own: without
        # torch each would end in a ModuleNotFoundError traceback
        raise DataError('the benchmarks compare against PyTorch, which is not installed: '
                        'pip install "crossentropy[torch]"')
    if not scripts:
        out.print(f"No benchmark scripts in {d}: nothing to run.")
        return 0
    failed = []
    for script in scripts:
        out.rule(f"{script.name} --quick")
        sys.stdout.flush()
        try:
            proc = subprocess.run([sys.executable, str(script), "--quick"], cwd=d.parent,
                                  timeout=args.timeout)
            if proc.returncode != 0:
                failed.append(f"{script.name} (exit {proc.returncode})")
        except subprocess.TimeoutExpired:
            failed.append(f"{script.name} (timed out after {args.timeout:g} s)")
    if failed:
        err.print(f"[red]failed:[/] {', '.join(failed)}")
        return 1
    return 0
