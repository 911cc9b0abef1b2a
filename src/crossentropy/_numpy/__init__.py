"""The compiled CPU kernels (:mod:`crossentropy._cpu`) on NumPy arrays: the
targets, row scale and reduction of the array-API core, the row statistics
and the gradient from one parallel region. The public functions call these
from ``value_and_grad`` (and the plain call) on NumPy inputs that
:func:`applies` accepts; everything else, and every input when numba is
missing or ``CROSSENTROPY_CPU_KERNELS=0``, stays on the core."""

from __future__ import annotations

import numpy as np

from .. import _cpu

__all__ = ["applies", "class_first", "per_row", "use_threads"]

# Elements of logits from which a NumPy call takes a second thread: about a
# MiB of float64, larger than the torch kernels' _cpu.PER_THREAD so that the
# estimator's blocks (at most this many logits, shared among its own
# threads) each run on one numba thread.
PER_THREAD = 1 << 17


def applies(x) -> bool:
    """A NumPy float32 or float64 array with something in it, and numba installed."""
    return type(x) is np.ndarray and x.dtype in (np.float32, np.float64) and x.size > 0 and _cpu.available()


def use_threads(elements):
    """``_cpu.use_threads`` with :data:`PER_THREAD` elements a thread, at most
    ``NUMBA_NUM_THREADS``. A caller that shares rows among threads of its
    own (the estimator's blocks) gives each call fewer elements than that,
    and gets one thread a call."""
    import numba

    _cpu.use_threads(elements, numba.config.NUMBA_NUM_THREADS, PER_THREAD)


def class_first(x):
    """The logits ``x`` (class axis last, as a problem holds them) as a (C, R)
    C-contiguous view when the array they are a view of has the class axis
    first (the caller's ``axis=0`` on a C-contiguous array: the column kernels
    of :mod:`crossentropy._cpu.columns`), else None (the row kernels)."""
    if x.ndim < 2 or x.flags.c_contiguous:
        return None
    xt = np.moveaxis(x, -1, 0)
    return xt.reshape(x.shape[-1], -1) if xt.flags.c_contiguous else None


def per_row(a, n, dtype=np.float64):
    """A per-row array (any row shape, or a number; None: zeros) as a flat
    (n,) C-contiguous, writable array of ``dtype``. Writable because numba
    types a read-only array apart and compiles the kernel again for it (a
    broadcast scalar, a read-only caller's array: about 8 s each, once)."""
    if a is None:
        return np.zeros(n, dtype)
    a = np.asarray(a)
    a = np.ascontiguousarray(a.reshape(-1) if a.ndim else np.broadcast_to(a, (n,)), dtype)
    return a if a.flags.writeable else a.copy()
