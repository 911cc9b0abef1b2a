"""Validation, written once: every public entry point checks its arguments here.

Every error names the argument and the bad value. Checks that must look at
the data (class indices in range, probabilities in [0, 1]) run on CPU arrays
only: on an accelerator they would force a device synchronisation, so there
they are skipped and the device's own bounds check (a device-side assert for
an out-of-range gather on CUDA) is what remains. Shape, dtype and option
checks run everywhere; they cost nothing.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from numbers import Integral, Real
from typing import NamedTuple

from ._array import as_array_like, compute_dtype, is_torch, on_cpu, stop_gradient

REDUCTIONS = ("none", "mean", "sum")
_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn(message: str, category=UserWarning) -> None:
    """``warnings.warn`` pointing at the caller's line: the first frame outside
    this package (and outside torch's autograd, which may sit in between)."""
    level, frame = 2, sys._getframe(1)  # stacklevel 2 is the caller of this function
    while frame is not None and (frame.f_code.co_filename.startswith(_PACKAGE)
                                 or f"{os.sep}torch{os.sep}autograd{os.sep}" in frame.f_code.co_filename):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, category, stacklevel=level)


def reduction(value, allowed=REDUCTIONS) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"reduction={value!r} is not one of {', '.join(map(repr, allowed))}")
    return value


_reduction = reduction  # for the functions below, whose argument of that name shadows it


def _interval(low, high, low_open) -> str:
    """The allowed range in words: "in [0.0, 1.0]", ">= 0.0", "> 0.0", "<= 1.0"."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}]"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    return f"<= {high}"


def real(name: str, value, *, low=None, high=None, low_open=False, allow_none=False):
    """A real number ``value`` inside [low, high] (``(low, ...`` with ``low_open``)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name}={value!r} must be a real number")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name}={value} must not be NaN")
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        raise ValueError(f"{name}={value} must be {_interval(low, high, low_open)}")
    return value


def integer(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name}={value!r} must be an integer")
    return int(value)


def axis(name: str, value, ndim: int) -> int:
    """``value`` normalised to [0, ndim), with an error naming it otherwise."""
    value = integer(name, value)
    if not -ndim <= value < ndim:
        raise ValueError(f"{name}={value} is out of range for an array of {ndim} dimension(s)")
    return value % ndim


def floating(xp, x, name: str = "input", min_ndim: int = 1):
    """Floating ``x`` with at least ``min_ndim`` dimensions."""
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


def class_indices(xp, target, num_classes: int, ignore_index: int, name: str = "target") -> bool:
    """Integer class indices in [0, num_classes), or equal to ``ignore_index``.
    Returns True when every index was seen to be in [0, num_classes) (a
    non-empty CPU target), so that none equals an ``ignore_index`` outside it."""
    if not xp.isdtype(target.dtype, "integral"):
        raise TypeError(f"{name} holds class indices and must have an integer dtype, got {target.dtype}")
    if not on_cpu(target) or math.prod(target.shape) == 0:
        return False
    lo, hi = _min_max(xp, target)
    if lo >= 0 and hi < num_classes:  # the common case, in one pass
        return True
    bad = ((target < 0) | (target >= num_classes)) & (target != ignore_index)
    if bool(xp.any(bad)):
        first = int(target[bad][0])
        raise IndexError(
            f"{name} holds class index {first}, outside [0, {num_classes}) "
            f"and not ignore_index={ignore_index}"
        )
    return False


def _min_max(xp, a):
    """The smallest and largest entry, as Python numbers: one pass on torch."""
    if is_torch(a):
        import torch

        lo, hi = torch.aminmax(a) if a.dtype != torch.bool else (a.min(), a.max())
        return lo.item(), hi.item()
    return float(xp.min(a)), float(xp.max(a))


def probabilities(xp, p, name: str, *, high=None) -> None:
    """No NaN and nothing negative (and nothing above ``high`` when given).
    One pass on torch (two elsewhere): the minimum is NaN where some entry is
    (min propagates NaN)."""
    if not on_cpu(p) or math.prod(p.shape) == 0:
        return
    p = stop_gradient(p)  # looked at, not differentiated
    allowed = f"in [0, {high}]" if high is not None else ">= 0"
    low, top = _min_max(xp, p)
    if math.isnan(low):
        raise ValueError(f"{name} contains NaN; probabilities must be numbers {allowed}")
    if low < 0:
        raise ValueError(f"{name} contains {low}; probabilities must be {allowed}")
    if high is not None and top > high:
        raise ValueError(f"{name} contains {top}; probabilities must be {allowed}")


def no_nan(xp, a, name: str) -> None:
    if on_cpu(a) and math.prod(a.shape) and bool(xp.any(xp.isnan(a))):
        raise ValueError(f"{name} contains NaN")


# ---------------------------------------------------------------------------
# The options of the cross-entropy family, checked in one place for every
# entry point: the functions, the torch kernels, linear and vocab-parallel
# cross-entropy, and the nn modules (which check at construction).
# ---------------------------------------------------------------------------


class CrossEntropyOptions(NamedTuple):
    reduction: str
    ignore_index: int
    label_smoothing: float
    z_loss: float
    softcap: float | None


# Options already checked, by their arguments and the arguments' types (so
# that True is not taken for 1, nor 1 for 1.0): a training loop passes the
# same ones every step, and the five checks cost a few microseconds, a
# noticeable part of a small call. Never more than _MAX_REMEMBERED entries.
_CHECKED_OPTIONS: dict = {}
_MAX_REMEMBERED = 64


def cross_entropy_options(reduction="mean", ignore_index=-100, label_smoothing=0.0, z_loss=0.0,
                          softcap=None) -> CrossEntropyOptions:
    given = (reduction, ignore_index, label_smoothing, z_loss, softcap)
    try:
        key = (given, tuple(map(type, given)))
        known = _CHECKED_OPTIONS.get(key)
    except TypeError:  # an unhashable argument: checked (and refused) below
        key = known = None
    if known is not None:
        return known
    options = CrossEntropyOptions(
        _reduction(reduction),
        integer("ignore_index", ignore_index),
        real("label_smoothing", label_smoothing, low=0.0, high=1.0),
        real("z_loss", z_loss, low=0.0),
        real("softcap", softcap, low=0.0, low_open=True, allow_none=True),
    )
    if key is not None and len(_CHECKED_OPTIONS) < _MAX_REMEMBERED:
        _CHECKED_OPTIONS[key] = options
    return options


def focal_gamma(gamma) -> float:
    """The focusing exponent of both focal losses, ``gamma >= 0``."""
    return real("gamma", gamma, low=0.0)


def focal_alpha(alpha) -> float:
    """The sigmoid focal loss's weight of the positive class: in [0, 1], or
    negative for none (torchvision's convention)."""
    return real("alpha", alpha, high=1.0)


def class_weight(xp, weight, like, num_classes: int, name: str = "input"):
    """Class weights: ``None``, or a 1-D array (or sequence) of ``num_classes``
    real numbers, returned in ``like``'s compute dtype on its device."""
    if weight is None:
        return None
    w = as_array_like(xp, weight, like, "weight")
    if not xp.isdtype(w.dtype, ("real floating", "integral")) or w.ndim != 1 or w.shape[0] != num_classes:
        raise ValueError(
            f"weight must be a 1-D floating array of length C={num_classes}, "
            f"got shape {tuple(w.shape)} and dtype {w.dtype}"
        )
    return xp.astype(w, compute_dtype(xp, like.dtype, name))
