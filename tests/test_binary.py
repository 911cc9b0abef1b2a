"""The binary losses: binary cross-entropy from probabilities and from
logits, and the sigmoid focal loss, at the precision the math allows, on
every path and chunk by chunk. (Every registry case runs through every path
in test_registry.py.)"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crossentropy as ce
from conftest import assert_close
from test_cross_entropy import _compiled_agrees


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


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_torch_compile_fullgraph_binary_kernels(monkeypatch):
    from crossentropy._torch import binary as elementwise

    monkeypatch.setattr(elementwise, "_CHUNK_ELEMS", 7)  # eager walks 8 chunks; compile traces one
    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(6, 9, generator=g) * 3, torch.rand(6, 9, generator=g)
    pw = torch.rand(9, generator=g) * 2

    def f(a):
        return (ce.binary_cross_entropy_with_logits(a, t, pos_weight=pw)
                + ce.sigmoid_focal_loss(a, t, gamma=0.5, reduction="sum"))

    _compiled_agrees(f, x)


_BINARY_LAYOUTS = [
    # (shape, weight shape, pos_weight shape): everything full-shaped (walked
    # flat), and factors that broadcast (walked along the first dimension).
    ((7, 5, 3), (7, 5, 3), (7, 5, 3)),
    ((7, 5, 3), (3,), (5, 1)),
    ((1, 9, 4), (9, 1), (4,)),
    ((11,), (), None),
]


@pytest.mark.parametrize("chunk", [1, 4, 1 << 20])
@pytest.mark.parametrize("layout", _BINARY_LAYOUTS, ids=lambda s: str(s))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
def test_binary_kernels_in_chunks_match_torch(monkeypatch, chunk, layout, reduction, dtype):
    from crossentropy._torch import binary as elementwise
    from crossentropy.cases.references import sigmoid_focal_loss as ref_sigmoid_focal_loss

    monkeypatch.setattr(elementwise, "_CHUNK_ELEMS", chunk)
    shape, wshape, pwshape = layout
    g = torch.Generator().manual_seed(len(shape) + chunk)
    x64 = torch.randn(shape, generator=g, dtype=torch.float64) * 4
    t = torch.rand(shape, generator=g, dtype=torch.float64)
    w = torch.rand(wshape, generator=g, dtype=torch.float64) + 0.5
    pw = None if pwshape is None else torch.rand(pwshape, generator=g, dtype=torch.float64) * 3
    x64 = x64.to(dtype).double()  # the same rounded inputs for ours and the float64 reference
    # float64 agrees to rounding; bfloat16 is computed in float32 and rounded once to bfloat16
    tol = dict(rtol=1e-12 if dtype == torch.float64 else 2.0**-8)
    gout = torch.rand(shape, generator=g, dtype=torch.float64) + 0.5 if reduction == "none" else None
    for ours_f, ref_f, kw in (
        (ce.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits,
         dict(weight=w, pos_weight=pw, reduction=reduction)),
        (ce.sigmoid_focal_loss, ref_sigmoid_focal_loss, dict(alpha=0.3, gamma=1.5, reduction=reduction)),
    ):
        a = x64.to(dtype).clone().requires_grad_(True)
        r = x64.clone().requires_grad_(True)
        ours, ref = ours_f(a, t.to(dtype), **kw), ref_f(r, t.to(dtype).double(), **kw)
        assert ours.dtype == dtype and ours.shape == ref.shape
        (ours.backward if gout is None else lambda: ours.backward(gout.to(dtype)))()
        (ref.backward if gout is None else lambda: ref.backward(gout))()
        assert_close(ours.detach().double(), ref.detach(), **tol)
        assert_close(a.grad.double(), r.grad, **tol)


# ----------------------------------------------------------------------------
# Regressions: each failed before the kernel used the core's formulas.
# ----------------------------------------------------------------------------


def _exact_bce(x, t):
    """t softplus(-x) + (1 - t) softplus(x) in float64, with logaddexp (exact)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    t = torch.as_tensor(t, dtype=torch.float64)
    z = torch.zeros_like(x)
    return t * torch.logaddexp(-x, z) + (1 - t) * torch.logaddexp(x, z)


@pytest.mark.parametrize("sign", [1, -1], ids=["t=1,x>0", "t=0,x<0"])
def test_confident_logits_keep_their_tiny_loss_in_float32(sign):
    """x = [20, 21, 19.5, 15], t = 1 gave [0, 0, 0, 0] (torch: [2.06e-09,
    7.58e-10, 3.40e-09, 3.06e-07]); the mean and sum paths computed
    sum(x) - x.t - sum(log_sigmoid(x)), which cancels. Now every path is within
    4 float32 ulps of the exact value, also for t = 0, x << 0 (where torch's
    own formula cancels)."""
    x = sign * torch.tensor([20.0, 21.0, 19.5, 15.0])
    t = (x > 0).float()
    want = _exact_bce(x, t)
    for reduction, expect in (("none", want), ("sum", want.sum()), ("mean", want.mean())):
        for f in (ce.binary_cross_entropy_with_logits, ce.binary_cross_entropy_with_logits.reference):
            got = f(x.clone().requires_grad_(True), t, reduction=reduction).detach().double()
            assert torch.all((got - expect).abs() <= 4 * 2.0**-24 * expect.abs()), (reduction, got, expect)
    if sign > 0:  # torch is exact here too
        torch_none = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        assert torch.all((torch_none.double() - want).abs() <= 4 * 2.0**-24 * want)


def test_confident_mean_of_many_and_a_weight():
    """x = 20 + randn(100000), t = 1 gave a mean of 2.50e-06 (torch 3.41e-09), and 0 with weight=2."""
    x = 20 + torch.randn(100000, generator=torch.Generator().manual_seed(0))
    t = torch.ones_like(x)
    want = _exact_bce(x, t).mean().item()
    for weight in (None, 2.0):
        got = ce.binary_cross_entropy_with_logits(x.clone().requires_grad_(True), t,
                                                  weight=None if weight is None else torch.tensor(weight))
        scale = 1 if weight is None else weight
        assert abs(got.item() - scale * want) <= 1e-5 * scale * want


def test_float64_huge_negative_and_tiny_logits():
    """x = [-1e9, -1e-9], t = [0, 1] gave 0.3465735912322998 (exact 0.34657359052997266)."""
    x, t = torch.tensor([-1e9, -1e-9], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    for f in (ce.binary_cross_entropy_with_logits, ce.binary_cross_entropy_with_logits.reference):
        assert f(x.clone().requires_grad_(True), t).item() == pytest.approx(0.34657359052997266, rel=1e-15)
    assert ce.binary_cross_entropy_with_logits(x.numpy(), t.numpy()) == pytest.approx(0.34657359052997266, rel=1e-15)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_infinite_logits_give_the_limits_on_every_path(dtype):
    """The torch paths gave NaN at +-inf logits where the NumPy path was right,
    and the NumPy path returned -0."""
    x = torch.tensor([np.inf, -np.inf, np.inf, -np.inf, 0.0], dtype=dtype)
    t = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0], dtype=dtype)
    want_bce = torch.tensor([0.0, 0.0, np.inf, np.inf, np.log(2)], dtype=torch.float64).to(dtype).double()
    want_grad = torch.tensor([0.0, 0.0, 1.0, -1.0, -0.5], dtype=torch.float64)
    focal = torch.tensor([0.0, 0.0, np.inf, np.inf, 0.25 * np.log(2)], dtype=torch.float64).to(dtype).double()
    for f, kw, want in ((ce.binary_cross_entropy_with_logits, {}, want_bce),
                        (ce.sigmoid_focal_loss, dict(alpha=-1.0, gamma=2.0), focal)):
        for path in (f, f.reference):
            a = x.clone().requires_grad_(True)
            loss = path(a, t, reduction="none", **kw)
            (grad,) = torch.autograd.grad(loss.sum(), a)
            assert torch.equal(loss.double(), want), (f.__name__, loss)
            assert torch.isfinite(grad).all() and not torch.signbit(loss).any()
            if f is ce.binary_cross_entropy_with_logits:
                assert torch.equal(grad.double(), want_grad)
        v, g = f.value_and_grad(x.double().numpy(), t.double().numpy(), reduction="none", **kw)
        assert not np.signbit(v).any() and np.all(np.isfinite(g))


@pytest.mark.parametrize("f", [ce.binary_cross_entropy, ce.binary_cross_entropy_with_logits,
                               ce.sigmoid_focal_loss], ids=lambda f: f.__name__)
@pytest.mark.parametrize("target", [[0.1, 5.0], [-0.5, 0.5], [np.nan, 0.5]], ids=["5", "-0.5", "nan"])
def test_targets_outside_0_1_are_refused(f, target):
    """binary_cross_entropy([.3, .8], [.1, 5.]) gave -2.44 (torch raises). The
    binary losses on logits refuse such targets too (torch returns negative
    losses): a deliberate difference, in the README."""
    p = np.array([0.3, 0.8])
    for make in (np.array, torch.tensor):
        with pytest.raises(ValueError, match=r"targets? contains .*; probabilities must be (numbers )?in \[0, 1"):
            f(make(p), make(np.array(target)))


@pytest.mark.parametrize("f", [ce.binary_cross_entropy_with_logits, ce.sigmoid_focal_loss], ids=lambda f: f.__name__)
@pytest.mark.parametrize("logits", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("bad", [1.5, -0.25, np.nan, 1 + 1e-12, -1e-300],
                         ids=["1.5", "-0.25", "nan", "1+1e-12", "-tiny"])
def test_compiled_kernel_counts_bad_targets_as_it_reads_them(f, logits, bad):
    """The compiled CPU kernels check the target's values as they read them
    (no torch pass before, for a target in the compute dtype): one bad value in the last of many blocks,
    in every target dtype that holds it, is refused with the value named, as
    the chunked path refuses it; a float64 value that rounds into [0, 1] in
    float32 (1 + 1e-12, -1e-300) is refused too."""
    from crossentropy._torch import binary_cpu

    n = 3 * 4096 + 7  # several blocks of the kernel
    x = torch.randn(n, dtype=torch.float64).to(logits)
    assert binary_cpu.applies(x)
    for tdtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
        t = torch.rand(n, dtype=torch.float64)
        t[n - 2] = bad
        t = t.to(tdtype)
        if not (t[n - 2].isnan() or t[n - 2] < 0 or t[n - 2] > 1):
            continue  # the value does not survive the conversion: nothing to refuse
        for reduction, grad in (("mean", True), ("none", False)):
            a = x.clone().requires_grad_(grad)
            with pytest.raises(ValueError, match=r"targets? contains .*; probabilities must be (numbers )?in \[0, 1"):
                f(a, t, reduction=reduction)
        ok = t.clone()  # and with that value mended, the same target is accepted
        ok[n - 2] = 1
        v = f(x, ok, reduction="mean")
        assert torch.isfinite(v)
        want = f.reference(x.double(), ok.double(), reduction="mean")
        assert_close(v.double(), want, rtol=1e-2 if logits.itemsize == 2 else 1e-5)
