"""The vocab-parallel path of the registry: a cross-entropy case through both
vocab-parallel functions, in each rank of an initialised gloo group, the
classes split into nearly even shards (uneven ones with ``vocab_start``),
compared with the case's float64 reference as :mod:`.paths` does."""

from __future__ import annotations

import warnings

import torch

from ..distributed import vocab_parallel_cross_entropy, vocab_parallel_linear_cross_entropy
from .paths import TORCH_DTYPES, Result, error, as_float64, as_rows, to_dtype, expected, tolerance

__all__ = ["run_vocab_parallel"]


def run_vocab_parallel(case, dtype, rank, world):
    """This rank's ``Result`` of both vocab-parallel functions on ``case``, the
    classes split into ``world`` nearly even shards (uneven ones with
    ``vocab_start``). Call it in every rank of an initialised gloo group."""
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
        with warnings.catch_warnings():
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

