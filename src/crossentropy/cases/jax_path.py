"""Running a case on JAX arrays, eagerly or under ``jax.jit``, against its
float64 PyTorch reference.

The value is the public function's on ``jax.numpy`` arrays; the gradient is
``jax.grad`` of the value weighed by the case's ``grad_output``, which JAX
takes from this library's analytic backward (a ``jax.custom_vjp`` around the
core, ``crossentropy._autograd``), not from autodiff through it. float32
runs in JAX's default 32-bit mode (integer targets become int32), float64
with ``jax.enable_x64``. The tolerances are the other paths'
(:mod:`crossentropy.cases.paths`).
"""

from __future__ import annotations

import numpy as np

from .paths import Result, compare, expected

__all__ = ["DTYPES", "accepts", "check", "run"]

DTYPES = ("float64", "float32")


def accepts(case, dtype) -> bool:
    return dtype in DTYPES


def _to_jax(a, dtype):
    import jax.numpy as jnp

    if not isinstance(a, np.ndarray):
        return a
    return jnp.asarray(a, dtype=dtype) if np.issubdtype(a.dtype, np.floating) else jnp.asarray(a)


def run(case, dtype, jit=False):
    """``(value, grad, dtypes_ok)`` as float64 NumPy arrays (grad None for
    ``value-only`` cases)."""
    import jax
    import jax.numpy as jnp

    exp = expected(case, dtype)
    with jax.enable_x64(dtype == "float64"):
        jdt = jnp.dtype(dtype)
        x, *rest = (_to_jax(a, jdt) for a in exp.args)
        kwargs = {k: _to_jax(v, jdt) for k, v in exp.kwargs.items()}
        g = jnp.asarray(exp.grad_output, dtype=jdt)
        f = case.function

        def value(z):
            return f(z, *rest, **kwargs)

        def weighed(z):
            return jnp.sum(value(z) * g)

        if jit:
            value, weighed = jax.jit(value), jax.jit(weighed)
        out = value(x)
        grad = None if exp.grad is None else (jax.jit(jax.grad(weighed)) if jit else jax.grad(weighed))(x)
        ok = out.dtype == jdt and (grad is None or grad.dtype == jdt)
        as64 = (lambda a: None if a is None else np.asarray(a, dtype=np.float64))
        return as64(out), as64(grad), ok


def check(case, dtype, jit=False) -> Result:
    value, grad, ok = run(case, dtype, jit)
    return compare(case, dtype, value, grad, ok)
