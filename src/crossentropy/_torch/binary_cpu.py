"""Binary cross-entropy on logits of CPU tensors through the compiled
elementwise kernel (:mod:`crossentropy._cpu.binary`); :func:`applies` says
when. The validation, the reduction's scale and the kept gradient are the
chunked kernel's (:mod:`crossentropy._torch.binary`)."""

from __future__ import annotations

import numpy as np
import torch

from .. import _cpu, _reduce
from .._array import namespace, transformed
from ..losses.binary import target_values

__all__ = ["applies", "bce_with_logits"]

_COMPAT = namespace(x=torch.empty(0))
_NONE = np.zeros(1)


def applies(x, tensors) -> bool:
    """A contiguous float32 or float64 CPU tensor, its other tensors
    broadcastable to it, outside ``torch.compile`` and ``torch.func``, with
    numba installed."""
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and x.is_contiguous()
            and x.numel() > 0 and not torch.compiler.is_compiling() and not transformed(x)
            and not any(transformed(a) for a in tensors if a is not None) and _cpu.available())


def _flat(a, x):
    """``a`` broadcast to ``x`` (a copy only where it broadcasts), flat, in x's dtype, as NumPy."""
    if a is None:
        return _NONE.astype(np.float32 if x.dtype == torch.float32 else np.float64), False
    a = a.detach().to(x.dtype).expand(x.shape).contiguous()
    return a.reshape(-1).numpy(), True


def bce_with_logits(x, t, w, pw, reduction, want_grad, target_name):
    """``(value, grad or None)`` as ``_torch.binary._loop`` returns them."""
    import numba

    from .._cpu.binary import bce_logits

    target_values(_COMPAT, t, target_name)
    n = x.numel()
    cdt = x.dtype
    scale = float(_reduce.unit_scale(torch, reduction, torch.float64, x, count=n))
    xs = x.detach().reshape(-1).numpy()
    ts, _ = _flat(t, x)
    ws, has_w = _flat(w, x)
    ps, has_pw = _flat(pw, x)
    grad = torch.empty_like(x) if want_grad else None
    rows = torch.empty_like(x) if reduction == "none" else None
    gs = xs if grad is None else grad.reshape(-1).numpy()
    rs = xs if rows is None else rows.reshape(-1).numpy()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    total = bce_logits(xs, ts, ws, ps, has_w, has_pw, want_grad, rows is not None, scale, gs, rs)
    value = rows if rows is not None else torch.tensor(total * scale, dtype=cdt)
    return value, grad
