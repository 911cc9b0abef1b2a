"""Every function against PyTorch in float64, on NumPy and on torch inputs:
the value, the analytic ``value_and_grad``, and torch autograd through ours."""

import numpy as np
import pytest
import torch

from cases import CASES, to_torch
from conftest import assert_close


def _grad_output(value_shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 1.5, size=value_shape) if value_shape else np.float64(1.3)


def _expected(case, args, kwargs):
    """The reference value and its gradient (torch autograd) for grad_output g."""
    targs = [to_torch(a, requires_grad=(i == 0)) for i, a in enumerate(args)]
    tkw = {k: to_torch(v) for k, v in kwargs.items()}
    value = case.reference(*targs, **tkw)
    g = _grad_output(tuple(value.shape))
    grad = None
    if "value-only" not in case.tags:
        (grad,) = torch.autograd.grad(value, targs[0], torch.as_tensor(g), allow_unused=True)
        grad = torch.zeros_like(targs[0]) if grad is None else grad
        grad = grad.numpy()
    return value.detach().numpy(), grad, g


@pytest.fixture(autouse=True)
def _kl_div_mean_warns(request):
    """kl_div(reduction="mean") warns, as PyTorch's does; PyTorch's own warning too."""
    case = request.node.callspec.params.get("case") if hasattr(request.node, "callspec") else None
    if case is not None and case.fn.__name__ == "kl_div" and case.make()[1]["reduction"] == "mean":
        with pytest.warns(UserWarning, match="batchmean"):
            yield
    else:
        yield


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_numpy_matches_torch(case):
    args, kwargs = case.make()
    value, grad, g = _expected(case, args, kwargs)
    ours = case.fn(*args, **kwargs)
    assert isinstance(ours, np.ndarray | np.floating)
    assert_close(ours, value, what="value")
    if grad is not None:
        v2, ours_grad = case.fn.value_and_grad(*args, grad_output=g, **kwargs)
        assert_close(v2, value, what="value_and_grad value")
        assert isinstance(ours_grad, np.ndarray | np.floating) and ours_grad.dtype == np.float64
        assert np.shape(ours_grad) == np.shape(args[0])
        assert_close(ours_grad, grad, what="gradient")


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_torch_matches_torch(case):
    args, kwargs = case.make()
    value, grad, g = _expected(case, args, kwargs)
    targs = [to_torch(a, requires_grad=(i == 0)) for i, a in enumerate(args)]
    tkw = {k: to_torch(v) for k, v in kwargs.items()}
    ours = case.fn(*targs, **tkw)
    assert isinstance(ours, torch.Tensor) and ours.dtype == torch.float64
    assert_close(ours.detach(), value, what="value")
    if grad is not None:
        (autograd,) = torch.autograd.grad(ours, targs[0], torch.as_tensor(g))
        assert_close(autograd, grad, what="autograd gradient")
        _, analytic = case.fn.value_and_grad(*targs, grad_output=torch.as_tensor(g), **tkw)
        assert isinstance(analytic, torch.Tensor)
        assert_close(analytic, grad, what="value_and_grad gradient")
