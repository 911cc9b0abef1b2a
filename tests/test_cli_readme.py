"""``make demo``'s command and the README's command-line examples, run as
written (in a temporary directory, on a generated ``data.csv`` and
``new_rows.csv`` where they name those files)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("rich")
pytest.importorskip("matplotlib")

from _cli import run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _demo_command():
    """The arguments of ``crossentropy`` in the Makefile's ``demo`` target."""
    text = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", text, re.M).group(1)
    line = next(ln for ln in recipe.splitlines() if "crossentropy " in ln)
    return shlex.split(line.split("crossentropy", 1)[1])


def test_make_demo_command(tmp_path):
    args = _demo_command()
    assert args == ["fit", "--out", "runs/demo"]
    proc = run(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "digits: test-set results" in proc.stdout and "Traceback" not in proc.stderr
    out = tmp_path / "runs" / "demo"
    for name in ("loss_curves.png", "reliability.png", "confusion_matrix.png", "results.json", "test.csv"):
        assert (out / name).exists(), name
    results = json.loads((out / "results.json").read_text())
    assert all(m["converged"] for m in results["models"])


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"The\s+`crossentropy` command runs it:\s*```sh\n(.*?)```", text, re.S).group(1)
    return [shlex.split(line.split("#")[0])[1:] for line in block.splitlines() if line.startswith("crossentropy")]


def test_readme_cli_examples(tmp_path):
    commands = _readme_commands()
    # check and bench have their own tests (test_cli_check.py, test_cli_bench.py): minutes each
    assert [c[0] for c in commands] == ["fit", "fit", "predict", "check", "bench"]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 3))
    label = np.array(["red", "green", "blue"])[np.argmax(X @ rng.standard_normal((3, 3)), axis=1)]
    rows = ["a,b,c,label"] + [",".join(map(repr, x.tolist())) + f",{t}" for x, t in zip(X, label)]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "new_rows.csv").write_text("\n".join(r.rsplit(",", 1)[0] for r in rows[:51]) + "\n")
    for args in commands[:3]:
        proc = run(*args, cwd=tmp_path)
        assert proc.returncode == 0, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert (tmp_path / "crossentropy-out" / "results.json").exists()  # the first: digits, default --out
    assert "rows" in proc.stdout and "50" in proc.stdout  # predict on the 50 new rows
