"""What every analytic backward guarantees: a kept gradient survives
``retain_graph=True`` and gives the same gradient twice; differentiating a
gradient (Hessians, gradient penalties) gives the true second derivatives
(PyTorch's own functions' in float64; the vocab-parallel functions, which
have none yet, raise a clear error instead of silently returning zeros:
``tests/_dist_registry.py``); and ``create_graph=True`` alone still gives the right first
derivatives."""

import pytest
import torch

import crossentropy as ce

g = torch.Generator().manual_seed(0)
X = torch.randn(5, 4, generator=g, dtype=torch.float64)
Y = torch.tensor([0, 3, 1, -100, 2])
P = torch.softmax(torch.randn(5, 4, generator=g, dtype=torch.float64), -1)
W = torch.randn(4, 4, generator=g, dtype=torch.float64)

LOSSES = {  # name: a loss of the first argument, through each analytic backward
    "cross_entropy (kernel)": lambda x: ce.cross_entropy(x, Y, label_smoothing=0.1),
    "cross_entropy, probabilities (kernel)": lambda x: ce.cross_entropy(x, P),
    "cross_entropy, none": lambda x: (ce.cross_entropy(x, Y, reduction="none") * torch.arange(5.0)).sum(),
    "cross_entropy (core)": lambda x: ce.cross_entropy.reference(x, Y),
    "nll_loss": lambda x: ce.nll_loss(x, Y),
    "focal_loss (kept)": lambda x: ce.focal_loss(x, Y, gamma=2.0),
    "binary_cross_entropy": lambda x: ce.binary_cross_entropy(torch.sigmoid(x), P),
    "binary_cross_entropy_with_logits": lambda x: ce.binary_cross_entropy_with_logits(x, P),
    "sigmoid_focal_loss": lambda x: ce.sigmoid_focal_loss(x, P, reduction="sum"),
    "entropy": lambda x: ce.entropy(torch.softmax(x, -1)).sum(),
    "kl_div": lambda x: ce.kl_div(torch.log_softmax(x, -1), P, reduction="batchmean"),
    "linear_cross_entropy, mean": lambda x: ce.linear_cross_entropy(x, W, Y, chunk_size=2),
    "linear_cross_entropy, sum": lambda x: ce.linear_cross_entropy(x, W, Y, reduction="sum"),
    "linear_cross_entropy, none": lambda x: ce.linear_cross_entropy(x, W, Y, reduction="none").sum(),
    "linear_cross_entropy, probabilities": lambda x: ce.linear_cross_entropy(x, W, P, label_smoothing=0.2),
}


@pytest.mark.parametrize("name", LOSSES)
def test_retain_graph_backward_twice_gives_the_same_gradient(name):
    """linear_cross_entropy's second backward through a kept graph raised
    "not enough values to unpack"; every kept gradient must survive."""
    x = X.clone().requires_grad_(True)
    loss = LOSSES[name](x)
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()
    torch.testing.assert_close(x.grad, 2 * first, rtol=1e-12, atol=1e-14)
    with pytest.raises(RuntimeError):  # the graph is freed now, as in torch
        loss.backward()


F = torch.nn.functional
PW = torch.full((4,), 2.0, dtype=torch.float64)


def _focal(x, gamma=2.0):  # -(1 - p_y)^gamma log p_y, written out in torch
    logp = torch.log_softmax(x, -1)[Y != -100].gather(-1, Y[Y != -100, None])[:, 0]
    return (-(1 - logp.exp()) ** gamma * logp).mean()


def _sigmoid_focal(x, t, alpha=0.25, gamma=2.0):  # torchvision's formula
    p = torch.sigmoid(x)
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    return ((alpha * t + (1 - alpha) * (1 - t)) * bce * (1 - p_t) ** gamma).sum()


PEERS = {  # the same losses from PyTorch's own functions (or their formulas written out in torch)
    "cross_entropy (kernel)": lambda x: F.cross_entropy(x, Y, label_smoothing=0.1),
    "cross_entropy, probabilities (kernel)": lambda x: F.cross_entropy(x, P),
    "cross_entropy, none": lambda x: (F.cross_entropy(x, Y, reduction="none") * torch.arange(5.0)).sum(),
    "cross_entropy (core)": lambda x: F.cross_entropy(x, Y),
    "nll_loss": lambda x: F.nll_loss(x, Y),
    "focal_loss (kept)": _focal,
    "binary_cross_entropy": lambda x: F.binary_cross_entropy(torch.sigmoid(x), P),
    "binary_cross_entropy_with_logits": lambda x: F.binary_cross_entropy_with_logits(x, P),
    "binary_cross_entropy_with_logits, pos_weight": lambda x: F.binary_cross_entropy_with_logits(x, P, pos_weight=PW),
    "sigmoid_focal_loss": lambda x: _sigmoid_focal(x, P),
    "entropy": lambda x: (-(torch.softmax(x, -1) * torch.log_softmax(x, -1)).sum(-1)).sum(),
    "kl_div": lambda x: F.kl_div(torch.log_softmax(x, -1), P, reduction="batchmean"),
    "linear_cross_entropy, mean": lambda x: F.cross_entropy(x @ W.T, Y),
    "linear_cross_entropy, sum": lambda x: F.cross_entropy(x @ W.T, Y, reduction="sum"),
    "linear_cross_entropy, none": lambda x: F.cross_entropy(x @ W.T, Y, reduction="none").sum(),
    "linear_cross_entropy, probabilities": lambda x: F.cross_entropy(x @ W.T, P, label_smoothing=0.2),
}
LOSSES["binary_cross_entropy_with_logits, pos_weight"] = (
    lambda x: ce.binary_cross_entropy_with_logits(x, P, pos_weight=PW))


@pytest.mark.parametrize("name", PEERS)
def test_hessians_equal_torchs(name):
    """torch.autograd.functional.hessian(lambda z: cross_entropy(z, y), x)
    was all zeros (torch: not)."""
    got = torch.autograd.functional.hessian(LOSSES[name], X.clone())
    want = torch.autograd.functional.hessian(PEERS[name], X.clone())
    assert name == "nll_loss" or want.abs().max() > 1e-3  # a Hessian worth comparing (nll_loss is linear)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", PEERS)
def test_a_gradient_penalty_is_applied(name):
    """(loss + 10 * g.pow(2).sum()).backward() with g from create_graph=True
    silently dropped the penalty; it must give what torch gives."""
    def penalised(f):
        x = X.clone().requires_grad_(True)
        loss = f(x)
        (grad,) = torch.autograd.grad(loss, x, create_graph=True)
        (loss + 10 * grad.pow(2).sum()).backward()
        return grad.detach(), x.grad

    (g1, d1), (g2, d2) = penalised(LOSSES[name]), penalised(PEERS[name])
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(d1, d2, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", PEERS)
def test_gradgradcheck(name):
    assert torch.autograd.gradgradcheck(LOSSES[name], (X.clone().requires_grad_(True),))


def test_inplace_backward_refuses_double_backward():
    """inplace_backward writes the gradient over the logits, which a second
    derivative would need: refused, not wrong."""
    with pytest.raises(RuntimeError, match="not differentiable here .inplace_backward"):
        torch.autograd.functional.hessian(lambda z: ce.cross_entropy(z * 1.0, Y, inplace_backward=True), X.clone())


def test_linear_cross_entropy_hessian_in_the_weight_equals_torchs():
    """Second derivatives in the weight and the input together, with a bias and shift."""
    b = torch.randn(4, generator=g, dtype=torch.float64)
    t = torch.tensor([[0, 3, 1], [2, -100, 1]])

    def ours(x, w):
        return ce.linear_cross_entropy(x.reshape(2, 3, 4), w, t, linear_bias=b, shift=True, label_smoothing=0.1)

    def theirs(x, w):
        logits = x.reshape(2, 3, 4)[:, :-1] @ w.T + b
        return F.cross_entropy(logits.reshape(-1, 4), t[:, 1:].reshape(-1), label_smoothing=0.1)

    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    for h1, h2 in zip(torch.autograd.functional.hessian(ours, (x, W)), torch.autograd.functional.hessian(theirs, (x, W))):
        for a, c in zip(h1, h2):
            torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12)
