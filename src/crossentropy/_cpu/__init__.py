"""Compiled CPU kernels (numba, optional): one parallel region per call, each
row (or element chunk) read into cache once. :func:`available` says whether
they can run; the torch kernels in ``crossentropy._torch`` call them for CPU
tensors they apply to and stay the fallback everywhere else (CUDA,
non-contiguous tensors, vocabulary shards, tracing, numba not installed)."""

from __future__ import annotations

import os

__all__ = ["available"]

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
