r"""Elementwise binary losses for torch tensors: binary cross-entropy on logits
and the sigmoid focal loss, a chunk at a time.

The formulas are the core's (``losses.binary.bce_with_logits_terms``,
``losses.focal.sigmoid_focal_terms``, in log space); this module only walks
the elements. Each forward computes the loss and its gradient from the same
intermediates, keeps the gradient (with the ``1/n`` of ``mean`` already
applied, to each chunk while it is in cache, so that ``loss.backward()``
makes no pass over it at all), and the backward only multiplies it by
``grad_output`` (:func:`crossentropy._autograd.kept_gradient`).

On CPU the elements are walked in chunks of ``_CHUNK_ELEMS``: a chunk's
temporaries (about 1 MB each) are reused from the allocator and stay in
cache, and only the kept gradient (and the losses, for ``reduction="none"``)
is input-sized. Without chunks every temporary is an input-sized buffer: at
10M elements the focal loss's dozen temporaries would each be a fresh 40 MB
buffer, paid for in page faults. On CUDA and under ``torch.compile`` the
whole tensor is one chunk.
"""

from __future__ import annotations

import torch

from .. import _reduce
from .._array import namespace
from .._autograd import kept_gradient
from .._stable import normal_range
from ..losses.binary import target_values
from . import binary_cpu

__all__ = ["elementwise_loss"]

_COMPAT = namespace(x=torch.empty(0))  # the array-API namespace, for the checks

# Elements a chunk: 1 MB of float32, which stays in L2 between the passes.
# Chosen with benchmarks/bench_chunk_bytes.py (BENCHMARKS.md has the figures).
_CHUNK_ELEMS = 1 << 18


def _layout(x, tensors):
    """Views to walk in chunks along their first dimension: everything
    flattened when every tensor has x's shape, else x (at least 1-d) with the
    others left-padded to its rank (a leading size of 1 broadcasts)."""
    if all(a is None or a.shape == x.shape for a in tensors):
        return x.reshape(-1), [None if a is None else a.reshape(-1) for a in tensors]
    xv = x.reshape(1) if x.ndim == 0 else x
    return xv, [None if a is None else a.reshape((1,) * (xv.ndim - a.ndim) + tuple(a.shape)) for a in tensors]


def _as(a, dtype):
    return a if a.dtype == dtype else a.to(dtype)


def _extreme(xc, bound) -> bool:
    """Whether a chunk holds a logit beyond ``bound`` in size, or a NaN."""
    if xc.numel() == 0:
        return False
    lo, hi = torch.aminmax(xc)
    return not max(-lo.item(), hi.item()) <= bound  # NaN compares False


def _loop(x, terms, tensors, reduction, want_grad, target_name):
    """The loss, reduced, in x's dtype, and the gradient of the reduced loss
    with respect to x for a unit grad_output (or None). ``terms(xp, x, *tensors,
    need_grad)`` is the core's elementwise formula."""
    # The elementwise formulas call only functions whose torch signature is the
    # array API's (exp, abs, log1p, maximum, logaddexp, where, ...), so torch
    # itself serves as their namespace here, without the compat layer's calls.
    xp = torch
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    n = x.numel()
    xv, tv = _layout(x, tensors)
    rows = xv.shape[0] if xv.ndim else 1
    per_row = max(1, n // max(1, rows))
    whole = x.device.type != "cpu" or torch.compiler.is_compiling()
    step = max(1, rows if whole else _CHUNK_ELEMS // per_row)
    out = torch.empty(xv.shape, dtype=x.dtype, device=x.device) if reduction == "none" else None
    grad = torch.empty(xv.shape, dtype=x.dtype, device=x.device) if want_grad else None
    total = torch.zeros((), dtype=cdt, device=x.device)
    scale = _reduce.unit_scale(xp, reduction, cdt, x, count=n)
    bound = normal_range(torch, cdt)
    for i in range(0, rows, step):
        sl = slice(i, i + step)
        target_values(_COMPAT, tv[0][sl], target_name)  # the target's values, while the chunk is in cache
        chunk = [None if a is None else _as(a if a.shape[0] == 1 else a[sl], cdt) for a in tv]
        xc = _as(xv[sl], cdt)
        # the formulas' care for logits beyond the normal range, infinite or
        # NaN ones costs a select and an exp: only where a chunk may have one
        # (on CUDA and while tracing, always)
        extreme = whole or _extreme(xc, bound)
        loss, g = terms(xp, xc, *chunk, need_grad=want_grad, extreme=extreme, summed=out is None)
        if out is None:  # the chunk's sum (its losses expanded: factors that broadcast may leave a smaller shape)
            total = total + (loss if loss.ndim == 0 else loss.expand(xv[sl].shape).sum())
        else:
            out[sl] = loss
        if grad is not None:  # the gradient of the reduced loss, written once
            torch.mul(g, scale, out=grad[sl]) if g.shape == grad[sl].shape else grad[sl].copy_(g * scale)
    value = out.reshape(x.shape) if out is not None else (total * scale).to(x.dtype)
    return value, None if grad is None else grad.reshape(x.shape)


def elementwise_loss(x, terms, tensors, reduction, name, target_name="target", reference=None, compiled=None):
    """The loss of ``terms`` (the core's elementwise formula; its extra array
    arguments ``tensors``, the target first, already validated but for the
    target's values, and broadcastable to ``x``), differentiable with respect
    to ``x`` through the gradient kept from the forward pass (and, with
    ``create_graph=True``, through ``reference``: see ``kept_gradient``).
    ``compiled(x, *tensors, reduction, want_grad, target_name)``: the same
    formula compiled, taken where ``binary_cpu.applies``."""
    fast = compiled is not None and binary_cpu.applies(x)

    def compute(want_grad):
        if fast:
            value, grad = compiled(x, *tensors, reduction, want_grad, target_name)
        else:
            value, grad = _loop(x, terms, tensors, reduction, want_grad, target_name)
        return value, grad, ()

    return kept_gradient(compute, x, name=name, reference=reference)[0]
