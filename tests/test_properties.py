"""Metamorphic properties: identities the math guarantees, over random inputs."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import crossentropy as ce
from conftest import assert_close


def _floats(lo=-8.0, hi=8.0):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


@st.composite
def classification(draw, min_classes=2, max_classes=7):
    """Logits (N, C), class indices, a probability target and class weights."""
    n = draw(st.integers(1, 6))
    c = draw(st.integers(min_classes, max_classes))
    x = draw(hnp.arrays(np.float64, (n, c), elements=_floats()))
    y = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    raw = draw(hnp.arrays(np.float64, (n, c), elements=st.floats(0.01, 1.0)))
    w = draw(hnp.arrays(np.float64, (c,), elements=st.floats(0.1, 3.0)))
    return x, y, raw / raw.sum(1, keepdims=True), w


@given(classification(), st.floats(0.0, 1.0), st.booleans())
def test_gradient_rows_sum_to_zero(data, eps, weighted):
    """sum_j (A p_j - a_j) = A - A = 0 whenever the target weights sum to A."""
    x, y, p, w = data
    kw = dict(label_smoothing=eps, weight=w if weighted else None, reduction="sum")
    for target in (y, p):
        _, g = ce.cross_entropy.value_and_grad(x, target, **kw)
        np.testing.assert_allclose(g.sum(axis=1), 0.0, atol=1e-12 * max(1.0, np.abs(g).max()))


@given(classification())
def test_cross_entropy_is_entropy_plus_kl(data):
    """H(p, q) = H(p) + KL(p || q), with q = softmax(x) given as log q."""
    x, _, p, _ = data
    q = ce.softmax(x)
    h_pq = ce.cross_entropy(np.log(q), p, reduction="none", axis=-1)
    assert_close(h_pq, ce.entropy(p) + ce.kl_divergence(p, q))


@given(classification(), st.floats(0.0, 0.5), st.booleans(), st.sampled_from(["none", "mean", "sum"]),
       st.sampled_from([-100, 0]))
def test_focal_with_gamma_zero_is_cross_entropy(data, eps, weighted, reduction, ignore_index):
    x, y, p, w = data
    kw = dict(label_smoothing=eps, weight=w if weighted else None, reduction=reduction)
    for target, ii in ((y, ignore_index), (p, -100)):
        v1, g1 = ce.focal_loss.value_and_grad(x, target, gamma=0.0, ignore_index=ii, **kw)
        v2, g2 = ce.cross_entropy.value_and_grad(x, target, ignore_index=ii, **kw)
        assert_close(v1, v2)
        assert_close(g1, g2)


@given(classification(), st.floats(0.0, 0.5), st.booleans(), st.sampled_from(["none", "sum"]))
def test_index_targets_equal_one_hot_targets(data, eps, weighted, reduction):
    """("mean" differs by design when weighted: PyTorch divides index targets by
    the target weights and probabilities by the row count.)"""
    x, y, _, w = data
    onehot = np.eye(x.shape[1])[y]
    kw = dict(label_smoothing=eps, weight=w if weighted else None, reduction=reduction)
    for f in (ce.cross_entropy, ce.focal_loss):
        v1, g1 = f.value_and_grad(x, y, **kw)
        v2, g2 = f.value_and_grad(x, onehot, **kw)
        assert_close(v1, v2)
        assert_close(g1, g2)


@given(st.integers(0, 3), st.sampled_from(["none", "mean", "sum"]), st.booleans())
def test_axis_equals_moving_the_axis(axis, reduction, probs):
    rng = np.random.default_rng(axis)
    x = rng.normal(size=(2, 3, 4, 5))
    C = x.shape[axis]
    moved = np.moveaxis(x, axis, 1)
    if probs:
        t = np.moveaxis(rng.dirichlet(np.ones(C), size=moved.shape[:1] + moved.shape[2:]), -1, 1)
        t_axis = np.moveaxis(t, 1, axis)
    else:
        t = rng.integers(0, C, size=moved.shape[:1] + moved.shape[2:])
        t_axis = t
    kw = dict(reduction=reduction, label_smoothing=0.1, z_loss=1e-3)
    v1, g1 = ce.cross_entropy.value_and_grad(x, t_axis, axis=axis, **kw)
    v2, g2 = ce.cross_entropy.value_and_grad(moved, t, **kw)
    assert_close(v1, v2)
    assert_close(g1, np.moveaxis(g2, 1, axis))


@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(2, 6)), elements=_floats()))
def test_softmax_jacobian_times_vector_is_the_vjp(x):
    v = np.random.default_rng(0).normal(size=x.shape)
    jac = ce.softmax_jacobian(x)
    p = ce.softmax(x)
    vjp = np.einsum("ni,nij->nj", v, jac)
    assert_close(vjp, p * (v - (v * p).sum(-1, keepdims=True)))
    tx = torch.tensor(x, requires_grad=True)
    (auto,) = torch.autograd.grad(torch.softmax(tx, -1), tx, torch.tensor(v))
    assert_close(vjp, auto)
    np.testing.assert_allclose(jac.sum(-1), 0.0, atol=1e-15)


@given(classification(min_classes=3), st.floats(0.0, 0.6))
def test_notes_label_smoothing_convention(data, e):
    """The notes put 1 - e on the true class and e / (K - 1) on the others;
    that is PyTorch's smoothing with e' = e K / (K - 1)."""
    x, y, _, _ = data
    K = x.shape[1]
    notes_target = np.full(x.shape, e / (K - 1))
    notes_target[np.arange(len(y)), y] = 1 - e
    v1, g1 = ce.cross_entropy.value_and_grad(x, notes_target)
    v2, g2 = ce.cross_entropy.value_and_grad(x, y, label_smoothing=e * K / (K - 1))
    assert_close(v1, v2)
    assert_close(g1, g2)


@given(hnp.arrays(np.float64, st.integers(1, 8), elements=_floats(-30, 30)),
       st.floats(0.0, 1.0), st.floats(0.2, 3.0))
def test_binary_losses_agree(x, t0, pw):
    """Logistic model = two-class softmax with logits (0, x); BCE on sigmoid(x)
    = BCE on logits; pos_weight 1 is no pos_weight."""
    t = np.full_like(x, t0)
    v = ce.binary_cross_entropy_with_logits(x, t, reduction="none")
    two = np.stack([np.zeros_like(x), x], axis=-1)
    assert_close(v, ce.cross_entropy(two, np.stack([1 - t, t], -1), reduction="none"))
    moderate = np.abs(x) < 15  # where sigmoid(x) keeps the precision BCE on probabilities needs
    assert_close(ce.binary_cross_entropy(ce.sigmoid(x[moderate]), t[moderate], reduction="none"),
                 v[moderate], rtol=1e-8)
    assert_close(ce.binary_cross_entropy_with_logits(x, t, pos_weight=np.ones(1)), v.mean())
    g_pw = ce.binary_cross_entropy_with_logits.value_and_grad(x, t, pos_weight=np.array([pw]))[1]
    g = ce.binary_cross_entropy_with_logits.value_and_grad(x, t, weight=1 + (pw - 1) * t)[1]
    if t0 in (0.0, 1.0):  # for hard targets pos_weight is a weight on the positives
        assert_close(g_pw, g)


@given(classification(), st.sampled_from(["none", "mean", "sum"]), st.booleans())
def test_nll_of_log_softmax_is_cross_entropy(data, reduction, weighted):
    x, y, _, w = data
    kw = dict(weight=w if weighted else None, reduction=reduction)
    assert_close(ce.nll_loss(ce.log_softmax(x), y, **kw), ce.cross_entropy(x, y, **kw))


@given(classification())
def test_kl_div_batchmean_is_mean_kl_divergence(data):
    x, _, p, _ = data
    logq = ce.log_softmax(x)
    assert_close(ce.kl_div(logq, p, reduction="batchmean"), ce.kl_divergence(p, np.exp(logq)).mean())
    assert_close(ce.kl_div(logq, np.log(p), reduction="sum", log_target=True),
                 ce.kl_div(logq, p, reduction="sum"))


@given(classification(), st.floats(0.0, 0.5))
def test_reductions_are_consistent(data, eps):
    x, y, _, w = data
    none = ce.cross_entropy(x, y, weight=w, reduction="none", label_smoothing=eps)
    assert_close(ce.cross_entropy(x, y, weight=w, reduction="sum", label_smoothing=eps), none.sum())
    assert_close(ce.cross_entropy(x, y, weight=w, reduction="mean", label_smoothing=eps), none.sum() / w[y].sum())


@pytest.mark.parametrize("f", [ce.cross_entropy, ce.focal_loss, ce.nll_loss])
def test_all_ignored_mean_is_zero_with_zero_gradient(f):
    """The one deliberate difference from PyTorch (which returns NaN)."""
    x = np.random.default_rng(0).normal(size=(3, 4))
    y = np.full(3, -100)
    v, g = f.value_and_grad(x, y)
    assert v == 0.0 and not np.any(g)
    tx = torch.tensor(x, requires_grad=True)
    f(tx, torch.tensor(y)).backward()
    assert not torch.any(tx.grad) and torch.isnan(torch.nn.functional.cross_entropy(tx, torch.tensor(y)))
