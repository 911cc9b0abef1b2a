"""One mechanism that gives every loss its ``value_and_grad`` and its autograd.

A loss is written once, as an *implementation* with the public signature plus
two keyword-only arguments::

    impl(input, ..., *, need_grad: bool, grad_output) -> (value, grad_input | None)

where ``grad_input`` is the analytic vector-Jacobian product of ``grad_output``
(ones shaped like the value when ``None``) with respect to ``input``, in
``input``'s dtype. :func:`analytic` turns it into

* the public function, which returns the value; on a torch tensor that
  requires grad it runs through :class:`_AnalyticFunction`, whose backward is
  the same analytic formula (recomputed from the saved input, so no
  logits-sized buffer is held between forward and backward);
* ``public.value_and_grad(*args, grad_output=None, **kwargs)``, the same
  formula with no autograd, for NumPy users and every other array library.

A loss with a hand-written torch kernel (``crossentropy._torch``) passes it as
``torch_path``; torch inputs go there first, and the kernel declines
(``NotImplemented``) the cases it does not cover, such as probability targets.

When an argument other than ``input`` requires grad (soft targets being
trained, say) the implementation simply runs under torch's autograd, which
differentiates the same expression; it is written with differentiable
operations only.
"""

from __future__ import annotations

import functools
import inspect
import warnings

from ._array import is_torch

__all__ = ["analytic"]


def analytic(impl, torch_path=None):
    """Decorator: the public function whose signature and docstring it wraps,
    computed by ``impl`` (see the module docstring). ``torch_path(**arguments)``,
    when given, is tried first for torch inputs: a fused kernel that returns
    the value, or ``NotImplemented`` where it does not apply."""

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

        @functools.wraps(public)
        def function(*args, **kwargs):
            arguments = bind(args, kwargs)
            first, *others = arguments.values()
            if torch_path is not None and is_torch(first) and not any(map(_requires_grad, others)):
                value = torch_path(**arguments)
                if value is not NotImplemented:
                    return value
            if _requires_grad(first) and not any(map(_requires_grad, others)) and _grad_enabled():
                return _torch_apply(impl, arguments)
            value, _ = impl(**arguments, need_grad=False, grad_output=None)
            return value

        def value_and_grad(*args, grad_output=None, **kwargs):
            arguments = bind(args, kwargs)
            if any(map(_requires_grad, arguments.values())):
                import torch

                with torch.no_grad():  # analytic: nothing for autograd to record
                    return impl(**arguments, need_grad=True, grad_output=grad_output)
            return impl(**arguments, need_grad=True, grad_output=grad_output)

        value_and_grad.__doc__ = (
            f"``{public.__name__}`` and its analytic gradient with respect to its first "
            "argument, with no autograd: returns ``(value, grad_input)``, where "
            "``grad_input`` is the vector-Jacobian product of ``grad_output`` (ones "
            "shaped like the value when None) and has the first argument's shape and dtype."
        )
        function.value_and_grad = value_and_grad
        return function

    return decorate


def _requires_grad(a) -> bool:
    return bool(getattr(a, "requires_grad", False))


def _grad_enabled() -> bool:
    import torch

    return torch.is_grad_enabled()


def _torch_apply(impl, arguments):
    names = list(arguments)
    first = arguments[names[0]]
    rest = {k: arguments[k] for k in names[1:]}
    return _function_class().apply(first, impl, rest)


@functools.cache
def _function_class():
    import torch
    from torch.autograd.function import once_differentiable

    class _AnalyticFunction(torch.autograd.Function):
        """Forward: the value. Backward: the analytic VJP, recomputed from the input."""

        @staticmethod
        def forward(ctx, input, impl, rest):
            value, _ = impl(input, **rest, need_grad=False, grad_output=None)
            ctx.save_for_backward(input)
            ctx.impl, ctx.rest = impl, rest
            return value

        @staticmethod
        @once_differentiable
        def backward(ctx, grad_output):
            (input,) = ctx.saved_tensors
            with warnings.catch_warnings():  # the forward already said whatever it had to
                warnings.simplefilter("ignore")
                _, grad = ctx.impl(input, **ctx.rest, need_grad=True, grad_output=grad_output)
            return grad, None, None  # input, impl, rest

    return _AnalyticFunction
