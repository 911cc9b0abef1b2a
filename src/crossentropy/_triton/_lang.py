"""The few functions the kernels need that Triton's language lacks, or that
its interpreter lacks: ``tanh`` (the soft cap), ``log1p`` (the logistic
pieces), ``pow`` (the focal factor), ``dot`` (bfloat16 operands, see there), and a
bfloat16 store rounded to nearest.

Compiled for the GPU they are libdevice's (CUDA's correctly rounded-to-a-few-
ulps ``tanh``, ``log1p`` and ``pow``). Under the interpreter, which has no libdevice,
they are built from ``exp`` and ``log`` (NumPy's there, accurate to an ulp)
with Kahan's compensations, accurate to a few ulps in float32 and float64:

* ``expm1(a) = (e - 1) a / log(e)`` with ``e = exp(a)`` (``a`` where ``e``
  rounds to 1): the ratio ``a / log(e)`` undoes the rounding of ``e``;
* ``log1p(a) = log(u) a / (u - 1)`` with ``u = 1 + a`` (``a`` where ``u`` is 1);
* ``tanh(u) = sign(u) (-expm1(-2|u|)) / (2 + expm1(-2|u|))``, no cancellation;
* ``pow(q, g) = exp(g log q)`` (the focal factor ``(1 - p_t)^γ``).

The interpreter's float32 -> bfloat16 conversion truncates; on the GPU it
rounds to nearest even. :func:`store_bf16_rne` rounds to nearest even by hand
(the usual bias of 0x7FFF plus the lowest kept bit), so both give the same bits.
"""

import triton
import triton.language as tl

from .. import _triton

INTERPRET = _triton.interpreting()

if not INTERPRET:
    from triton.language.extra import libdevice

    # wrapped, so that Triton maps libdevice's stubs to the backend's functions
    # (it does so for attributes of the libdevice module named in a kernel)
    @triton.jit
    def tanh(u):
        return libdevice.tanh(u)

    @triton.jit
    def log1p(a):
        return libdevice.log1p(a)

    @triton.jit
    def pow(q, g):
        return libdevice.pow(q, g)

    @triton.jit
    def dot(a, b, acc, PREC: tl.constexpr, ACC: tl.constexpr):
        return tl.dot(a, b, acc, input_precision=PREC, out_dtype=ACC)
else:

    @triton.jit
    def _expm1_neg(a):
        """expm1(a) for a <= 0 (Kahan)."""
        e = tl.exp(a)
        safe = tl.where((e == 1.0) | (e == 0.0), 0.5, e)
        out = (safe - 1.0) * a / tl.log(safe)
        out = tl.where(e == 1.0, a, out)
        return tl.where(e == 0.0, -1.0, out)

    @triton.jit
    def tanh(u):
        em = _expm1_neg(-2.0 * tl.abs(u))  # in (-1, 0]
        t = -em / (2.0 + em)  # tanh |u|
        return tl.where(u < 0, -t, t)

    @triton.jit
    def log1p(a):
        u = 1.0 + a
        safe = tl.where((u == 1.0) | (u <= 0.0), 2.0, u)
        out = tl.log(safe) * a / (safe - 1.0)
        out = tl.where(u == 1.0, a, out)
        return tl.where(u <= 0.0, tl.log(u), out)  # -inf at -1 (NaN below, as log1p)

    @triton.jit
    def pow(q, g):
        """q^g for q >= 0, g > 0 (0 at q = 0)."""
        return tl.exp(g * tl.log(q))

    @triton.jit
    def dot(a, b, acc, PREC: tl.constexpr, ACC: tl.constexpr):
        """tl.dot; the interpreter multiplies bfloat16 operands as their bit
        patterns (integers), so they are widened to float32 first: exactly
        what the GPU's bfloat16 products with float32 accumulation compute."""
        if a.dtype == tl.bfloat16:
            return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee", out_dtype=ACC)
        else:
            return tl.dot(a, b, acc, input_precision=PREC, out_dtype=ACC)


@triton.jit
def to_bf16_rne(v):
    """float32 -> bfloat16, rounded to nearest even (NaN kept NaN)."""
    bits = v.to(tl.uint32, bitcast=True)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    rounded = tl.where(v != v, (bits >> 16) | 0x40, rounded)  # a NaN stays a (quiet) NaN
    return rounded.to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def cast_out(v, OUT: tl.constexpr):
    """``v`` (float32 or float64) in the output dtype ``OUT``."""
    if OUT == tl.bfloat16:
        return to_bf16_rne(v.to(tl.float32))
    else:
        return v.to(OUT)


def launch(kernel, grid, *args, num_warps=8, **constants):
    """``kernel[grid](*args, **constants)``; under the interpreter with NumPy's
    floating-point warnings off (it evaluates both sides of every ``where``,
    as the GPU does silently), and on the GPU with ``num_warps`` and the
    compile option that Triton 3.9 otherwise warns it will change
    (``enable_fp_fusion``)."""
    if INTERPRET:
        import numpy as np

        with np.errstate(all="ignore"):
            return kernel[grid](*args, **constants)
    return kernel[grid](*args, **constants, num_warps=num_warps, enable_fp_fusion=True)
