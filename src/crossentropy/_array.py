"""Array plumbing shared by every function: namespaces, the dtype policy, devices.

Every public function takes NumPy arrays, PyTorch tensors or any array of the
Python array API standard, and computes with the namespace ``xp`` that
``array_api_compat`` returns for its inputs, so one body of code serves all.

Dtype policy (tested in ``tests/test_backends.py``):

* float64 is computed in float64, float32 in float32;
* float16 and bfloat16 are computed in float32 and the result is cast back to
  the input's dtype;
* integer or boolean logits are refused with a ``TypeError``.
"""

from __future__ import annotations

import sys
from typing import Any

import array_api_compat
import numpy as np

__all__ = [
    "namespace",
    "is_torch",
    "compute_dtype",
    "to_compute",
    "as_array_like",
    "on_cpu",
    "to_float64_numpy",
    "stop_gradient",
    "is_jax",
    "index_dtype",
    "transformed",
    "transforms_active",
    "quiet",
    "masked",
    "lincomb",
    "dot",
    "affine",
    "device",
]


def is_jax(a: Any) -> bool:
    """``a`` is a JAX array or a JAX tracer (inside ``jit``, ``grad``, ``vmap``)."""
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(a, (jax.Array, jax.core.Tracer))


def _jax_tracing(a: Any) -> bool:
    """``a`` is a JAX tracer, or a JAX array used while a trace is active (a
    constant closed over by a jitted function: what is computed from it is
    traced)."""
    if not is_jax(a):
        return False
    if isinstance(a, sys.modules["jax"].core.Tracer):
        return True
    from jax._src import core  # no public spelling of "is a trace active"

    return not core.trace_state_clean()


def _kind(a: Any) -> str:
    """A short name for the kind of array ``a`` is, for error messages."""
    if is_torch(a):
        return "torch.Tensor"
    if is_jax(a):
        return "jax.Array"  # concrete or traced: one library
    if array_api_compat.is_numpy_array(a):
        return "numpy.ndarray"
    return type(a).__module__.split(".")[0] + "." + type(a).__name__


def namespace(**arrays: Any):
    """The array namespace shared by the named arrays (``None`` entries are skipped).

    Raises ``TypeError`` naming the arguments when they come from different
    libraries, for example a NumPy target with a torch input.
    """
    present = {k: v for k, v in arrays.items() if v is not None}
    torch = sys.modules.get("torch")
    if torch is not None and present and all(isinstance(v, torch.Tensor) for v in present.values()):
        return _torch_namespace()  # the common case, without array_api_compat's dispatch
    first_name, first = next(iter(present.items()))
    if not array_api_compat.is_array_api_obj(first):
        raise TypeError(
            f"{first_name} must be an array (NumPy, PyTorch or array API), "
            f"got {type(first).__name__}"
        )
    for name, a in present.items():
        if not array_api_compat.is_array_api_obj(a):
            raise TypeError(
                f"{name} must be an array of the same kind as {first_name} "
                f"({_kind(first)}), got {type(a).__name__}"
            )
        if _kind(a) != _kind(first):
            raise TypeError(
                f"{name} is a {_kind(a)} but {first_name} is a {_kind(first)}; "
                "pass arrays of one library"
            )
    return array_api_compat.array_namespace(*present.values())


_TORCH_NAMESPACE = []  # array-api-compat's torch namespace, once made (a plain list: see is_torch)


def _torch_namespace():
    if not _TORCH_NAMESPACE:
        import array_api_compat.torch  # what array_namespace returns for torch tensors

        _TORCH_NAMESPACE.append(array_api_compat.torch)
    return _TORCH_NAMESPACE[0]


def is_torch_namespace(xp) -> bool:
    """``xp`` is torch itself or array-api-compat's torch namespace."""
    return getattr(xp, "__name__", "") in ("torch", "array_api_compat.torch")


def is_torch(a: Any) -> bool:
    """``a`` is a torch tensor. A plain ``isinstance`` (torch is never imported
    here): array-api-compat's test goes through an ``lru_cache``, and
    ``torch.compile`` warns at each cached function it traces."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(a, torch.Tensor)


def transforms_active() -> bool:
    """Whether a ``torch.func`` transform or a forward-mode AD level is open
    (outside ``torch.compile``'s tracing): one global test, which a call
    makes before asking :func:`transformed` of each of its arguments (a
    fraction of a microsecond, where asking each tensor costs a few)."""
    torch = sys.modules.get("torch")
    if torch is None or torch.compiler.is_compiling():  # Dynamo traces the plain path (and cannot trace the test)
        return False
    return torch._C._are_functorch_transforms_active() or torch.autograd.forward_ad._current_level >= 0


def transformed(a: Any) -> bool:
    """True for a torch tensor inside a ``torch.func`` transform (``grad``,
    ``vmap``, ``jvp``, ...) or while a forward-mode AD level is open: no
    ``autograd.Function`` of ours and no data-dependent check applies there,
    and the core's differentiable operations run as they are."""
    if not is_torch(a) or not transforms_active():
        return False
    import torch

    return torch._C._functorch.is_functorch_wrapped_tensor(a) or torch.autograd.forward_ad._current_level >= 0


def on_cpu(a: Any) -> bool:
    """True when data-dependent checks cost no device synchronisation and
    break no graph: a CPU array, outside ``torch.compile`` tracing,
    ``torch.func`` transforms and JAX's tracing (``jit``, ``grad``, ``vmap``)."""
    if is_torch(a):
        import torch

        return a.device.type == "cpu" and not torch.compiler.is_compiling() and not transformed(a)
    if _jax_tracing(a):  # inside jax.jit, grad, vmap: no value to look at
        return False
    return True


def compute_dtype(xp, dtype, name: str):
    """The dtype ``name`` is computed in: float32 for half precision, else itself."""
    if not xp.isdtype(dtype, "real floating"):
        raise TypeError(
            f"{name} must have a real floating dtype, got {dtype}; "
            "cast it, for example with .float() or .astype(float)"
        )
    if dtype in (xp.float32, xp.float64):
        return dtype
    return xp.float32  # float16, bfloat16


def index_dtype(xp):
    """The namespace's integer dtype for indices: int64, or int32 for JAX
    without x64 (asking JAX for int64 there warns and truncates)."""
    info = getattr(xp, "__array_namespace_info__", None)
    return info().default_dtypes()["indexing"] if info is not None else xp.int64


def to_compute(xp, a, name: str):
    """``a`` cast to its compute dtype (a no-op for float32 and float64)."""
    dt = compute_dtype(xp, a.dtype, name)
    return a if a.dtype == dt else xp.astype(a, dt)


def as_array_like(xp, value, like, name: str, dtype=None):
    """``value`` as an array of ``xp`` on ``like``'s device.

    Python sequences and scalars are accepted for optional parameters such as
    ``weight``; arrays of another library are refused by :func:`namespace`.
    """
    if value is None:
        return None
    if is_torch(value) and is_torch(like):
        pass  # the common case, without array_api_compat's dispatch
    elif array_api_compat.is_array_api_obj(value):
        if _kind(value) != _kind(like):
            raise TypeError(
                f"{name} is a {_kind(value)} but input is a {_kind(like)}; "
                "pass arrays of one library"
            )
    else:
        try:
            value = xp.asarray(value, device=device(like))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be an array or a sequence of numbers, got {value!r}") from exc
    if dtype is not None and value.dtype != dtype:
        value = xp.astype(value, dtype)
    return value


def to_float64_numpy(a):
    """A float64 NumPy copy of any array, for finite differences and tests."""
    import numpy as np

    if is_torch(a):
        return a.detach().cpu().to(dtype=__import__("torch").float64).numpy()
    try:
        return np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        return np.from_dlpack(a).astype(np.float64)


def stop_gradient(a):
    """``a`` cut from autograd (torch); the identity for libraries without autograd.

    Used only where the gradient through ``a`` cancels exactly in the math, such
    as the max-shift of logsumexp, so that autograd does not do useless work.
    """
    return a.detach() if is_torch(a) else a


def lincomb(xp, a, wa, b, wb, sign=1):
    """``a * wa + sign * b * wb`` (``wa``/``wb`` arrays or None for 1), written
    over ``a`` when ``xp`` is torch: ``a`` must be a temporary its caller owns.
    The formulas of ``crossentropy.losses`` that combine terms elementwise use
    this, so that the torch kernels evaluate them without a fresh buffer per
    operation (on CPU a chunk-sized allocation costs as much as the operation)."""
    if is_torch_namespace(xp):
        out = a if wa is None else a.mul_(wa)
        return out.add_(b, alpha=sign) if wb is None else out.addcmul_(b, wb, value=sign)
    out = a if wa is None else a * wa
    return out + sign * (b if wb is None else b * wb)


def affine(xp, a, scale, offset):
    """``a * scale + offset`` (Python numbers), a fresh array; on torch one
    buffer, written in place."""
    if scale == 1:
        return a + offset
    if is_torch_namespace(xp):
        return (a * scale).add_(offset)
    return a * scale + offset


def dot(xp, a, b):
    """``sum(a * b)`` over every entry of two arrays of one shape; torch's
    ``dot`` for 1-d torch tensors, which forms no product array."""
    if is_torch_namespace(xp) and a.ndim == 1:
        return xp.dot(a, b)
    return xp.sum(a * b)


def masked(xp, keep, a):
    """``a`` where ``keep``, 0 elsewhere (whatever ``a`` holds there: inf,
    NaN), in ``a``'s dtype: ``xp.where(keep, a, xp.zeros_like(a))``, through
    NumPy's own ``where`` for NumPy arrays (half the array-API wrapper's
    microseconds, a part of a small call)."""
    if type(a) is np.ndarray:
        return np.where(keep, a, a.dtype.type(0))
    return xp.where(keep, a, xp.zeros_like(a))


def quiet():
    """NumPy's floating-point warnings off, as a context manager or decorator:
    the math produces inf and NaN deliberately where the result has them
    (log 0 = -inf for a row of -inf logits, or over an empty axis) and masks
    them where it does not."""
    import numpy

    return numpy.errstate(all="ignore")


def device(a):
    """The device ``a`` lives on, in its own library's terms."""
    return a.device if is_torch(a) else array_api_compat.device(a)
