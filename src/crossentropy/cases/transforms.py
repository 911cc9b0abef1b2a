"""Running a case through a transform of PyTorch, against the same transform
of the case's float64 PyTorch reference.

Transforms (:data:`TRANSFORMS`), each of a float64 case's first argument with
the others fixed (the case's ``grad_output`` weighs the value into a scalar
where the transform needs one):

* ``hessian``: ``torch.autograd.functional.hessian``, that is double backward
  through the public function (its kernel where it has one);
* ``gradgradcheck``: ``torch.autograd.gradgradcheck`` (finite differences of
  the backward, ``grad_output`` differentiated too);
* ``grad``, ``vjp``, ``jacrev``, ``jacfwd``, ``jvp``: ``torch.func``'s;
* ``forward_ad``: ``torch.autograd.forward_ad`` dual tensors;
* ``vmap``: per-sample gradients, ``vmap(grad(...))`` over the leading axis of
  the first two arguments (the loss of one sample a batch of one).

A transform applies to a case where it runs on the reference (PyTorch's own
functions) with a finite result (a batch of nothing but ignored rows has
PyTorch's 0/0 there, ours the documented 0) and the case is finite (no
``extreme`` or ``value-only`` tag): then ours must run and agree within 1e-10
of max(1, the largest entry), the float64 tolerance of
:mod:`crossentropy.cases.paths`. ``gradgradcheck`` needs no reference: ours
must pass it.

``crossentropy check --transforms`` runs every case (2026-12-02, this
project's 2-core machine, 103 s): 1196 cases under ``hessian``,
``gradgradcheck``, ``grad``, ``vjp`` and ``jacrev``, 1194 under ``jacfwd``,
``jvp`` and ``forward_ad`` (2 not applicable), 703 under ``vmap`` (205 not
applicable: PyTorch's own function does not run batched there), all within
tolerance, the largest error 0.40 of it (a Hessian entry, 4e-11).
``tests/test_transforms.py`` runs one case in five of each loss and
transform.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD

from .paths import as_float64, error, expected, to_dtype, tolerance

__all__ = ["TRANSFORMS", "accepts", "check"]

TRANSFORMS = ("hessian", "gradgradcheck", "grad", "vjp", "jacrev", "jacfwd", "jvp", "forward_ad", "vmap")


def accepts(case, transform) -> bool:
    if case.tags & {"extreme", "value-only"}:
        return False
    if transform == "vmap":  # a batch axis shared by the first two arguments, and no per-element option
        args, kwargs = case.make()
        per_element = any(np.ndim(v) >= 2 for v in kwargs.values())
        return (len(args) >= 2 and np.ndim(args[0]) >= 2 and np.shape(args[1])[:1] == np.shape(args[0])[:1]
                and not per_element)
    return transform in TRANSFORMS


def _inputs(case):
    exp = expected(case, "float64")
    args = [to_dtype(a, "float64", "torch") for a in exp.args]
    kwargs = {k: to_dtype(v, "float64", "torch") for k, v in exp.kwargs.items()}
    w = torch.as_tensor(exp.grad_output, dtype=torch.float64)
    v = torch.from_numpy(np.random.default_rng(2).normal(size=np.shape(exp.args[0])))  # a tangent for jvp
    return args[0], args[1:], kwargs, w, v


def _apply(transform, fn, x, rest, kwargs, w, v):
    def value(z):
        return fn(z, *rest, **kwargs)

    def scalar(z):
        return (value(z) * w).sum()

    if transform == "hessian":
        return torch.autograd.functional.hessian(scalar, x)
    if transform == "gradgradcheck":
        ok = torch.autograd.gradgradcheck(value, (x.clone().requires_grad_(True),), raise_exception=False)
        return torch.tensor(0.0 if ok else 1.0)
    if transform == "grad":
        return torch.func.grad(scalar)(x)
    if transform == "vjp":
        _, pull = torch.func.vjp(value, x)
        return pull(w.reshape(value(x).shape))[0]
    if transform == "jacrev":
        return torch.func.jacrev(value)(x)
    if transform == "jacfwd":
        return torch.func.jacfwd(value)(x)
    if transform == "jvp":
        return torch.func.jvp(value, (x,), (v,))[1]
    if transform == "forward_ad":
        with fwAD.dual_level():
            return fwAD.unpack_dual(value(fwAD.make_dual(x, v))).tangent
    if transform == "vmap":
        def one(xi, ti):
            return fn(xi[None], ti[None], *rest[1:], **kwargs).sum()
        return torch.func.vmap(torch.func.grad(one))(x, rest[0])
    raise ValueError(f"transform={transform!r} is not one of {TRANSFORMS}")


class Result(NamedTuple):
    ok: bool
    applies: bool  # False: the reference itself does not run under this transform
    error: float
    detail: str

    def __str__(self):
        return self.detail or f"error {self.error:.3g} (tolerance {tolerance('float64'):.3g})"


def check(case, transform) -> Result:
    """``case`` through ``transform``, ours against the reference (for
    ``gradgradcheck``: ours passes it)."""
    x, rest, kwargs, w, v = _inputs(case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # kl_div's "mean" warning, tested on its own
        if transform == "gradgradcheck":
            ok = float(_apply(transform, case.function, x, rest, kwargs, w, v)) == 0.0
            return Result(ok, True, 0.0 if ok else np.inf, "" if ok else "gradgradcheck failed")
        try:
            want = _apply(transform, case.reference, x, rest, kwargs, w, v)
        except Exception:  # noqa: BLE001 - PyTorch's own functions do not support this transform here
            return Result(True, False, 0.0, "not applicable: the reference does not run under it")
        if not torch.isfinite(want).all():  # the reference's 0/0 where ours has its mean of nothing = 0
            return Result(True, False, 0.0, "not applicable: the reference's result is not finite")
        try:
            got = _apply(transform, case.function, x, rest, kwargs, w, v)
        except Exception as e:  # noqa: BLE001 - reported as the failure it is
            return Result(False, True, np.inf, f"{type(e).__name__}: {e}")
    err = error(as_float64(got), as_float64(want))
    return Result(bool(err <= tolerance("float64")), True, err, "")
