"""Autograd plumbing, in one place: how every loss gets ``value_and_grad`` and
a torch backward.

Two ways of giving torch a gradient, both analytic:

* :func:`analytic` wraps a loss written once as a *core*, a function with the
  public signature plus two keyword-only arguments::

      core(input, ..., *, need_grad: bool, grad_output) -> (value, grad_input | None)

  where ``grad_input`` is the vector-Jacobian product of ``grad_output`` (ones
  shaped like the value when ``None``) with respect to ``input``, in
  ``input``'s dtype. It gives the public function, whose torch backward
  (:class:`_Analytic`) recomputes the core from the saved input (no
  input-sized buffer is held between forward and backward), and
  ``public.value_and_grad(...)``, the same core with no autograd, for NumPy
  and every other array library. A ``kernel(**arguments)`` for torch tensors
  is tried first; it returns the value, or ``NotImplemented`` where it does
  not apply. An ``array_kernel(**arguments, need_grad=..., grad_output=...)``
  for NumPy arrays (the compiled CPU kernels) is tried first in the same way
  by the public function and ``value_and_grad``, and returns what the core
  does; ``public.reference`` never calls either kernel.
* :func:`kept_gradient` is what the kernels use: their forward computes the
  loss and its gradient for a unit ``grad_output`` in the same pass, keeps the
  gradient, and the backward only multiplies it by ``grad_output``
  (:func:`scale_kept_gradient`).

With ``create_graph=True`` (double backward, Hessians, gradient penalties)
both backwards recompute the gradient from the core's differentiable
operations under autograd (:func:`differentiable_vjp`), so that it can be
differentiated again; the kept-gradient path needs the kernel to say how
(``reference``; the vocab-parallel ones record differentiable collectives,
``crossentropy._torch.distributed``), and raises where it does not
(``inplace_backward``) instead of returning a silently constant gradient.
Otherwise the backward is the cheap analytic one.

Inside ``torch.func`` transforms (and forward-mode AD) the public function
runs the core's differentiable operations, with no Function of ours; on JAX
arrays it is a ``jax.custom_vjp`` around the core (:func:`_jax_call`).

When an argument other than ``input`` requires grad (soft targets being
trained, say) the core simply runs under torch's autograd, which
differentiates the same expression: cores use differentiable operations only.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import warnings

import sys

import numpy as _np

from ._array import is_jax, is_torch, transformed, transforms_active
from ._array import quiet as _numpy_quiet

__all__ = ["analytic", "kept_gradient", "scale_kept_gradient"]

# Rows of a half-precision gradient scaled at a time (about 2 MiB of float32).
_HALF_CHUNK_BYTES = 1 << 21


def analytic(core, kernel=None, array_kernel=None):
    """Decorator: the public function whose signature and docstring it wraps,
    computed by ``core`` (see the module docstring); ``kernel(**arguments)``,
    when given, is tried first for torch inputs, ``array_kernel`` for NumPy
    ones."""

    def decorate(public):
        sig = inspect.signature(public)
        params = sig.parameters.values()
        positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
        defaults = {p.name: p.default for p in params if p.default is not p.empty}

        def bind(args, kwargs):
            # The common call, in a few dict operations; anything unusual goes
            # through inspect for its error message.
            if len(args) <= len(positional) and not kwargs.keys() - defaults.keys() - set(positional[len(args):]):
                arguments = {**defaults, **dict(zip(positional, args)), **kwargs}
                if len(arguments) == len(sig.parameters):
                    return {name: arguments[name] for name in sig.parameters}
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            return bound.arguments

        def call(args, kwargs, use_kernel):
            arguments = bind(args, kwargs)
            first, *others = arguments.values()
            if is_jax(first):
                return _jax_call(core, public.__name__, arguments)
            if transforms_active() and (transformed(first) or any(map(transformed, others))):
                # torch.func transforms and forward-mode AD: through the core's
                # differentiable operations, which they transform themselves
                value, _ = core(**arguments, need_grad=False, grad_output=None)
                return value
            if use_kernel and kernel is not None and is_torch(first) and not any(map(_requires_grad, others)):
                value = kernel(**arguments)
                if value is not NotImplemented:
                    return value
            if _requires_grad(first) and not any(map(_requires_grad, others)) and _grad_enabled():
                names = list(arguments)
                rest = {k: arguments[k] for k in names[1:]}
                return function_classes()[0].apply(first, core, rest, public.__name__)
            with _quiet_for(first):
                if use_kernel:
                    done = _on_array_kernel(arguments, first, False, None)
                    if done is not NotImplemented:
                        return done[0]
                value, _ = core(**arguments, need_grad=False, grad_output=None)
            return value

        def _on_array_kernel(arguments, first, need_grad, grad_output):
            if array_kernel is None or type(first) is not _np.ndarray:
                return NotImplemented
            return array_kernel(**arguments, need_grad=need_grad, grad_output=grad_output)

        @functools.wraps(public)
        def function(*args, **kwargs):
            return call(args, kwargs, True)

        def reference(*args, **kwargs):
            return call(args, kwargs, False)

        def value_and_grad(*args, grad_output=None, **kwargs):
            arguments = bind(args, kwargs)
            if any(map(_requires_grad, arguments.values())):
                import torch

                with torch.no_grad():  # analytic: nothing for autograd to record
                    return core(**arguments, need_grad=True, grad_output=grad_output)
            first = arguments[positional[0]] if positional else None
            with _quiet_for(first):
                done = _on_array_kernel(arguments, first, True, grad_output)
                if done is not NotImplemented:
                    return done
                return core(**arguments, need_grad=True, grad_output=grad_output)

        value_and_grad.__doc__ = (
            f"``{public.__name__}`` and its analytic gradient with respect to its first "
            "argument, with no autograd: returns ``(value, grad_input)``, where "
            "``grad_input`` is the vector-Jacobian product of ``grad_output`` (ones "
            "shaped like the value when None) and has the first argument's shape and dtype."
        )
        reference.__doc__ = (
            f"``{public.__name__}`` through the array-API core only, never a kernel: on torch "
            "tensors autograd runs through the core's analytic backward. The oracle every "
            "kernel is tested against (``crossentropy.cases``)."
        )
        function.value_and_grad = value_and_grad
        function.reference = reference
        return function

    return decorate


def _jax_call(core, name, arguments):
    """A loss of JAX arrays, differentiable by JAX with this library's
    analytic gradient: ``jax.custom_vjp`` around the core, whose backward is
    ``core(..., need_grad=True, grad_output=g)``, not autodiff through it.
    The first argument is differentiated; the other arrays (targets,
    weights) are passed through with a zero cotangent, the rest are static."""
    import jax

    names = list(arguments)
    arrays = [k for k in names[1:] if is_jax(arguments[k])]
    static = {k: arguments[k] for k in names[1:] if k not in arrays}

    def value_of(x, *others):
        return core(x, **static, **dict(zip(arrays, others)), need_grad=False, grad_output=None)[0]

    @jax.custom_vjp
    def loss(x, *others):
        return value_of(x, *others)

    def forward(x, *others):
        return value_of(x, *others), (x, others)

    def backward(saved, g):
        x, others = saved
        _, grad = core(x, **static, **dict(zip(arrays, others)), need_grad=True, grad_output=g)
        return (grad, *(None for _ in others))  # None: a zero cotangent

    loss.defvjp(forward, backward)
    loss.__name__ = name
    return loss(arguments[names[0]], *(arguments[k] for k in arrays))


def kept_gradient(compute, x, grad_output_axis=None, name="loss", reference=None):
    """``compute(need_grad) -> (value, grad | None, extras)``, differentiable with
    respect to ``x`` through the gradient it builds for a unit ``grad_output``.

    ``grad_output_axis``: where a per-row ``grad_output`` (``reduction="none"``)
    is unsqueezed to broadcast against the gradient (``None`` when they have
    the same shape). ``extras`` are non-differentiable outputs (statistics).
    ``reference(x) -> value``: the same value from the core's differentiable
    operations, which a backward with ``create_graph=True`` records (double
    backward); without it such a backward raises. Returns ``(value, extras)``.
    """
    import torch

    if torch.is_grad_enabled() and x.requires_grad:
        out = function_classes()[1].apply(x, compute, grad_output_axis, name, reference)
        return (out, ()) if isinstance(out, torch.Tensor) else (out[0], tuple(out[1:]))
    value, _, extras = compute(False)
    return value, tuple(extras)


def scale_kept_gradient(grad, g):
    """``grad * g`` for a backward that multiplies the gradient kept from the
    forward pass. In place when this backward is the graph's last use (no
    ``retain_graph``), so that no second input-sized buffer ever exists; out
    of place when the graph is kept for another backward (``retain_graph=True``,
    ``gradcheck``) or while tracing under ``torch.compile``."""
    import torch

    keep = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    if keep is None or torch.compiler.is_compiling() or keep():
        return (grad * g).to(grad.dtype)
    if grad.device.type == "cpu":  # CUDA tensors never come here: no host sync
        if g.dim() == 0 and g.item() == 1.0:
            return grad  # ``loss.backward()``: nothing to scale (reading a CPU value costs nothing)
        if grad.dtype in (torch.bfloat16, torch.float16) and grad.dim() > 0:
            return _scale_half_in_chunks_(grad, g)
    return grad.mul_(g)


def _scale_half_in_chunks_(grad, g):
    """``grad.mul_(g)`` for a half-precision CPU tensor, through float32
    chunks: torch's CPU multiply of a bfloat16 tensor, by a per-row factor
    above all, is slower than a conversion to float32 and back (the
    scaled-loss table of ``benchmarks/bench_cross_entropy.py``)."""
    g = g.expand_as(grad)  # a view: no copy
    step = max(1, _HALF_CHUNK_BYTES // (4 * max(1, math.prod(grad.shape[1:]))))
    for r0 in range(0, grad.shape[0], step):
        chunk = grad[r0:r0 + step]
        chunk.copy_(chunk.float().mul_(g[r0:r0 + step]))
    return grad


def _core_value(core, rest, input):
    return core(input, **rest, need_grad=False, grad_output=None)[0]


def differentiable_vjp(reference, x, grad_output):
    """The gradient of ``reference(x)`` (the core's differentiable operations)
    against ``grad_output``, recorded for another differentiation: what a
    backward with ``create_graph=True`` returns, so that Hessians, gradient
    penalties and ``gradgradcheck`` see the true second derivatives. ``x``: a
    tensor, or a tuple of them (None entries get None) for ``reference(*x)``."""
    import torch

    many = isinstance(x, tuple)
    xs = x if many else (x,)
    live = [a for a in xs if a is not None and a.requires_grad]
    with torch.enable_grad(), _silenced():  # the forward already warned
        value = reference(*xs)
        grad_output = grad_output.reshape(value.shape)  # a kernel's rows may be shaped (1,) for a 0-d value
        grads = iter(torch.autograd.grad(value, live, grad_output, create_graph=True, allow_unused=True))
    # None for what needs no gradient; zeros where the value does not depend on an input
    out = tuple(None if a is None or not a.requires_grad else
                (g if (g := next(grads)) is not None else torch.zeros_like(a)) for a in xs)
    return out if many else out[0]


def refuse_double_backward(grads, anchor, name):
    """With ``create_graph=True`` the returned gradients carry a node that
    raises when differentiated (double backward is not written yet); otherwise
    they are returned as they are."""
    import torch

    if not torch.is_grad_enabled():
        return grads
    refuse = function_classes()[2]
    return tuple(None if g is None else refuse.apply(g, anchor, name) for g in grads)


@contextlib.contextmanager
def _silenced():
    """Warnings off (a backward recomputing what its forward already warned
    about); while ``torch.compile`` traces, nothing: changing the warning
    filters is a side effect it cannot put in a graph."""
    import torch

    if torch.compiler.is_compiling():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _quiet_for(a):
    """NumPy's floating-point warnings off around a core call on non-torch
    arrays (``_array.quiet``); nothing for torch tensors, where NumPy is not
    involved and ``torch.compile`` cannot trace ``numpy.errstate``."""
    return contextlib.nullcontext() if is_torch(a) else _numpy_quiet()


def _requires_grad(a) -> bool:
    return bool(getattr(a, "requires_grad", False))


def _grad_enabled() -> bool:
    import torch

    return torch.is_grad_enabled()


def _compute_dtype(dtype):
    import torch

    return torch.promote_types(dtype, torch.float32)


def _cotangent(ctx, grad, grad_output):
    """``grad_output`` in the compute dtype of the kept gradient ``grad``,
    unsqueezed at ``ctx.grad_output_axis`` to broadcast against it."""
    import torch

    same = grad_output.dtype == grad.dtype and grad.dtype in (torch.float32, torch.float64)
    g = grad_output if same else grad_output.to(_compute_dtype(grad.dtype))
    return g.unsqueeze(ctx.grad_output_axis) if g.dim() and ctx.grad_output_axis is not None else g


_CLASSES = None


def function_classes():
    """The torch Function classes, made on first use (``import crossentropy``
    does not import torch). A plain global, so that ``torch.compile`` sees a
    constant here and never traces the class statements."""
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _makefunction_classes()
    return _CLASSES


def _makefunction_classes():
    import torch

    class _Analytic(torch.autograd.Function):
        """Forward: the value. Backward: the analytic VJP, recomputed from the input."""

        @staticmethod
        def forward(ctx, input, core, rest, name):
            value, _ = core(input, **rest, need_grad=False, grad_output=None)
            ctx.save_for_backward(input)
            ctx.core, ctx.rest, ctx.name = core, rest, name
            return value

        @staticmethod
        def backward(ctx, grad_output):
            (input,) = ctx.saved_tensors
            if torch.is_grad_enabled():  # create_graph=True: a gradient that is itself differentiable
                reference = functools.partial(_core_value, ctx.core, ctx.rest)
                return differentiable_vjp(reference, input, grad_output), None, None, None
            with torch.no_grad(), _silenced():  # the forward already warned
                _, grad = ctx.core(input, **ctx.rest, need_grad=True, grad_output=grad_output.detach())
            return grad, None, None, None  # input, core, rest, name

    class _Kept(torch.autograd.Function):
        """Forward: value and unit gradient in one pass. Backward: the kept gradient times grad_output."""

        @staticmethod
        def forward(ctx, x, compute, grad_output_axis, name, reference):
            value, grad, extras = compute(True)
            ctx.grad_output_axis, ctx.name, ctx.reference = grad_output_axis, name, reference
            ctx.save_for_backward(grad, x)
            if extras:
                ctx.mark_non_differentiable(*extras)
                return (value, *extras)
            return value

        @staticmethod
        def backward(ctx, grad_output, *unused_extras_grads):
            grad, x = ctx.saved_tensors
            if not torch.is_grad_enabled():  # the common backward (no create_graph): nothing to detach or refuse
                return scale_kept_gradient(grad, _cotangent(ctx, grad, grad_output)), None, None, None, None
            if ctx.reference is not None:  # create_graph=True
                return differentiable_vjp(ctx.reference, x, grad_output), None, None, None, None
            with torch.no_grad():
                out = scale_kept_gradient(grad, _cotangent(ctx, grad, grad_output.detach()))
            return (*refuse_double_backward((out,), x, ctx.name), None, None, None, None)  # x, compute, axis, name, ref

    class _RefuseDoubleBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, grad, anchor, name):
            ctx.name = name
            return grad.view_as(grad)  # the same memory, now with a node of its own

        @staticmethod
        def backward(ctx, *grad_outputs):
            raise RuntimeError(
                f"crossentropy: the gradient of {ctx.name} is not differentiable here (inplace_backward "
                "overwrote the logits a second derivative needs); differentiating it would "
                "silently give zeros, so it is refused. Use torch.nn.functional's loss for second "
                "derivatives."
            )

    return _Analytic, _Kept, _RefuseDoubleBackward


if "torch" in sys.modules:  # torch is already loaded: make the classes now (see function_classes)
    function_classes()
