r"""Bit-level pieces of the compiled kernels: reinterpreting a float32 as its
int32 bits and back (one LLVM ``bitcast``, which vectorises), bfloat16 and
float16 to and from float32, and an exponential that vectorises.

Why an exponential of our own: numba's LLVM has no vector math library, so
``math.exp`` stays a scalar libm call per element, slower than torch's eager
kernel. ``exp_nonpositive`` is Cephes' ``expf``: ``e^d = 2^n e^r`` with ``n =
round(d log2 e)`` and ``r = d - n ln 2`` (``ln 2`` split in two so that
``n * LN2_HI`` is exact), ``e^r`` a degree-7 polynomial on ``|r| <= ln2/2``,
and ``2^n`` put in by adding ``n`` to the exponent bits. It is exact to about
1 ulp for ``-87.3 <= d <= 0`` (``tests/test_cpu_kernels.py`` measures it
against float64 over that whole range); outside it (a subnormal result, a
positive or non-finite argument) the result is wrong, and the kernels detect
those elements and recompute them with ``math.exp``.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

LOG2E = 1.4426950408889634
LN2_HI = 0.693359375  # few significant bits: n * LN2_HI is exact for |n| < 2^15
LN2_LO = -2.12194440e-4
# the smallest d whose e^d is a normal float32 (2^-126 = e^-87.336...)
NORMAL_LO = -87.33654


def _bitcast(source, target, llvm_target, doc):
    """An intrinsic reinterpreting a ``source`` scalar's bits as ``target``
    (one LLVM ``bitcast``, which vectorises; numba has no scalar view)."""
    def cast(typingctx, x):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], llvm_target)
        return target(source), codegen

    cast.__doc__ = doc
    return intrinsic(cast)


f32_bits = _bitcast(types.float32, types.int32, ir.IntType(32), "The int32 whose bits are the float32 ``x``.")
bits_f32 = _bitcast(types.int32, types.float32, ir.FloatType(), "The float32 whose bits are the int32 ``x``.")
f64_bits = _bitcast(types.float64, types.int64, ir.IntType(64), "The int64 whose bits are the float64 ``x``.")
bits_f64 = _bitcast(types.int64, types.float64, ir.DoubleType(), "The float64 whose bits are the int64 ``x``.")


def row_max(xr):
    raise NotImplementedError


@overload(row_max)
def _row_max_impl(xr):
    """The maximum of a 1-d float32 or float64 array, NaN if it holds one
    (and -inf if empty), through integer keys: flipping the magnitude bits of
    negative numbers makes the bits of floats ordered as signed integers, and
    an integer maximum vectorises where a float one (NaN-aware) does not."""
    if xr.dtype == types.float32:
        def f32(xr):
            k = np.int32(-2147483647)  # below the key of -inf
            for c in range(xr.shape[0]):
                b = f32_bits(xr[c])
                k = max(k, b ^ ((b >> np.int32(31)) & np.int32(0x7FFFFFFF)))
            return bits_f32(k ^ ((k >> np.int32(31)) & np.int32(0x7FFFFFFF))) if xr.shape[0] else -np.float32(np.inf)
        return f32

    def f64(xr):
        k = np.int64(-9223372036854775807)
        for c in range(xr.shape[0]):
            b = f64_bits(xr[c])
            k = max(k, b ^ ((b >> np.int64(63)) & np.int64(0x7FFFFFFFFFFFFFFF)))
        return bits_f64(k ^ ((k >> np.int64(63)) & np.int64(0x7FFFFFFFFFFFFFFF))) if xr.shape[0] else -np.inf
    return f64


def row_min_max(xr):
    raise NotImplementedError


@overload(row_min_max)
def _row_min_max_impl(xr):
    """``(min, max)`` of a non-empty 1-d float32 or float64 array in one pass,
    through the same integer keys as :func:`row_max`: a NaN with its sign bit
    clear is the largest key and one with it set the smallest, so that a row
    holding any NaN has a NaN minimum or maximum (which every range test
    that compares them then fails)."""
    if xr.dtype == types.float32:
        def f32(xr):
            hi = np.int32(-2147483647)
            lo = np.int32(2147483647)
            for c in range(xr.shape[0]):
                b = f32_bits(xr[c])
                k = b ^ ((b >> np.int32(31)) & np.int32(0x7FFFFFFF))
                hi = max(hi, k)
                lo = min(lo, k)
            return (bits_f32(lo ^ ((lo >> np.int32(31)) & np.int32(0x7FFFFFFF))),
                    bits_f32(hi ^ ((hi >> np.int32(31)) & np.int32(0x7FFFFFFF))))
        return f32

    def f64(xr):
        hi = np.int64(-9223372036854775807)
        lo = np.int64(9223372036854775807)
        for c in range(xr.shape[0]):
            b = f64_bits(xr[c])
            k = b ^ ((b >> np.int64(63)) & np.int64(0x7FFFFFFFFFFFFFFF))
            hi = max(hi, k)
            lo = min(lo, k)
        return (bits_f64(lo ^ ((lo >> np.int64(63)) & np.int64(0x7FFFFFFFFFFFFFFF))),
                bits_f64(hi ^ ((hi >> np.int64(63)) & np.int64(0x7FFFFFFFFFFFFFFF))))
    return f64


@njit(inline="always")
def first_argmax(a):
    """The index of the first maximum of a 1-d array (NaN never wins: a
    comparison with it is false), as ``argmax`` counts a hit."""
    best = 0
    for c in range(a.shape[0]):
        if a[c] > a[best]:
            best = c
    return best


@njit(inline="always")
def bf16_to_f32(h):
    """A bfloat16 (its uint16 bits) as float32: the high half of the bits."""
    return bits_f32(np.int32(h) << np.int32(16))


@njit(inline="always")
def f32_to_bf16(f):
    """float32 to bfloat16 bits, rounded to nearest even (NaN stays NaN)."""
    b = f32_bits(f)
    if f != f:
        return np.uint16((b >> np.int32(16)) | np.int32(0x40))
    return np.uint16((b + np.int32(0x7FFF) + ((b >> np.int32(16)) & np.int32(1))) >> np.int32(16))


@njit(inline="always")
def f16_to_f32(h):
    """A float16 (its bits, as int16) as float32, exactly: the sign, exponent
    and mantissa bits moved 13 places up are a float32 ``2^-112`` times the
    value (subnormals included: the float32 they make is subnormal), so one
    multiplication by ``2^112`` rescales them; infinities and NaN (exponent
    bits all ones) get float32's all-ones exponent instead."""
    b = np.int32(h) & np.int32(0xFFFF)
    mag = (b & np.int32(0x7FFF)) << np.int32(13)
    special = (b & np.int32(0x7C00)) == np.int32(0x7C00)
    f = bits_f32(mag | np.int32(0x7F800000)) if special else bits_f32(mag) * np.float32(5.192296858534828e33)  # 2^112
    return bits_f32(f32_bits(f) | ((b & np.int32(0x8000)) << np.int32(16)))


@njit(inline="always")
def f32_to_f16(f):
    """float32 to float16 bits (as int16), rounded to nearest even, as torch
    rounds: overflow to infinity, NaN stays NaN, results below float16's
    normal range rounded onto its subnormal grid by one float32 addition
    (adding ``2^-1`` rounds the magnitude to a multiple of ``2^-24``, the
    subnormal step, in the FPU's own round-to-nearest-even)."""
    b = f32_bits(f)
    sign = (b >> np.int32(16)) & np.int32(0x8000)
    a = b & np.int32(0x7FFFFFFF)
    if a >= np.int32(0x477FF000):  # |f| rounds to 65520 or more: infinity, or NaN
        o = np.int32(0x7E00) if a > np.int32(0x7F800000) else np.int32(0x7C00)
    elif a < np.int32(0x38800000):  # below 2^-14: the subnormal grid
        o = f32_bits(bits_f32(a) + np.float32(0.5)) - np.int32(0x3F000000)
    else:  # rebias the exponent (127 -> 15) and round the 13 dropped bits to nearest even
        o = (a - np.int32(0x38000000) + np.int32(0xFFF) + ((a >> np.int32(13)) & np.int32(1))) >> np.int32(13)
    return np.int16(o | sign)


def load(a, i):
    raise NotImplementedError


@overload(load)
def _load_impl(a, i):
    """``a[i]`` as a float: bfloat16 bits (uint16) and float16 bits (int16)
    converted to float32, float32 and float64 as they are."""
    if a.dtype == types.uint16:
        return lambda a, i: bf16_to_f32(a[i])
    if a.dtype == types.int16:
        return lambda a, i: f16_to_f32(a[i])
    return lambda a, i: a[i]


def store(a, i, val):
    raise NotImplementedError


@overload(store)
def _store_impl(a, i, val):
    """``a[i] = val`` in ``a``'s dtype (into bfloat16 and float16 bits rounded
    to nearest even)."""
    if a.dtype == types.uint16:
        def bf16(a, i, val):
            a[i] = f32_to_bf16(np.float32(val))
        return bf16
    if a.dtype == types.int16:
        def f16(a, i, val):
            a[i] = f32_to_f16(np.float32(val))
        return f16

    def plain(a, i, val):
        a[i] = val
    return plain


@njit(inline="always")
def exp_nonpositive(d):
    """``e^d`` in float32 for ``NORMAL_LO <= d <= 0`` (see the module docstring);
    any float32 ``d`` gives a finite number (garbage outside that range)."""
    d = np.float32(min(max(d, np.float32(-100.0)), np.float32(0.0)))  # n a small integer for any input
    n = np.float32(int(d * np.float32(LOG2E) + np.float32(0.5) + np.float32(200.0)) - 200)  # round, via floor
    r = d - n * np.float32(LN2_HI) - n * np.float32(LN2_LO)
    z = r * r
    p = ((((((np.float32(1.9875691500e-4) * r + np.float32(1.3981999507e-3)) * r + np.float32(8.3334519073e-3)) * r
            + np.float32(4.1665795894e-2)) * r + np.float32(1.6666665459e-1)) * r + np.float32(5.0000001201e-1)) * z
         + r + np.float32(1.0))
    return bits_f32(f32_bits(p) + (np.int32(n) << np.int32(23)))


def _exp_any(d):  # a Python body for the overload below
    raise NotImplementedError


@overload(_exp_any)
def _exp_any_impl(d):
    if d == types.float32:
        return lambda d: exp_nonpositive(d)
    from ._exp64 import exp_nonpositive64  # float64: the polynomial of its own module

    return lambda d: exp_nonpositive64(d)


def _in_range(d):
    raise NotImplementedError


@overload(_in_range)
def _in_range_impl(d):
    if d == types.float32:
        return lambda d: d >= NORMAL_LO and d <= 0
    from ._exp64 import NORMAL_LO as NORMAL_LO64

    return lambda d: d >= NORMAL_LO64 and d <= 0


exp_fast = _exp_any  # e^d for d <= 0: a polynomial in float32 (above) and in float64 (._exp64)
exp_fast_ok = _in_range  # whether exp_fast(d) is right (else recompute with math.exp)
