"""What every analytic backward guarantees: a kept gradient survives
``retain_graph=True`` and gives the same gradient twice; differentiating a
gradient (Hessians, gradient penalties) raises a clear error instead of
silently returning zeros (double backward is not written yet); and
``create_graph=True`` alone still gives the right first derivatives."""

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


@pytest.mark.parametrize("name", LOSSES)
def test_a_hessian_raises_instead_of_being_zero(name):
    """torch.autograd.functional.hessian(lambda z: cross_entropy(z, y), x)
    was all zeros (torch: not)."""
    with pytest.raises(RuntimeError, match="not differentiable .double backward"):
        torch.autograd.functional.hessian(LOSSES[name], X.clone())


@pytest.mark.parametrize("name", LOSSES)
def test_a_gradient_penalty_raises_instead_of_being_dropped(name):
    """(loss + 10 * g.pow(2).sum()).backward() with g from create_graph=True
    silently dropped the penalty; the first derivative itself is right."""
    x = X.clone().requires_grad_(True)
    loss = LOSSES[name](x)
    (grad,) = torch.autograd.grad(loss, x, create_graph=True)
    x2 = X.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(LOSSES[name](x2), x2)
    torch.testing.assert_close(grad.detach(), want, rtol=1e-12, atol=1e-14)
    with pytest.raises(RuntimeError, match="not differentiable"):
        (loss + 10 * grad.pow(2).sum()).backward()
