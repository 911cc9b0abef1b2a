"""Array kinds and dtypes: array-api-strict arrays, the half-precision policy,
and extreme inputs that must stay finite where the math is finite."""

import warnings

import array_api_strict as xps
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crossentropy as ce
from cases import CASES
from conftest import assert_close

# --------------------------------------------------------------------------
# array-api-strict: nothing NumPy-specific leaked into the core. One case in
# five of the registry keeps the run short while covering every function.
# --------------------------------------------------------------------------

STRICT_CASES = CASES[::5]


def _strict(a):
    return xps.asarray(a) if isinstance(a, np.ndarray) else a


@pytest.mark.parametrize("case", STRICT_CASES, ids=repr)
def test_array_api_strict_matches_numpy(case):
    args, kwargs = case.make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # kl_div's "mean" warning
        want_v, want_g = case.fn.value_and_grad(*args, **kwargs)
        sargs = [_strict(a) for a in args]
        skw = {k: _strict(v) for k, v in kwargs.items()}
        got = case.fn(*sargs, **skw)
        got_v, got_g = case.fn.value_and_grad(*sargs, **skw)
    assert type(got).__module__.startswith("array_api_strict")
    assert type(got_g).__module__.startswith("array_api_strict")
    assert_close(np.asarray(got), want_v, rtol=1e-13)
    assert_close(np.asarray(got_v), want_v, rtol=1e-13)
    if "value-only" not in case.tags:
        assert_close(np.asarray(got_g), want_g, rtol=1e-13)


def test_links_on_strict_arrays():
    x = np.random.default_rng(1).normal(size=(3, 5))
    for f in (ce.logsumexp, ce.softmax, ce.log_softmax, ce.sigmoid, ce.log_sigmoid, ce.softmax_jacobian):
        assert_close(np.asarray(f(xps.asarray(x))), f(x), rtol=1e-14)


# --------------------------------------------------------------------------
# Links against torch
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Dtype policy: half precision computed in float32, returned in its own dtype
# --------------------------------------------------------------------------

HALF = [torch.float16, torch.bfloat16]


def _half_cases():
    rng = np.random.default_rng(4)
    x = rng.normal(scale=2.0, size=(6, 5))
    y = rng.integers(0, 5, size=6)
    p = rng.dirichlet(np.ones(5), size=6)
    t = rng.random((6, 5))
    return [
        (ce.cross_entropy, (x, y), dict(label_smoothing=0.1, z_loss=1e-3, softcap=4.0)),
        (ce.cross_entropy, (x, p), {}),
        (ce.focal_loss, (x, y), dict(gamma=0.5)),
        (ce.nll_loss, (np.log(p), y), {}),
        (ce.binary_cross_entropy, (1 / (1 + np.exp(-x)), t), {}),
        (ce.binary_cross_entropy_with_logits, (x, t), {}),
        (ce.sigmoid_focal_loss, (x, t), dict(reduction="mean")),
        (ce.entropy, (p,), {}),
        (ce.kl_divergence, (p, rng.dirichlet(np.ones(5), size=6)), {}),
        (ce.js_divergence, (p, rng.dirichlet(np.ones(5), size=6)), {}),
        (ce.kl_div, (np.log(p), rng.dirichlet(np.ones(5), size=6)), dict(reduction="batchmean")),
    ]


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("f,args,kw", _half_cases(), ids=lambda v: getattr(v, "__name__", ""))
def test_half_precision_is_computed_in_float32(f, args, kw, dtype):
    """The result equals float32 arithmetic on the same rounded inputs, cast
    back: within one rounding of the half type (2^-8 for bfloat16, 2^-11 for
    float16, relative), and it comes back in the input's dtype."""
    half = [torch.tensor(a).to(dtype) if a.dtype.kind == "f" else torch.tensor(a) for a in args]
    as32 = [a.float() if a.is_floating_point() else a for a in half]
    half[0].requires_grad_(True)
    as32[0] = as32[0].detach().requires_grad_(True)
    v_half, v32 = f(*half, **kw), f(*as32, **kw)
    assert v_half.dtype == dtype
    tol = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11
    assert_close(v_half.float().detach(), v32.detach().to(dtype).float(), rtol=tol)
    g = torch.ones_like(v32)
    (g_half,) = torch.autograd.grad(v_half, half[0], g.to(dtype))
    (g32,) = torch.autograd.grad(v32, as32[0], g)
    assert g_half.dtype == dtype and torch.isfinite(g_half).all()
    assert_close(g_half.float(), g32.to(dtype).float(), rtol=tol)


def test_numpy_float16_and_float32_keep_their_dtype():
    x = np.random.default_rng(5).normal(size=(3, 4))
    y = np.array([0, 1, 2])
    for dt in (np.float16, np.float32):
        v, g = ce.cross_entropy.value_and_grad(x.astype(dt), y)
        assert v.dtype == dt and g.dtype == dt


def test_autocast_inputs():
    x = torch.randn(4, 6, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = x @ torch.eye(6)
        loss = ce.cross_entropy(logits, torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert torch.isfinite(x.grad).all()


# --------------------------------------------------------------------------
# Extremes: finite where the math is finite
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_huge_logits_stay_finite(dtype):
    big = 1e4  # the losses below stay under float16's 65504
    x = torch.tensor([[big, -big, 0.0], [-big, -big, big], [0.0, big, -big]], dtype=dtype)
    y = torch.tensor([1, 2, 0])
    p = torch.tensor([[0.2, 0.3, 0.5]] * 3, dtype=dtype)
    cases = [
        (ce.cross_entropy, (x, y), dict(label_smoothing=0.1, z_loss=1e-6)),
        (ce.cross_entropy, (x, y), dict(softcap=30.0)),
        (ce.cross_entropy, (x, p), {}),
        (ce.focal_loss, (x, y), dict(gamma=0.5)),
        (ce.focal_loss, (x, y), dict(gamma=2.0, label_smoothing=0.2)),
        (ce.binary_cross_entropy_with_logits, (x, p), dict(pos_weight=torch.tensor([2.0, 1.0, 0.5], dtype=dtype))),
        (ce.sigmoid_focal_loss, (x, p), dict(gamma=0.5)),
        (ce.sigmoid_focal_loss, (x, (p > 0.25).to(dtype)), dict(gamma=0.3, alpha=-1)),
    ]
    for f, args, kw in cases:
        a = args[0].clone().requires_grad_(True)
        v = f(a, *args[1:], **kw)
        v.sum().backward()
        assert torch.isfinite(v).all() and torch.isfinite(a.grad).all(), (f.__name__, kw)
        _, g = f.value_and_grad(args[0], *args[1:], **kw)
        assert torch.isfinite(g).all(), (f.__name__, kw)


def test_huge_logits_match_torch_float64():
    x = torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1, 2])
    ours = ce.cross_entropy(x, y, label_smoothing=0.1)
    (g1,) = torch.autograd.grad(ours, x)
    theirs = F.cross_entropy(x, y, label_smoothing=0.1)
    (g2,) = torch.autograd.grad(theirs, x)
    assert_close(ours.detach(), theirs.detach())
    assert_close(g1, g2)


def test_minus_infinity_beside_a_finite_target():
    """A -inf logit is a class of probability 0: fine as long as no target
    weight sits on it (the notes' 0 log 0 = 0)."""
    x = np.array([[-np.inf, 1.0, 2.0], [0.5, -np.inf, -np.inf]])
    y = np.array([2, 0])
    p = np.array([[0.0, 0.3, 0.7], [1.0, 0.0, 0.0]])
    for f, target, kw in ((ce.cross_entropy, y, {}), (ce.cross_entropy, p, {}),
                          (ce.cross_entropy, y, dict(z_loss=1e-2, weight=np.array([1.0, 2.0, 3.0]))),
                          (ce.focal_loss, y, dict(gamma=0.5)), (ce.focal_loss, p, {}),
                          (ce.nll_loss, y, {})):
        v, g = f.value_and_grad(x, target, **kw)
        assert np.isfinite(v) and np.isfinite(g).all(), (f.__name__, kw)
        assert np.all(g[np.isinf(x)] == 0)
        tx = torch.tensor(x, requires_grad=True)
        f(tx, torch.tensor(target), **{k: torch.tensor(w) if isinstance(w, np.ndarray) else w
                                       for k, w in kw.items()}).backward()
        assert torch.isfinite(tx.grad).all()
    ref = F.cross_entropy(torch.tensor(x), torch.tensor(y))
    assert_close(ce.cross_entropy(x, y), ref)
    # Label smoothing puts mass on the -inf class: the loss is +inf, truly.
    assert ce.cross_entropy(x, y, label_smoothing=0.1) == np.inf


def test_bce_on_saturated_probabilities_matches_torch():
    """PyTorch's guards are kept: log clamped at -100, gradient denominator
    floored at 1e-12 (so the gradient is large, not zero, at the clamp)."""
    p = torch.tensor([0.0, 1.0, 1e-50, 0.5], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    ours = ce.binary_cross_entropy(p, t, reduction="sum")
    (g1,) = torch.autograd.grad(ours, p)
    theirs = F.binary_cross_entropy(p, t, reduction="sum")
    (g2,) = torch.autograd.grad(theirs, p)
    assert_close(ours.detach(), theirs.detach())
    assert_close(g1, g2)
    assert ours.item() == pytest.approx(300 + np.log(2))


def test_sigmoid_focal_gamma_below_one_is_finite_where_torchvision_is_not():
    x = torch.tensor([40.0, -40.0, 800.0], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    ours = ce.sigmoid_focal_loss(x, t, gamma=0.5, reduction="sum")
    ours.backward()
    assert torch.isfinite(x.grad).all()
    y = x.detach().clone().requires_grad_(True)
    p = torch.sigmoid(y)
    ref = (F.binary_cross_entropy_with_logits(y, t, reduction="none") * (1 - (p * t + (1 - p) * (1 - t))) ** 0.5)
    (0.25 * ref).sum().backward()
    assert torch.isnan(y.grad).any()  # the formula's 0 ** -0.5 * 0 at saturation
