"""kl_div and the divergences beyond the registry: the zeros of the target,
validation of the target, and the "mean" warning pointing at the caller."""

import warnings

import numpy as np
import pytest
import torch

import crossentropy as ce


@pytest.mark.parametrize("make", [np.array, torch.tensor], ids=["numpy", "torch"])
def test_log_target_of_minus_infinity_is_a_zero_term(make):
    """kl_div(log_target=True) gave NaN where the target's log-probability is
    -inf; the README promises 0 there (0 log 0 = 0), whatever the input."""
    x = make(np.log(np.array([[0.2, 0.3, 0.5], [0.5, 0.5, 1e-300]])))
    with np.errstate(divide="ignore"):
        p = np.array([[0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])
        logp = make(np.log(p))
    for reduction in ("none", "sum", "batchmean"):
        a = ce.kl_div(x, logp, reduction=reduction, log_target=True)
        b = ce.kl_div(x, make(p), reduction=reduction, log_target=False)
        assert np.all(np.isfinite(np.asarray(a))) and np.allclose(np.asarray(a), np.asarray(b), rtol=1e-14)
    _, g = ce.kl_div.value_and_grad(x, logp, reduction="sum", log_target=True)
    assert np.array_equal(np.asarray(g), -p)


@pytest.mark.parametrize("make", [np.array, torch.tensor], ids=["numpy", "torch"])
def test_the_target_is_validated(make):
    """A negative target gave +inf; NaN targets are refused too."""
    x = make(np.log(np.array([0.5, 0.5])))
    with pytest.raises(ValueError, match=r"target contains -0.5; probabilities must be >= 0"):
        ce.kl_div(x, make(np.array([-0.5, 1.5])))
    with pytest.raises(ValueError, match="target contains NaN"):
        ce.kl_div(x, make(np.array([np.nan, 0.5])))
    with pytest.raises(ValueError, match="target contains NaN"):
        ce.kl_div(x, make(np.array([np.nan, 0.5])), log_target=True)
    ce.kl_div(x, make(np.array([-0.5, 1.5])), reduction="sum", log_target=True)  # any real log-probability


@pytest.mark.parametrize("requires_grad", [False, True])
def test_mean_warning_points_at_the_caller(requires_grad):
    """The warning named a frame inside the library."""
    x = torch.log(torch.tensor([[0.5, 0.5]])).requires_grad_(requires_grad)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ce.kl_div(x, torch.tensor([[0.2, 0.8]]), reduction="mean")
        ce.kl_div.value_and_grad(x.detach().numpy(), np.array([[0.2, 0.8]]), reduction="mean")
    assert len(caught) == 2
    assert all(w.filename == __file__ and "batchmean" in str(w.message) for w in caught), \
        [(w.filename, w.lineno) for w in caught]
