"""Compiled CPU kernels (numba, optional): one parallel region per call, each
row (or element chunk) read into cache once. :func:`available` says whether
they can run; the torch kernels in ``crossentropy._torch`` call them for CPU
tensors they apply to and stay the fallback everywhere else (CUDA,
non-contiguous tensors, vocabulary shards, tracing, numba not installed)."""

from __future__ import annotations

import os

import numpy as np

__all__ = ["available", "use_threads", "soft_weights", "PER_THREAD"]

# Elements from which a call's parallel region takes another thread: torch's
# own grain size for its CPU kernels (``at::internal::GRAIN_SIZE``). Below it
# waking a thread costs more than it saves, and with a busy neighbour process
# a woken thread may wait milliseconds for a core (BENCHMARKS.md, "The
# compiled CPU kernel": a 256 x 10 cross-entropy took 6 ms a call so).
PER_THREAD = 1 << 15

_STATE = {}


def available() -> bool:
    """numba imports, and ``CROSSENTROPY_CPU_KERNELS`` is not ``0``."""
    if os.environ.get("CROSSENTROPY_CPU_KERNELS", "1") == "0":
        return False
    if "ok" not in _STATE:
        try:
            import numba  # noqa: F401
        except ImportError:
            _STATE["ok"] = False
        else:
            _STATE["ok"] = True
    return _STATE["ok"]


def use_threads(elements: int, limit: int, per_thread: int = PER_THREAD) -> None:
    """Tell numba how many threads the next kernel call on this thread runs
    on (numba's count is per calling thread): one per ``per_thread``
    elements, at most ``limit`` (the caller's thread count, e.g. torch's) and
    ``NUMBA_NUM_THREADS``."""
    import numba

    numba.set_num_threads(max(1, min(limit, numba.config.NUMBA_NUM_THREADS, -(-elements // per_thread))))


_NO_VECTOR = np.zeros(1)
_NO_MATRIX = {}  # the (1, 1) placeholders of soft_weights, one a dtype (the kernels never write them)


def _no_matrix(dtype):
    key = np.dtype(dtype)
    if key not in _NO_MATRIX:
        _NO_MATRIX[key] = np.zeros((1, 1), key)
    return _NO_MATRIX[key]


def soft_weights(b, C, dtype, columns=False):
    """``(bmode, bvec, bmat)`` of the soft weights ``b`` (None, a number, or a
    NumPy (C,) vector or (..., C) array) as the kernels take them: 0 none, 1
    a number, 2 a (C,) float64 vector, 3 an (N, C) matrix in the compute
    ``dtype`` ((C, N) with ``columns``; a (1, 1) placeholder otherwise, so
    that each kernel has one argument type a dtype)."""
    if b is None:
        return 0, _NO_VECTOR, _no_matrix(dtype)
    if isinstance(b, float):
        return 1, np.array([b]), _no_matrix(dtype)
    b = np.asarray(b)
    if b.ndim == 1:
        return 2, np.ascontiguousarray(b, np.float64), _no_matrix(dtype)
    b = b.reshape(-1, C)
    return 3, _NO_VECTOR, np.ascontiguousarray(b.T if columns else b, dtype)
