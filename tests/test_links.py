"""The links (logsumexp, softmax, log-softmax, sigmoid, log-sigmoid, the softmax
Jacobian) against torch, on array-api-strict arrays, and at the edges."""

import array_api_strict as xps
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crossentropy as ce
from conftest import assert_close

def test_links_on_strict_arrays():
    x = np.random.default_rng(1).normal(size=(3, 5))
    for f in (ce.logsumexp, ce.softmax, ce.log_softmax, ce.sigmoid, ce.log_sigmoid, ce.softmax_jacobian):
        assert_close(np.asarray(f(xps.asarray(x))), f(x), rtol=1e-14)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_links_match_torch(axis):
    x = np.random.default_rng(2).normal(scale=5.0, size=(3, 4, 5))
    t = torch.tensor(x)
    assert_close(ce.logsumexp(x, axis=axis), torch.logsumexp(t, axis))
    assert_close(ce.logsumexp(x, axis=axis, keepdims=True), torch.logsumexp(t, axis, keepdim=True))
    assert_close(ce.softmax(x, axis=axis), torch.softmax(t, axis))
    assert_close(ce.log_softmax(x, axis=axis), torch.log_softmax(t, axis))
    assert_close(ce.sigmoid(x), torch.sigmoid(t))
    assert_close(ce.log_sigmoid(x), F.logsigmoid(t))
    jac = torch.func.vmap(torch.func.jacrev(lambda r: torch.softmax(r, -1)))(t.movedim(axis, -1).reshape(-1, t.shape[axis]))
    assert_close(ce.softmax_jacobian(x, axis=axis).reshape(jac.shape), jac)


def test_links_autograd_matches_torch():
    x = np.random.default_rng(3).normal(scale=3.0, size=(4, 6))
    x[0, 0] = 0.0  # the derivative of the where-based |x| at 0
    for ours, theirs in ((ce.logsumexp, lambda a: torch.logsumexp(a, -1)), (ce.softmax, lambda a: torch.softmax(a, -1)),
                         (ce.log_softmax, lambda a: torch.log_softmax(a, -1)), (ce.sigmoid, torch.sigmoid),
                         (ce.log_sigmoid, F.logsigmoid)):
        a = torch.tensor(x, requires_grad=True)
        b = torch.tensor(x, requires_grad=True)
        g = torch.rand_like(theirs(b))
        (ga,) = torch.autograd.grad(ours(a), a, g)
        (gb,) = torch.autograd.grad(theirs(b), b, g)
        assert_close(ga, gb)


def test_axis_none_reduces_every_axis_on_numpy_and_torch():
    """Regression: logsumexp(t, axis=None) on a torch tensor raised TypeError."""
    x = np.random.default_rng(4).normal(size=(3, 4, 2))
    t = torch.tensor(x)
    want = torch.logsumexp(t.reshape(-1), 0)
    assert_close(ce.logsumexp(t, axis=None), want)
    assert_close(ce.logsumexp(x, axis=None), want)
    assert ce.logsumexp(t, axis=None, keepdims=True).shape == (1, 1, 1)
    assert_close(ce.softmax(t, axis=None), torch.softmax(t.reshape(-1), 0).reshape(t.shape))
    assert_close(ce.log_softmax(x, axis=None), torch.log_softmax(t.reshape(-1), 0).reshape(t.shape))
    assert float(ce.logsumexp(np.array(2.0), axis=None)) == 2.0
    with pytest.raises(ValueError, match="axis=None: softmax_jacobian needs the one axis"):
        ce.softmax_jacobian(x, axis=None)
    with pytest.raises(ValueError, match="axis=-1 is out of range for a 0-d x"):
        ce.softmax(np.array(1.0))


@pytest.mark.parametrize("make", [np.zeros, torch.zeros], ids=["numpy", "torch"])
def test_an_empty_axis_gives_what_torch_gives(make):
    """Regression: softmax, log_softmax, logsumexp and softmax_jacobian over an
    empty axis raised the backend's error, naming no argument. Torch: the
    log of an empty sum is -inf, the softmax of nothing is empty."""
    x = make((3, 0))
    t = torch.zeros(3, 0, dtype=torch.float64)
    assert_close(ce.logsumexp(x, axis=1), torch.logsumexp(t, 1))
    assert np.all(np.asarray(ce.logsumexp(x, axis=1)) == -np.inf)
    assert ce.softmax(x, axis=1).shape == ce.log_softmax(x, axis=1).shape == (3, 0)
    assert ce.softmax_jacobian(x, axis=1).shape == (3, 0, 0)
    assert ce.softmax(x, axis=0).shape == (3, 0) and ce.logsumexp(x, axis=0).shape == (0,)


def test_log_softmax_keeps_float32_precision_at_logits_of_1e4():
    """Relative to the row maximum: x - LSE would carry LSE's rounding, about
    1e-3 at 1e4 in float32, into a log-probability of -log 2."""
    x = torch.tensor([[1e4, 1e4, -1e4]], dtype=torch.float32)
    got = ce.log_softmax(x, axis=-1)
    want = torch.log_softmax(x.double(), -1)
    assert abs(got[0, 0].item() - want[0, 0].item()) <= 2 * 2.0**-24 * abs(want[0, 0].item())
