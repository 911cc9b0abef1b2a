"""Running a case through a path, in a dtype, against its float64 reference.

Paths (:data:`PATHS`):

* ``numpy``: ``f.value_and_grad`` on NumPy arrays (float64, float32, float16),
  which takes the compiled CPU kernel where the loss has one
  (:data:`NUMPY_KERNELS`; float32 and float64, where numba is installed);
* ``numpy-core``: the same with the compiled CPU kernels turned off
  (``CROSSENTROPY_CPU_KERNELS=0``): the array-API core, as without numba;
* ``numpy-columns``: the ``numpy`` path with the class axis moved first (a
  C-contiguous copy, ``axis=0``, the gradient moved back): the column
  kernels of ``crossentropy._cpu.columns``, which take logits laid out so;
* ``torch-core``: torch autograd through the array-API core
  (``f.reference``, the analytic backward), and ``f.value_and_grad`` on torch
  tensors;
* ``torch-kernel``: the public function on torch tensors, which takes the
  fused kernel where the loss has one (:data:`KERNELS`): on CPU, the compiled
  one where numba is installed (``crossentropy._cpu``);
* ``torch-rows``: cross-entropy cases through ``torch-kernel`` with the
  few-classes kernel off (``_numpy.cross_entropy.FEW_CLASSES = 0``): the
  row kernel, which the registry's cases (at most 6 classes) would otherwise
  reach only with a soft cap (it takes logits of more than 16 classes);
* ``torch-chunks``: the same with the compiled CPU kernels turned off
  (``CROSSENTROPY_CPU_KERNELS=0``): the chunks of torch operations that CUDA
  tensors, float16 and every other fallback run;
* ``linear``: cross-entropy cases through ``linear_cross_entropy`` with the
  identity as input: ``x = I``, ``W = logits.T`` gives the same logits, exactly
  (the matrix products multiply by 1 and add zeros), and ``grad_W.T`` is the
  logits' gradient;
* ``triton``: the public function through the Triton kernels
  (:mod:`crossentropy._triton`, :data:`TRITON_KERNELS`): on CUDA tensors where
  a GPU is present, else on CPU tensors under Triton's interpreter
  (``TRITON_INTERPRET=1`` before triton is imported), with vocabulary tiles of
  4 columns so that rows of 5 or 6 classes span two tiles, the second masked;
  the tolerances are the torch kernel's (the same float32 accumulation, the
  same roundings of the half types; the online maximum adds one rounding of
  ``Σ`` per tile that raises it, well inside 64 ulps);
* ``triton-linear``: the ``linear`` path through the Triton linear kernels
  (tiles of 16, the smallest ``tl.dot`` takes), where ``triton`` runs;
* ``vocab-parallel``: cross-entropy cases with class indices through both
  vocab-parallel functions on a gloo group
  (:func:`crossentropy.cases.vocab_parallel.run_vocab_parallel`, called in each
  rank of a spawned group by the tests).

Every floating input is first rounded to the dtype, and the reference is
computed in float64 from the rounded inputs, so that what is compared is the
computation alone. Tolerances (:func:`tolerance`), relative to the larger of 1
and the largest finite expected entry:

* float64: 1e-10 (rounding is about 1e-16 per operation; what remains is a
  margin that still catches any wrong term);
* float32: 2^-17, 64 float32 ulps: a few roundings per operation over sums of
  at most a few dozen terms;
* bfloat16, float16: one rounding of the result to the half type (2^-8,
  2^-11; the inputs are computed in float32) plus the float32 allowance.

The half types' gradient is rounded twice: the kept unit gradient, then its
product with ``grad_output``; their tolerance is two roundings.

Cases tagged ``tiny`` (confident binary logits, a loss of about e^-|x|) are
compared entry by entry in units in the last place of the expected value in
the dtype (:func:`ulp`; subnormals have a fixed spacing, so a loss of e^-100,
a float32 subnormal, is held to that spacing): 8 ulps, since exp, log1p and a
weight are 3 roundings an element and the pairwise sum of a reduction at most
5 more. Entries the reference finds beyond the dtype's largest number must
come back infinite; non-finite entries must match exactly.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from typing import NamedTuple

import numpy as np
import torch

import crossentropy as ce

from . import CASES

__all__ = ["PATHS", "DTYPES", "KERNELS", "NUMPY_KERNELS", "TRITON_KERNELS", "triton_device", "accepts", "check", "compare", "expected",
           "tolerance", "ulp"]

PATHS = ("numpy", "numpy-core", "numpy-columns", "torch-core", "torch-kernel", "torch-rows", "torch-chunks", "linear", "triton",
         "triton-linear", "vocab-parallel")
DTYPES = ("float64", "float32", "bfloat16", "float16")
KERNELS = frozenset({"cross_entropy", "focal_loss", "binary_cross_entropy_with_logits", "sigmoid_focal_loss"})
NUMPY_KERNELS = frozenset({"cross_entropy", "focal_loss"})
TRITON_KERNELS = frozenset({"cross_entropy", "binary_cross_entropy_with_logits", "sigmoid_focal_loss"})
TRITON_TILE = 4  # columns a vocabulary tile on the triton path (elements, for the binary losses)
TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_BY_ID = {c.id: c for c in CASES}


TINY_ULPS = 8
# (bits of precision, smallest normal exponent) of each dtype
_FORMAT = {"float64": (53, -1022), "float32": (24, -126), "bfloat16": (8, -126), "float16": (11, -14)}


def tolerance(dtype, tiny=False):
    """The largest error allowed (relative to max(1, |expected|), or in ulps for ``tiny``)."""
    if tiny:
        return TINY_ULPS
    return {"float64": 1e-10, "float32": 2.0**-17, "bfloat16": 2 * 2.0**-8 + 2.0**-17,
            "float16": 2 * 2.0**-11 + 2.0**-17}[dtype]


def ulp(e, dtype):
    """The spacing of ``dtype``'s numbers at ``|e|`` (fixed below the normal range)."""
    bits, emin = _FORMAT[dtype]
    with np.errstate(divide="ignore"):
        exponent = np.floor(np.log2(np.abs(e)))
    return np.exp2(np.maximum(exponent, emin) - (bits - 1))


def _finite_inputs(case):
    args, kwargs = case.make()
    return all(np.all(np.isfinite(a)) for a in [*args, *kwargs.values()] if isinstance(a, np.ndarray))


def accepts(case, path, dtype) -> bool:
    if path == "numpy":
        return dtype != "bfloat16"  # NumPy has no bfloat16
    if path == "numpy-core":
        return dtype != "bfloat16" and case.fn in NUMPY_KERNELS
    if path == "numpy-columns":  # the kernels' dtypes (float16 runs the core, as on the numpy path)
        return dtype in ("float64", "float32") and case.fn in NUMPY_KERNELS
    if path == "torch-core":
        return True
    if path in ("torch-kernel", "torch-chunks"):
        return case.fn in KERNELS
    if path == "torch-rows":
        return case.fn == "cross_entropy"
    if path == "linear":
        return case.fn == "cross_entropy" and _finite_inputs(case)  # I @ inf would be NaN
    if path == "triton":
        return case.fn in TRITON_KERNELS and triton_device() is not None
    if path == "triton-linear":
        return accepts(case, "linear", dtype) and triton_device() is not None
    if path == "vocab-parallel":
        return case.fn == "cross_entropy" and "index" in case.tags
    raise ValueError(f"path={path!r} is not one of {PATHS}")


def _round(a, dtype):
    """A float64 NumPy array rounded to ``dtype`` and back (integers as they are)."""
    if not isinstance(a, np.ndarray) or not np.issubdtype(a.dtype, np.floating):
        return a
    return torch.from_numpy(a).to(TORCH_DTYPES[dtype]).double().numpy()


class Expected(NamedTuple):
    args: tuple  # float64 NumPy arguments, rounded to the dtype
    kwargs: dict
    value: np.ndarray
    grad: np.ndarray | None  # None for "value-only" cases
    grad_output: np.ndarray


def _quiet():
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore", UserWarning)  # kl_div's "mean" warning, tested on its own
    return ctx


@functools.lru_cache(maxsize=4096)
def _expected(case_id, dtype) -> Expected:
    case = _BY_ID[case_id]
    args, kwargs = case.make()
    args = tuple(_round(a, dtype) for a in args)
    kwargs = {k: _round(v, dtype) for k, v in kwargs.items()}
    targs = [torch.tensor(a, requires_grad=(i == 0)) if isinstance(a, np.ndarray) else a for i, a in enumerate(args)]
    tkw = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    ctx = _quiet()
    try:
        value = case.reference(*targs, **tkw)
    finally:
        ctx.__exit__(None, None, None)
    g = np.random.default_rng(1).uniform(0.5, 1.5, size=tuple(value.shape)) if value.dim() else np.array(1.3)
    g = _round(np.asarray(g), dtype)  # the path gets grad_output in the dtype: the reference uses that
    grad = None
    if "value-only" not in case.tags:
        (grad,) = torch.autograd.grad(value, targs[0], torch.as_tensor(g), allow_unused=True)
        grad = np.zeros(args[0].shape) if grad is None else grad.numpy()
    return Expected(args, kwargs, value.detach().numpy(), grad, np.asarray(g))


def expected(case, dtype) -> Expected:
    return _expected(case.id, dtype)


def to_dtype(a, dtype, kind):
    if not isinstance(a, np.ndarray):
        return a
    floating = np.issubdtype(a.dtype, np.floating)
    if kind == "numpy":
        return a.astype(dtype) if floating else a.copy()
    t = torch.from_numpy(a.copy())
    return t.to(TORCH_DTYPES[dtype]) if floating else t


def as_float64(a):
    if isinstance(a, torch.Tensor):
        return a.detach().double().numpy()
    return np.asarray(a, dtype=np.float64)


@contextlib.contextmanager
def _compiled_kernels(on):
    """The compiled CPU kernels on (as they are) or off, for the duration."""
    before = os.environ.get("CROSSENTROPY_CPU_KERNELS")
    if not on:
        os.environ["CROSSENTROPY_CPU_KERNELS"] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CROSSENTROPY_CPU_KERNELS", None)
        else:
            os.environ["CROSSENTROPY_CPU_KERNELS"] = before


@contextlib.contextmanager
def _few_classes_kernel(on):
    """Cross-entropy's few-classes kernel on (as it is) or off (the row kernel), for the duration."""
    from .._numpy import cross_entropy as driver

    before = driver.FEW_CLASSES
    if not on:
        driver.FEW_CLASSES = 0
    try:
        yield
    finally:
        driver.FEW_CLASSES = before


def _dtype_ok(value, grad, dtype):
    want = np.dtype(dtype) if not isinstance(value, torch.Tensor) else TORCH_DTYPES[dtype]
    return value.dtype == want and (grad is None or grad.dtype == want)


def run(case, path, dtype):
    """``(value, grad, dtypes_ok)`` of ``case`` through ``path`` (not vocab-parallel), grad for
    the expected grad_output, both as float64 NumPy arrays."""
    exp = expected(case, dtype)
    f = case.function
    kind = "numpy" if path.startswith("numpy") else "torch"
    args = [to_dtype(a, dtype, kind) for a in exp.args]
    kwargs = {k: to_dtype(v, dtype, kind) for k, v in exp.kwargs.items()}
    ctx = _quiet()
    try:
        if path == "numpy-columns":
            return _run_class_first(f, args, kwargs, exp, dtype)
        if path in ("numpy", "numpy-core"):
            with _compiled_kernels(path == "numpy"):
                value, grad = f.value_and_grad(*args, grad_output=exp.grad_output, **kwargs)
            return as_float64(value), as_float64(grad), _dtype_ok(value, grad, dtype)
        if path == "linear":
            return _run_linear(args, kwargs, exp, dtype)
        if path == "triton":
            return _run_triton(f, args, kwargs, exp, dtype)
        if path == "triton-linear":
            from .. import _triton

            with _triton.forced(block=TRITON_TILE):
                return _run_linear(args, kwargs, exp, dtype, triton_device())
        x = args[0].requires_grad_(True)
        with _compiled_kernels(path != "torch-chunks"), _few_classes_kernel(path != "torch-rows"):
            value = (f.reference if path == "torch-core" else f)(x, *args[1:], **kwargs)
        g = torch.as_tensor(exp.grad_output).to(value.dtype)
        (grad,) = torch.autograd.grad(value, x, g) if value.requires_grad else (torch.zeros_like(x),)
        ok = _dtype_ok(value, grad, dtype)
        if path == "torch-core":  # and the analytic gradient with no autograd
            v2, g2 = f.value_and_grad(x.detach(), *args[1:], grad_output=g, **kwargs)
            ok = ok and bool(error(as_float64(v2), as_float64(value)) == 0) and _dtype_ok(v2, g2, dtype)
            ok = ok and bool(error(as_float64(g2), as_float64(grad)) <= tolerance(dtype))
        return as_float64(value), as_float64(grad), ok
    finally:
        ctx.__exit__(None, None, None)


def _run_class_first(f, args, kwargs, exp, dtype):
    """``f.value_and_grad`` on the logits (and probability targets) with the
    class axis moved first, C-contiguous, and ``axis=0``."""
    x, t, *rest = args
    cd = (1 if x.ndim >= 2 else 0) if kwargs.get("axis") is None else kwargs["axis"] % x.ndim
    first = (lambda a: np.ascontiguousarray(np.moveaxis(a, cd, 0)))  # noqa: E731
    t = first(t) if t.shape == x.shape else t
    value, grad = f.value_and_grad(first(x), t, *rest, grad_output=exp.grad_output, **{**kwargs, "axis": 0})
    return as_float64(value), as_float64(np.moveaxis(grad, 0, cd)), _dtype_ok(value, grad, dtype)


def triton_device():
    """Where the triton path runs: "cuda" (compiled kernels), "cpu" (the
    interpreter), or None (triton is not installed, or compiled with no GPU)."""
    from .. import _triton

    if not _triton.available():
        return None
    if _triton.interpreting():
        return "cpu"
    return "cuda" if torch.cuda.is_available() else None


def _run_triton(f, args, kwargs, exp, dtype):
    from .. import _triton

    dev = triton_device()
    move = (lambda a: a.to(dev) if isinstance(a, torch.Tensor) else a)  # noqa: E731
    x = move(args[0]).requires_grad_(True)
    rest, kw = [move(a) for a in args[1:]], {k: move(v) for k, v in kwargs.items()}
    with _triton.forced(block=TRITON_TILE):
        value = f(x, *rest, **kw)
    g = torch.as_tensor(exp.grad_output).to(value.dtype).to(dev)
    (grad,) = torch.autograd.grad(value, x, g) if value.requires_grad else (torch.zeros_like(x),)
    return as_float64(value.cpu()), as_float64(grad.cpu()), _dtype_ok(value, grad, dtype)


def as_rows(x, t, kwargs):
    """Logits and targets as (rows, C) class-last, as linear and vocab-parallel take them."""
    cd = (1 if x.ndim >= 2 else 0) if kwargs.get("axis") is None else kwargs["axis"] % x.ndim
    moved = x.movedim(cd, -1)
    L = moved.reshape(-1, x.shape[cd])
    T = t.movedim(cd, -1).reshape(-1, x.shape[cd]) if t.is_floating_point() else t.reshape(-1)
    back = lambda G: G.reshape(moved.shape).movedim(-1, cd)  # noqa: E731
    return L, T, back


def _run_linear(args, kwargs, exp, dtype, device="cpu"):
    x, t = args
    kw = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items() if k != "axis"}
    L, T, back = as_rows(x, t, kwargs)
    L, T = L.to(device), T.to(device)
    W = L.T.contiguous().requires_grad_(True)
    eye = torch.eye(L.shape[0], dtype=L.dtype, device=device)
    value = ce.linear_cross_entropy(eye, W, T, **kw)
    g = torch.as_tensor(exp.grad_output).to(value.dtype).reshape(value.shape)
    if kw.get("reduction") == "none":
        value = value.reshape(exp.value.shape)
        g = g.reshape(value.shape)
    (gW,) = torch.autograd.grad(value, W, g.to(device)) if value.requires_grad else (torch.zeros_like(W),)
    grad, value = back(gW.T).cpu(), value.cpu()
    return as_float64(value), as_float64(grad), _dtype_ok(value, grad, dtype)


def error(actual, expected, tiny=False, dtype="float64"):
    """The largest error of ``actual`` (see the module docstring); inf where the
    non-finite entries do not match."""
    a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        return np.inf
    if dtype in ("bfloat16", "float16"):  # what the half type cannot hold comes back infinite
        top = float(torch.finfo(TORCH_DTYPES[dtype]).max)
        e = np.where(np.abs(e) > top * (1 + 2.0**-9), np.where(e > 0, np.inf, -np.inf), e)
    fin = np.isfinite(e)
    if not np.array_equal(np.isfinite(a), fin) or not np.array_equal(a[~fin], e[~fin], equal_nan=True):
        return np.inf
    if not fin.any():
        return 0.0
    if tiny:  # in ulps of the expected value
        return float((np.abs(a[fin] - e[fin]) / ulp(e[fin], dtype)).max(initial=0.0))
    scale = max(1.0, float(np.abs(e[fin]).max()))
    return float(np.abs(a[fin] - e[fin]).max() / scale)


class Result(NamedTuple):
    ok: bool
    value_error: float
    grad_error: float
    tolerance: float
    dtypes_ok: bool

    def __str__(self):
        return (f"value error {self.value_error:.3g}, gradient error {self.grad_error:.3g}, tolerance "
                f"{self.tolerance:.3g}" + ("" if self.dtypes_ok else ", wrong result dtype"))


def compare(case, dtype, value, grad, dtypes_ok=True) -> Result:
    exp = expected(case, dtype)
    tiny = "tiny" in case.tags
    tol = tolerance(dtype, tiny)
    ve = error(value, exp.value, tiny, dtype)
    ge = 0.0 if exp.grad is None else error(grad, exp.grad, False, dtype)
    gtol = tolerance(dtype)
    return Result(ve <= tol and ge <= gtol and dtypes_ok, ve, ge, tol, dtypes_ok)


def check(case, path, dtype) -> Result:
    """Run and compare."""
    return compare(case, dtype, *run(case, path, dtype))
