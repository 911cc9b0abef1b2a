"""The vocab-parallel path of the registry: a cross-entropy case through both
vocab-parallel functions, in each rank of an initialised gloo group, the
classes split into nearly even shards (uneven ones with ``vocab_start``),
compared with the case's float64 reference as :mod:`.paths` does; with
``triton=True``, through the Triton kernels on every rank (what CUDA tensors
take; on CPU tensors under the interpreter, tiles as the ``triton`` path's)."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD

from ..distributed import vocab_parallel_cross_entropy, vocab_parallel_linear_cross_entropy
from .paths import TORCH_DTYPES, TRITON_TILE, Result, error, as_float64, as_rows, to_dtype, expected, tolerance
from .transforms import Result as TransformResult

__all__ = ["TRANSFORMS", "run_vocab_parallel", "run_vocab_parallel_transform"]


def run_vocab_parallel(case, dtype, rank, world, triton=False):
    """This rank's ``Result`` of both vocab-parallel functions on ``case``, the
    classes split into ``world`` nearly even shards (uneven ones with
    ``vocab_start``). Call it in every rank of an initialised gloo group (with
    the same ``triton`` on every rank: ``_triton.forced``, the kernels of CUDA
    tensors on CPU ones under the interpreter)."""
    exp = expected(case, dtype)
    x, t = (to_dtype(a, dtype, "torch") for a in exp.args)
    kwargs = {k: to_dtype(v, dtype, "torch") for k, v in exp.kwargs.items() if k != "axis"}
    L, T, _ = as_rows(x, t, exp.kwargs)
    C = L.shape[1]
    widths = [C // world + (1 if r < C % world else 0) for r in range(world)]
    start = sum(widths[:rank])
    even = len(set(widths)) == 1
    shard = L[:, start:start + widths[rank]].clone().requires_grad_(True)
    results = []
    for linear in (False, True):
        if linear and not torch.isfinite(L).all():
            continue
        with warnings.catch_warnings(), _kernels(triton):
            warnings.simplefilter("ignore", UserWarning)
            if linear:
                W = shard.detach().T.contiguous().requires_grad_(True)
                value = vocab_parallel_linear_cross_entropy(torch.eye(L.shape[0], dtype=L.dtype), W, T,
                                                            vocab_start=None if even else start, **kwargs)
            else:
                value = vocab_parallel_cross_entropy(shard, T, vocab_start=None if even else start, **kwargs)
        g = torch.as_tensor(exp.grad_output).to(value.dtype).reshape(value.shape)
        leaf = W if linear else shard
        (gs,) = torch.autograd.grad(value, leaf, g) if value.requires_grad else (torch.zeros_like(leaf),)
        gs = gs.T if linear else gs
        full = torch.zeros(L.shape, dtype=torch.float64)
        full[:, start:start + widths[rank]] = gs.double()
        want = None if exp.grad is None else as_rows(torch.from_numpy(exp.grad), T, exp.kwargs)[0].numpy()
        mine = slice(start, start + widths[rank])
        ve = error(as_float64(value).reshape(exp.value.shape), exp.value, False, dtype)
        ge = error(full.numpy()[:, mine], want[:, mine], False, dtype) if exp.grad is not None else 0.0
        tol = tolerance(dtype)
        results.append(Result(ve <= tol and ge <= tol and value.dtype == TORCH_DTYPES[dtype], ve, ge, tol,
                              value.dtype == TORCH_DTYPES[dtype]))
    return results


def _kernels(triton):
    if not triton:
        return contextlib.nullcontext()
    from .. import _triton

    return _triton.forced(block=TRITON_TILE)


# Transforms of the vocab-parallel functions: ``hvp`` (double backward through
# the public function, ``torch.autograd.functional.hvp``, with a tangent over
# every shard, so that the cross-rank terms of the Hessian count) and
# torch.func's, each of this rank's shard against the same transform of the
# case's single-process float64 reference on the whole rows. ``gradgradcheck``
# does not apply (every rank would perturb its own shard at once), nor
# ``jacfwd`` (refused: a batch of tangents, each rank's own directions).
TRANSFORMS = ("hvp", "grad", "vjp", "jacrev", "jvp", "forward_ad", "vmap")


def _transformed(transform, value, x, t, w, v):
    """``transform`` of ``value(x, t)`` (the loss of rows ``x``, targets ``t``)
    with ``w`` weighing it into a scalar and ``v`` a tangent shaped like ``x``;
    for ``vmap``, per-sample gradients over the rows."""
    scalar = lambda z: (value(z, t) * w).sum()  # noqa: E731
    if transform == "hvp":
        return torch.autograd.functional.hvp(scalar, x, v)[1]
    if transform == "grad":
        return torch.func.grad(scalar)(x)
    if transform == "vjp":
        out, pull = torch.func.vjp(lambda z: value(z, t), x)
        return pull(w.reshape(out.shape))[0]
    if transform == "jacrev":
        return torch.func.jacrev(lambda z: value(z, t))(x)
    if transform == "jvp":
        return torch.func.jvp(lambda z: value(z, t), (x,), (v,))[1]
    if transform == "forward_ad":
        with fwAD.dual_level():
            return fwAD.unpack_dual(value(fwAD.make_dual(x, v), t)).tangent
    if transform == "vmap":
        return torch.func.vmap(torch.func.grad(lambda xi, ti: value(xi[None], ti[None]).sum()))(x, t)
    raise ValueError(f"transform={transform!r} is not one of {TRANSFORMS}")


def run_vocab_parallel_transform(case, transform, rank, world):
    """This rank's ``transforms.Result`` of both vocab-parallel functions (the
    linear one of ``W = shard.T`` with the identity as input) under
    ``transform``; where the transform's result has a class axis, this rank's
    columns of the reference's. Call it in every rank of an initialised gloo
    group; a case the reference cannot run is skipped on every rank alike."""
    exp = expected(case, "float64")
    x, t = (to_dtype(a, "float64", "torch") for a in exp.args)
    kwargs = {k: to_dtype(v, "float64", "torch") for k, v in exp.kwargs.items() if k != "axis"}
    L, T, _ = as_rows(x, t, exp.kwargs)
    C = L.shape[1]
    widths = [C // world + (1 if r < C % world else 0) for r in range(world)]
    start = sum(widths[:rank])
    mine = slice(start, start + widths[rank])
    vstart = None if len(set(widths)) == 1 else start
    w = torch.as_tensor(exp.grad_output, dtype=torch.float64).reshape(-1)
    v = torch.from_numpy(np.random.default_rng(2).normal(size=tuple(L.shape)))
    v_mine = v[:, mine]  # this rank's part of the tangent the reference takes whole
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            want = _transformed(transform, lambda z, tt: case.reference(z, tt, **kwargs).reshape(-1), L, T, w, v)
        except Exception:  # noqa: BLE001 - PyTorch's own function does not run under this transform here
            return TransformResult(True, False, 0.0, "not applicable: the reference does not run under it")
        if not torch.isfinite(want).all():
            return TransformResult(True, False, 0.0, "not applicable: the reference's result is not finite")
        if transform not in ("jvp", "forward_ad"):
            want = want[..., mine]  # this rank's columns
        worst, detail = 0.0, ""
        for name, f in (("logits", lambda z, tt: vocab_parallel_cross_entropy(z, tt, vocab_start=vstart, **kwargs)),
                        ("linear", lambda z, tt: vocab_parallel_linear_cross_entropy(
                            torch.eye(z.shape[0], dtype=z.dtype), z.T, tt, vocab_start=vstart, **kwargs))):
            try:
                got = _transformed(transform, lambda z, tt: f(z, tt).reshape(-1), L[:, mine].clone(), T, w,
                                   v_mine)
            except Exception as e:  # noqa: BLE001 - reported as the failure it is
                return TransformResult(False, True, np.inf, f"{name}: {type(e).__name__}: {e}")
            err = error(as_float64(got), as_float64(want))
            if err > worst:
                worst, detail = err, "" if err <= tolerance("float64") else f"{name}: error {err:.3g}"
    return TransformResult(worst <= tolerance("float64"), True, worst, detail)
