"""Input-sized CPU buffers on transparent huge pages, where Linux offers them.

The first write to each 4 KiB page of a fresh buffer is a page fault, in
which the kernel also zeroes the page: for the gradient of 4096 x 32000
float32 logits (500 MB) that is 122,000 faults, about as long as the fused
kernel's arithmetic (``BENCHMARKS.md``). With ``madvise(MADV_HUGEPAGE)``
before the first write, the kernel backs the buffer with 2 MiB pages where it
can, 512 times fewer faults. PyTorch's CPU allocator does the same for every
allocation when ``THP_MEM_ALLOC_ENABLE=1`` is set; here it is applied to the
kernels' own large buffers only.

The advice is a hint: where transparent huge pages are off ("never"), on
other systems, on other devices and while ``torch.compile`` traces, the
buffer is an ordinary ``torch.empty_like``.
"""

from __future__ import annotations

import ctypes
import functools
import sys

import torch

__all__ = ["empty_like"]

_MADV_HUGEPAGE = 14  # <linux/mman.h>
_HUGE_PAGE = 2 << 20
# Below this, malloc serves the buffer from its heap (possibly already
# touched), and the faults cost little anyway.
_MIN_BYTES = 64 << 20
_THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


@functools.cache
def _madvise():
    """libc's ``madvise``, or None where advising huge pages cannot help."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open(_THP_SETTING) as fh:
            if "[never]" in fh.read():
                return None
        f = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    f.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    f.restype = ctypes.c_int
    return f


def empty_like(x: torch.Tensor) -> torch.Tensor:
    """``torch.empty_like(x)``, advised onto huge pages when it is large and on CPU."""
    buf = torch.empty_like(x)
    if torch.compiler.is_compiling() or buf.device.type != "cpu":
        return buf
    nbytes = buf.numel() * buf.element_size()  # empty_like gives a dense layout
    madvise = None if nbytes < _MIN_BYTES else _madvise()
    if madvise is not None:
        # Only whole huge pages inside the buffer: the advice never reaches
        # memory that belongs to anything else.
        start = -(-buf.data_ptr() // _HUGE_PAGE) * _HUGE_PAGE
        end = (buf.data_ptr() + nbytes) // _HUGE_PAGE * _HUGE_PAGE
        if end > start:
            madvise(start, end - start, _MADV_HUGEPAGE)  # a refusal only means small pages
    return buf
