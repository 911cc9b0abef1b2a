"""Loaded before anything is collected (the doctests of ``src/`` included).

Triton chooses between compiling its kernels and interpreting them when it
is imported, from ``TRITON_INTERPRET``: on a machine without an NVIDIA GPU
the tests of ``crossentropy._triton`` run the kernels under the interpreter,
on CPU tensors, so the variable is set here, before anything can import
triton. Nothing else reads it on CPU (torch reads it only to launch Triton
kernels of its own, which CPU runs never do). Without triton installed the
kernel modules are not collected for their doctests (they import it).
"""

import glob
import importlib.util
import os

_HAS_TRITON = importlib.util.find_spec("triton") is not None
_HAS_GPU = bool(glob.glob("/dev/nvidia[0-9]*"))

if _HAS_TRITON and not _HAS_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")

collect_ignore_glob = [] if _HAS_TRITON else ["src/crossentropy/_triton/*.py"]
