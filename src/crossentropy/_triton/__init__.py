"""Triton kernels for CUDA tensors, and the switch that chooses them.

The kernels (one module per loss, named by the stems of ``losses/``:
``cross_entropy``, ``binary``, ``linear``) restate each loss's formula in
Triton, with the function of ``losses/`` they restate named beside the
lines; what is per row and cheap (the targets' weights, the row scale, the
loss rows and their coefficients) stays in torch, computed by the same
functions of ``losses/`` that every other path calls.

Dispatch (:func:`wanted`): CUDA tensors take these kernels when ``triton``
imports; CPU tensors never do, except inside :func:`forced`, which the tests
and the registry's ``triton`` path use to run the kernels on CPU tensors
under Triton's interpreter (``TRITON_INTERPRET=1`` in the environment before triton is
imported: :func:`use_interpreter`). A process runs the kernels either
compiled (CUDA) or interpreted (CPU), never both: Triton decides which when
it is imported.

Nothing here imports triton or torch until a kernel is asked for.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util

__all__ = ["available", "use_interpreter", "interpreting", "forced", "wanted", "load"]

_AVAILABLE = None
_INTERPRETING = None
_FORCED = 0  # depth of forced() contexts
_BLOCK = None  # columns a tile, inside forced(block=...)
_LOADED = {}


def available() -> bool:
    """Whether ``triton`` imports (cached)."""
    global _AVAILABLE
    if _AVAILABLE is None:
        ok = importlib.util.find_spec("triton") is not None
        if ok:
            try:
                import triton  # noqa: F401
                import triton.language  # noqa: F401
            except Exception:  # a broken install is no install: the torch kernels serve
                ok = False
        _AVAILABLE = ok
    return _AVAILABLE


def use_interpreter() -> None:
    """Run the kernels under Triton's interpreter (CPU tensors, NumPy
    underneath). Triton reads ``TRITON_INTERPRET`` when it is imported (its
    own reductions are decorated then), so this must come before anything
    imports triton; it sets the variable, or raises where it is too late."""
    import os
    import sys

    if "triton" not in sys.modules:
        os.environ["TRITON_INTERPRET"] = "1"
    elif not interpreting():
        raise RuntimeError("crossentropy._triton.use_interpreter: triton was imported without TRITON_INTERPRET=1; "
                           "set it in the environment before anything imports triton")


def interpreting() -> bool:
    """Whether the kernels run under Triton's interpreter (``TRITON_INTERPRET=1``,
    read once triton is imported: it cannot change after that)."""
    global _INTERPRETING
    if _INTERPRETING is None:
        _INTERPRETING = available() and _read_interpret()
    return _INTERPRETING


def _read_interpret() -> bool:
    import os

    import triton

    knobs = getattr(triton, "knobs", None)  # triton >= 3.4; before it, the variable itself
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@contextlib.contextmanager
def forced(block=None):
    """Inside, CPU tensors take the Triton kernels too (under the interpreter):
    for the tests and the registry, never for a user's CPU tensors.
    ``block``: the columns of a vocabulary tile, small in the tests so that
    rows of a few classes are walked in several tiles."""
    global _FORCED, _BLOCK
    before = _BLOCK
    _FORCED += 1
    _BLOCK = block or before
    try:
        yield
    finally:
        _FORCED -= 1
        _BLOCK = before


def block_override():
    """The tile width ``forced(block=...)`` asks for, or None."""
    return _BLOCK


def wanted(x) -> bool:
    """Whether a torch tensor ``x`` goes to a Triton kernel."""
    kind = x.device.type
    if kind == "cuda":
        return available() and not interpreting()
    return kind == "cpu" and _FORCED > 0 and available() and interpreting()


def load(stem: str):
    """The kernel module ``crossentropy._triton.<stem>`` (imported on first use)."""
    if stem not in _LOADED:
        _LOADED[stem] = importlib.import_module(f"{__name__}.{stem}")
    return _LOADED[stem]
