"""Validation and reduction, written once and used by every function.

Every error names the argument and the bad value. Checks that must look at
the data (class indices in range, probabilities in [0, 1]) run on CPU arrays
only: on an accelerator they would force a device synchronisation, so there
they are skipped and the device's own bounds check (a device-side assert for
an out-of-range gather on CUDA) is what remains. Shape, dtype and option
checks run everywhere; they cost nothing.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from ._array import device as _device
from ._array import on_cpu

REDUCTIONS = ("none", "mean", "sum")


def reduction(value, allowed=REDUCTIONS) -> str:
    if value not in allowed:
        raise ValueError(f"reduction={value!r} is not one of {', '.join(map(repr, allowed))}")
    return value


def real(name: str, value, *, low=None, high=None, low_open=False, allow_none=False):
    """A real number ``value`` inside [low, high] (``(low, ...`` with ``low_open``)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name}={value!r} must be a real number")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name}={value} must not be NaN")
    if low is not None and (value <= low if low_open else value < low):
        bound = f"> {low}" if low_open else f">= {low}"
        if high is not None:
            bound = f"in {'(' if low_open else '['}{low}, {high}]"
        raise ValueError(f"{name}={value} must be {bound}")
    if high is not None and value > high:
        raise ValueError(f"{name}={value} must be in [{low}, {high}]")
    return value


def integer(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name}={value!r} must be an integer")
    return int(value)


def logits(xp, x, name: str = "input", min_ndim: int = 1):
    """Floating input with at least ``min_ndim`` dimensions."""
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(
            f"{name} must have a real floating dtype, got {x.dtype}; "
            "cast it, for example with .float() or .astype(float)"
        )
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {tuple(x.shape)}")
    return x


def same_shape(name: str, a, ref_name: str, ref) -> None:
    if tuple(a.shape) != tuple(ref.shape):
        raise ValueError(
            f"{name} has shape {tuple(a.shape)} but {ref_name} has shape {tuple(ref.shape)}; they must match"
        )


def broadcastable(name: str, a, shape) -> None:
    """``a`` broadcasts to ``shape`` without changing it."""
    if len(a.shape) > len(shape) or any(
        s != 1 and s != t for s, t in zip(reversed(a.shape), reversed(shape))
    ):
        raise ValueError(f"{name} of shape {tuple(a.shape)} does not broadcast to {tuple(shape)}")


def class_indices(xp, target, num_classes: int, ignore_index: int, name: str = "target") -> None:
    """Integer class indices in [0, num_classes), or equal to ``ignore_index``."""
    if not xp.isdtype(target.dtype, "integral"):
        raise TypeError(f"{name} holds class indices and must have an integer dtype, got {target.dtype}")
    if not on_cpu(target) or math.prod(target.shape) == 0:
        return
    bad = ((target < 0) | (target >= num_classes)) & (target != ignore_index)
    if bool(xp.any(bad)):
        first = int(target[bad][0])
        raise IndexError(
            f"{name} holds class index {first}, outside [0, {num_classes}) "
            f"and not ignore_index={ignore_index}"
        )


def probabilities(xp, p, name: str, *, high=None) -> None:
    """No NaN and nothing negative (and nothing above ``high`` when given)."""
    if not on_cpu(p) or math.prod(p.shape) == 0:
        return
    if bool(xp.any(xp.isnan(p))):
        raise ValueError(f"{name} contains NaN; probabilities must be numbers in [0, {high or 'inf'}]")
    low = xp.min(p)
    if bool(low < 0):
        raise ValueError(f"{name} contains {float(low)}; probabilities must be >= 0")
    if high is not None:
        top = xp.max(p)
        if bool(top > high):
            raise ValueError(f"{name} contains {float(top)}; probabilities must be in [0, {high}]")


# ---------------------------------------------------------------------------
# Reduction. ``loss`` holds one value per row (per element for elementwise
# losses); ``denominator`` is what "mean" divides by. When the denominator is
# 0 (every target ignored, or zero total weight) "mean" gives 0 and a zero
# gradient instead of PyTorch's 0/0 = NaN. Nothing here reads a value back to
# the host, so it is safe on accelerators and under graph capture.
# ---------------------------------------------------------------------------


def _safe(xp, d):
    return xp.where(d == 0, xp.ones_like(d), d)


def reduce(xp, loss, how: str, denominator=None):
    if how == "none":
        return loss
    total = xp.sum(loss)
    if how == "sum":
        return total
    if denominator is None:
        denominator = math.prod(loss.shape)
    d = xp.asarray(denominator, dtype=total.dtype, device=_device(total))
    return xp.where(d == 0, xp.zeros_like(total), total / _safe(xp, d))


def scale(xp, grad_output, how: str, row_shape, dtype, like, denominator=None):
    """What each row's unit gradient is multiplied by: d value / d loss_row times grad_output."""
    dev = _device(like)
    if grad_output is None:
        g = xp.ones(() if how != "none" else tuple(row_shape), dtype=dtype, device=dev)
    else:
        g = xp.asarray(grad_output, device=dev)
        want = tuple(row_shape) if how == "none" else ()
        if tuple(g.shape) != want:
            raise ValueError(
                f"grad_output has shape {tuple(g.shape)} but the value has shape {want} "
                f"(reduction={how!r})"
            )
        g = xp.astype(g, dtype)
    if how != "mean":
        return g
    if denominator is None:
        denominator = math.prod(row_shape)
    d = xp.asarray(denominator, dtype=dtype, device=dev)
    return xp.where(d == 0, xp.zeros_like(g), g / _safe(xp, d))
