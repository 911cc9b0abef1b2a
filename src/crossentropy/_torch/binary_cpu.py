"""The elementwise binary losses on logits of CPU tensors (binary
cross-entropy and the sigmoid focal loss) through the compiled kernels of
:mod:`crossentropy._cpu.binary`; :func:`applies` says when. The validation,
the reduction's scale and the kept gradient are the chunked kernel's
(:mod:`crossentropy._torch.binary`)."""

from __future__ import annotations

import numpy as np
import torch

from .. import _cpu, _reduce
from .._array import namespace
from ..losses.binary import target_values
from .cross_entropy_cpu import numpy_view

__all__ = ["applies", "bce_with_logits", "sigmoid_focal"]

_COMPAT = namespace(x=torch.empty(0))
_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def applies(x) -> bool:
    """A contiguous CPU tensor of float32, float64, bfloat16 or float16 (its
    other tensors validated and broadcastable to it), outside
    ``torch.compile``, with numba installed. (No call inside a ``torch.func``
    transform comes here: the public functions' dispatch,
    ``_autograd.analytic``, sends those to the core first.)"""
    return (x.device.type == "cpu" and x.dtype in _DTYPES and x.is_contiguous()
            and x.numel() > 0 and not torch.compiler.is_compiling() and _cpu.available())


def _flat(a, x):
    """``a`` broadcast to ``x`` (a copy only where it broadcasts or converts),
    flat, as NumPy in the compute dtype (x's, or float32 for half-precision
    logits: the chunked kernel's, which keeps a float32 target or weight
    unrounded); an empty array of it when ``a`` is None."""
    cdt = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    if a is None:
        return _NONE[cdt], False
    a = a.detach()
    if not (a.dtype == cdt and a.shape == x.shape and a.is_contiguous()):  # else a view as it is
        a = a.to(cdt).expand(x.shape).contiguous()
    return a.view(-1).numpy(), True


# the kernels' placeholder for an absent factor, one per compute dtype (never written)
_NONE = {torch.float32: np.empty(0, np.float32), torch.float64: np.empty(0, np.float64)}


def _run(kernel, x, t, reduction, want_grad, target_name, *args):
    """``(value, grad or None)`` of ``kernel`` (``bce_logits`` or
    ``sigmoid_focal``, its arguments between the targets and the flags in
    ``args``) as ``_torch.binary._loop`` returns them. The kernel counts the
    targets outside [0, 1] as it reads them; only a float64 target of
    float32 or half logits is checked before (its rounding to float32 could
    hide a value just above 1 or below 0)."""
    ts, _ = _flat(t, x)
    if t.dtype == torch.float64 and ts.dtype == np.float32:
        target_values(_COMPAT, t, target_name)
    n = x.numel()
    scale = _reduce.unit_factor(reduction, n)
    xs = numpy_view(x.view(-1))  # x is contiguous (applies), as are the buffers made here
    grad = torch.empty_like(x) if want_grad else None
    rows = torch.empty_like(x) if reduction == "none" else None
    gs = xs if grad is None else numpy_view(grad.view(-1))
    rs = xs if rows is None else numpy_view(rows.view(-1))
    _cpu.use_threads(n, torch.get_num_threads())
    total, bad = kernel(xs, ts, *args, want_grad, rows is not None, scale, gs, rs)
    if bad:  # the check's own message, naming the value
        target_values(_COMPAT, t, target_name)
        raise ValueError(f"{target_name} holds {bad} values outside [0, 1] or NaN")
    value = rows if rows is not None else torch.scalar_tensor(total * scale, dtype=x.dtype)
    return value, grad


def bce_with_logits(x, t, w, pw, reduction, want_grad, target_name):
    """Binary cross-entropy on logits: ``(value, grad or None)``."""
    from .._cpu.binary import bce_logits

    ws, has_w = _flat(w, x)
    ps, has_pw = _flat(pw, x)
    return _run(bce_logits, x, t, reduction, want_grad, target_name, ws, ps, has_w, has_pw)


def sigmoid_focal(alpha, gamma):
    """The sigmoid focal loss with ``alpha`` and ``gamma`` (validated), as the
    ``compiled`` argument of ``_torch.binary.elementwise_loss``."""
    from .._cpu.binary import sigmoid_focal as kernel

    g = float(gamma)
    g = int(g) if g in (0.0, 1.0, 2.0, 3.0, 4.0) else g  # an integer power by products (_cpu.binary._power)

    def compiled(x, t, reduction, want_grad, target_name):
        return _run(kernel, x, t, reduction, want_grad, target_name, float(alpha), g)
    return compiled
