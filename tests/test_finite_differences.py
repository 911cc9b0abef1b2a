"""Every ``value_and_grad`` against float64 central differences (``check_grad``)."""

import warnings

import numpy as np
import pytest

import crossentropy as ce
from crossentropy.cases import CASES

# Finite differences cost four evaluations per input entry; the 1-D to 5-D
# grid is covered by test_reference against autograd, so here every case with
# up to 48 input entries runs (every function and option, 2-D and 3-D shapes).
FD_CASES = [c for c in CASES if not c.tags & {"value-only", "extreme"} and np.size(c.make()[0][0]) <= 48]


@pytest.mark.parametrize("case", FD_CASES, ids=repr)
def test_value_and_grad_matches_finite_differences(case):
    args, kwargs = case.make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # kl_div's "mean" warning
        result = ce.check_grad(case.function, *args, **kwargs)
    # 4th-order differences at h = 1e-4 |x| are exact to about 1e-12 here
    # (rounding in F(x +- 2h) dominates); 1e-8 leaves a wide margin and still
    # catches any wrong term (test_check_grad_reports_a_wrong_gradient).
    assert result.max_rel_error < 1e-8, result


def test_check_grad_reports_a_wrong_gradient():
    """The checker itself can fail: a deliberately wrong gradient is caught."""

    def f(x):
        return ce.cross_entropy(x, np.array([1]), reduction="sum")

    def wrong(x, grad_output=None):
        v, g = ce.cross_entropy.value_and_grad(x, np.array([1]), reduction="sum", grad_output=grad_output)
        return v, g * 1.01

    f.value_and_grad = wrong
    r = ce.check_grad(f, np.array([[0.3, -1.0, 2.0]]))
    assert r.max_abs_error > 1e-3
    assert r.analytic.shape == r.numeric.shape == (1, 3)


def test_check_grad_accepts_torch_arguments():
    torch = pytest.importorskip("torch")
    r = ce.check_grad(ce.cross_entropy, torch.randn(3, 5), torch.tensor([0, 4, 2]), label_smoothing=0.1)
    assert r.max_rel_error < 1e-8
