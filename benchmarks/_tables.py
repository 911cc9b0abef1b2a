"""The generated tables of bench_load.py and bench_fit.py, and a machine line
that does not import torch (these two benchmarks need only the ``cli`` extra).

The table: ``n`` rows of ``d`` standard-normal features and an integer label
of ``k`` classes drawn from a softmax model of the features (so that a fit
has something to find and takes as many iterations as on real data).
"""

from __future__ import annotations

import os
import platform

import numpy as np

FEATURE_FORMAT = "%.5f"  # 8 characters a cell, as the 205 MB file of 500k x 50


def make_table(n: int, d: int = 50, k: int = 10, seed: int = 0):
    """``(X, y)``: float64 (n, d) features, int64 (n,) labels in 0..k-1."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    W = rng.standard_normal((d, k)) * 0.3
    logits = X @ W + rng.gumbel(size=(n, k))  # Gumbel-max: a draw from softmax(X W)
    return X, np.argmax(logits, axis=1).astype(np.int64)


def write_table_csv(path, X, y, chunk: int = 50_000) -> None:
    """``x0..x{d-1},target`` rows, the features to five decimals."""
    d = X.shape[1]
    fmt = ",".join([FEATURE_FORMAT] * d) + ",%d"
    with open(path, "w") as fh:
        fh.write(",".join([f"x{j}" for j in range(d)] + ["target"]) + "\n")
        for s in range(0, len(y), chunk):
            np.savetxt(fh, np.column_stack([X[s:s + chunk], y[s:s + chunk]]), fmt=fmt)


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, NumPy {np.__version__}"
