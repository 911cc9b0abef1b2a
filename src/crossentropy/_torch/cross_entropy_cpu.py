"""The fused cross-entropy of CPU tensors through the compiled row kernel
(:mod:`crossentropy._cpu.cross_entropy`): the same targets, row scale and
reduction as the blocks of :mod:`crossentropy._torch.cross_entropy`, the row
statistics and the gradient from one parallel region, the loss rows from
``losses.cross_entropy.row_loss``. :func:`applies` says when it is used."""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

from .. import _cpu
from .._numpy.cross_entropy import rows
from .._array import quiet, transformed
from ..losses import cross_entropy as math
from ..losses._targets import Categorical
from .cross_entropy_blocks import XP

__all__ = ["applies", "block", "forward", "numpy_view"]

_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def applies(x, shards) -> bool:
    """A contiguous CPU tensor of float32, float64, bfloat16 or float16, on one device,
    outside ``torch.compile`` and ``torch.func``, with numba installed."""
    return (shards is None and x.device.type == "cpu" and x.dtype in _DTYPES and x.is_contiguous()
            and x.numel() > 0 and not torch.compiler.is_compiling() and not transformed(x) and _cpu.available())


def numpy_view(t):
    """A NumPy view of a CPU tensor (bfloat16 as its bits in uint16, float16
    as its bits in int16: two types, so that the kernel knows which it has)."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    if t.dtype == torch.float16:
        return t.view(torch.int16).numpy()
    return t.numpy()


def _f64(t, n):
    return np.zeros(n) if t is None else t.detach().to(torch.float64).numpy()


# The last gradient buffer this module made, for the next call of the same
# shape and dtype: a fresh buffer's first touch costs page faults at a few
# GB/s, most of a step's time (BENCHMARKS.md, "Fused cross-entropy"), and in a
# training loop the logits' gradient of one step is garbage by the next. It is
# reused only when nothing else holds it: no Python reference but this one, no
# other tensor (``.grad``, a graph's saved tensors) on its TensorImpl, no view
# on its storage. So the memory this keeps between steps is one gradient, the
# buffer the next step would allocate anyway; CROSSENTROPY_REUSE_GRADIENT=0
# turns it off.
_HELD = {}


def _unused(t) -> bool:
    # references: _HELD's, the caller's local, this argument, getrefcount's own
    return (sys.getrefcount(t) <= 4 and t._use_count() == 1
            and torch._C._storage_Use_Count(t.untyped_storage()._cdata) <= 2)


def _gradient_buffer(x):
    """A buffer for the gradient of ``x``: the held one when it is free and
    fits, else a new one (which is then held)."""
    if os.environ.get("CROSSENTROPY_REUSE_GRADIENT", "1") == "0":
        _HELD.clear()
        return torch.empty_like(x)
    held = _HELD.get("grad")
    if (held is not None and held.shape == x.shape and held.dtype == x.dtype and held.data_ptr() != x.data_ptr()
            and _unused(held)):
        return held
    _HELD.pop("grad", None)  # dropped first, so that it can be freed before the new one is made
    held = _HELD["grad"] = torch.empty_like(x)
    return held


def _numpy_problem(problem, x):
    """The problem as NumPy arrays over the same memory (index targets, the
    counted mask, probabilities and class weights in the compute dtype), its
    rows ``x``'s (N,)."""
    import array_api_compat.numpy as xp

    C = x.shape[1]

    def flat(a, *shape):
        return None if a is None else a.detach().reshape(*shape).numpy()

    return Categorical(xp, x, 1, flat(problem.index, -1), flat(problem.counted, -1), flat(problem.probs, -1, C),
                       flat(problem.weight, C), problem.options)


def forward(x, problem, num_items, want_grad, inplace, want_stats):
    """``(value, grad or None, stats or None)`` as ``_torch.cross_entropy._forward``
    returns them: the targets, row scale and reduction in NumPy around one
    kernel call (``_numpy.cross_entropy.rows``, which NumPy arrays run too)."""
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    grad = (x if inplace else _gradient_buffer(x)) if want_grad else None
    if torch.is_tensor(num_items):
        num_items = num_items.detach().cpu().numpy()
    xs = numpy_view(x)
    with quiet():  # the row math runs in NumPy: -inf rows give inf/NaN on purpose, as in torch
        value, stats = rows(_numpy_problem(problem, xs), xs, np.float64 if cdt == torch.float64 else np.float32,
                            num_items, grad=None if grad is None else numpy_view(grad), inplace=inplace,
                            want_stats=want_stats, threads=torch.get_num_threads())
    if inplace:  # written through NumPy: tell autograd, as an in-place torch op would
        torch.autograd.graph.increment_version(x)
    value = torch.from_numpy(np.asarray(value)).to(x.dtype)
    if stats is not None:
        stats = math.CrossEntropyStats(*(torch.from_numpy(np.asarray(a)) for a in stats))
    return value, grad, stats


def block(x, grad, tg, opt, v):
    """One call of the row kernel on the rows ``x`` (N, C) with targets ``tg``
    (``cross_entropy_blocks.Targets``) and row scale ``v`` (None: no
    gradient), the gradient written into ``grad`` (which may be ``x``).
    Returns the loss rows. Linear cross-entropy calls it on each chunk's
    logits (its statistics come from the core, not from here)."""
    from .._cpu.cross_entropy import rows

    N, C = x.shape
    z, cap = opt.z_loss, opt.softcap
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    if tg.probs is None:
        col, has_col = tg.column, True
    else:
        col, has_col = torch.zeros(N, dtype=torch.long), False  # read only for hits, which this never asks
        tg = tg._replace(t=tg.t._replace(soft=tg.b.sum(1)))  # B = sum_c b_c
    t = tg.t
    want_grad = v is not None
    vc0 = math.coefficient(XP, t, v) if want_grad else None
    b = tg.b  # the soft weights, as NumPy: a (C,) vector in float64, (N, C) in the compute dtype
    if b is not None and not isinstance(b, float):
        b = _f64(b, C) if b.dim() == 1 else numpy_view(b.to(cdt).contiguous())
    bmode, bvec, bmat = _cpu.soft_weights(b, C, np.float64 if cdt == torch.float64 else np.float32)
    inplace = want_grad and grad.data_ptr() == x.data_ptr()
    outs = [np.empty(N) for _ in range(4)]
    xs = numpy_view(x)
    work = np.empty(0, np.float64 if x.dtype == torch.float64 else np.float32)
    _cpu.use_threads(N * C, torch.get_num_threads())
    rows(xs, xs if grad is None else numpy_view(grad), work, want_grad, inplace, col.long().numpy(), has_col,
         _f64(t.hard, N), _f64(v, N), _f64(vc0, N), bmode, bvec, bmat, float(z), float(cap or 0.0), False,
         *outs, np.zeros(N, dtype=np.bool_))
    if inplace:  # written through NumPy: tell autograd, as an in-place torch op would
        torch.autograd.graph.increment_version(x)
    m, log_sum, target_shifted, dot = (torch.from_numpy(a).to(cdt) for a in outs)
    return math.row_loss(XP, t, log_sum, target_shifted if has_col else None, dot if b is not None else None,
                         m + log_sum, z)
