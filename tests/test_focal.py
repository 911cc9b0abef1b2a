"""The focal losses beyond the registry: finite where torchvision's formula is
not, and float32 precision at logits of 1e4."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crossentropy as ce


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


def test_focal_loss_at_logits_of_1e4_in_float32():
    """log p is taken relative to the row maximum (a tie at 1e4 is -log 2 to
    float32 precision), so the gradient of a tie row is exact, not 1e-3 off."""
    x = torch.tensor([[1e4, 1e4, -1e4], [1e4, -1e4, 0.0]])
    y = torch.tensor([0, 0])
    a, r = x.clone().requires_grad_(True), x.double().requires_grad_(True)
    ce.focal_loss(a, y, gamma=2.0).backward()
    logp = torch.log_softmax(r, -1)
    (-(1 - logp.exp()) ** 2 * logp).gather(1, y[:, None]).mean().backward()
    assert (a.grad.double() - r.grad).abs().max() <= 8 * 2.0**-24


def test_focal_axis_moves_the_class_axis_and_bad_axes_are_refused():
    """``axis`` as ``cross_entropy``'s: the class axis first gives the same
    losses and the gradient in the caller's layout, on NumPy (the column
    kernels) and torch; a bad axis names itself."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 4, 3)) * 3
    y = rng.integers(0, 4, size=(6, 3))
    want, grad = ce.focal_loss.value_and_grad(x, y, gamma=2.0, reduction="none", grad_output=np.ones((6, 3)))
    moved = np.ascontiguousarray(np.moveaxis(x, 1, 0))  # (4, 6, 3): the class axis first
    got, got_grad = ce.focal_loss.value_and_grad(moved, y, gamma=2.0, axis=0, reduction="none",
                                                 grad_output=np.ones((6, 3)))
    np.testing.assert_allclose(got, want, rtol=1e-13)
    np.testing.assert_allclose(np.moveaxis(got_grad, 0, 1), grad, rtol=1e-12, atol=1e-300)
    t = torch.from_numpy(moved).requires_grad_(True)
    ce.focal_loss(t, torch.from_numpy(y), gamma=2.0, axis=0, reduction="sum").backward()
    np.testing.assert_allclose(np.moveaxis(t.grad.numpy(), 0, 1), grad, rtol=1e-12, atol=1e-300)
    with pytest.raises(ValueError, match="axis=5"):
        ce.focal_loss(x, y, axis=5)
    with pytest.raises(TypeError, match="axis=1.5"):
        ce.focal_loss(x, y, axis=1.5)
