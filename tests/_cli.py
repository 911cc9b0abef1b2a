"""Helpers of the ``crossentropy`` command's tests: run it in a subprocess, and
write a small table with string labels."""

from __future__ import annotations

import os
import random
import subprocess
import sys

CMD = [sys.executable, "-m", "crossentropy.cli"]
DEFAULT_NAMES = ("cross-entropy", "cross-entropy, smoothing 0.1", "focal, gamma 2")


def run(*args, cwd=None, timeout=300):
    env = dict(os.environ, PYTHONWARNINGS="ignore", COLUMNS="160")
    return subprocess.run([*CMD, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def fruit_csv(path, n=90, seed=1):
    """A small table with string labels."""
    rng = random.Random(seed)
    centers = {"apple": (150, 6, 3), "lemon": (100, 2, 8), "banana": (120, 8, 1)}
    lines = ["weight,sweetness,acidity,fruit"]
    for i in range(n):
        name = list(centers)[i % 3]
        c = centers[name]
        lines.append(f"{c[0] + rng.gauss(0, 15):.2f},{c[1] + rng.gauss(0, 1.5):.3f},"
                     f"{c[2] + rng.gauss(0, 1.5):.3f},{name}")
    path.write_text("\n".join(lines) + "\n")
    return path
