"""The modules against torch.nn's, and a training loop that must not notice the swap."""

import pytest
import torch

import crossentropy.nn as cnn
from conftest import assert_close

g = torch.Generator().manual_seed(0)
X = torch.randn(6, 5, generator=g, dtype=torch.float64)
Y = torch.tensor([0, 4, 2, -100, 1, 3])
P = torch.softmax(torch.randn(6, 5, generator=g, dtype=torch.float64), -1)
W = torch.rand(5, generator=g, dtype=torch.float64) + 0.5

PAIRS = [
    (cnn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss(), X, Y),
    (cnn.CrossEntropyLoss(W, label_smoothing=0.2), torch.nn.CrossEntropyLoss(W, label_smoothing=0.2), X, Y),
    (cnn.CrossEntropyLoss(reduction="none", ignore_index=2), torch.nn.CrossEntropyLoss(reduction="none", ignore_index=2),
     X, Y.clamp(min=0)),
    (cnn.CrossEntropyLoss(reduction="sum"), torch.nn.CrossEntropyLoss(reduction="sum"), X, P),
    (cnn.NLLLoss(W), torch.nn.NLLLoss(W), torch.log_softmax(X, -1), Y),
    (cnn.BCELoss(reduction="sum"), torch.nn.BCELoss(reduction="sum"), torch.sigmoid(X), P),
    (cnn.BCEWithLogitsLoss(pos_weight=W), torch.nn.BCEWithLogitsLoss(pos_weight=W), X, P),
    (cnn.KLDivLoss(reduction="batchmean"), torch.nn.KLDivLoss(reduction="batchmean"), torch.log_softmax(X, -1), P),
    (cnn.FocalLoss(gamma=0.0, weight=W, label_smoothing=0.1),
     torch.nn.CrossEntropyLoss(W, label_smoothing=0.1), X, Y),
]


def test_legacy_size_average_and_reduce():
    with pytest.warns(UserWarning, match="size_average and reduce are deprecated") as caught:
        m = cnn.CrossEntropyLoss(size_average=False)
    assert m.reduction == "sum"
    assert caught[0].filename == __file__  # the caller's line, not the library's
    with pytest.warns(UserWarning):
        assert cnn.NLLLoss(reduce=False).reduction == "none"


@pytest.mark.parametrize("ours,theirs,x,t", PAIRS, ids=lambda v: type(v).__name__ if isinstance(v, torch.nn.Module) else "")
def test_module_matches_torch(ours, theirs, x, t):
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    la, lb = ours(a, t), theirs(b, t)
    assert_close(la.detach(), lb.detach())
    go = torch.rand_like(lb)
    la.backward(go)
    lb.backward(go)
    assert_close(a.grad, b.grad)


def test_weights_are_buffers_that_move_with_the_module():
    m = cnn.CrossEntropyLoss(W)
    assert "weight" in dict(m.named_buffers())
    assert m.to(torch.float32).weight.dtype == torch.float32
    assert set(m.state_dict()) == set(torch.nn.CrossEntropyLoss(W).state_dict())


def test_focal_modules():
    assert_close(cnn.FocalLoss(gamma=0.0)(X, Y), torch.nn.functional.cross_entropy(X, Y))
    p = torch.sigmoid(X)
    t = (P > 0.2).double()
    ref = torch.nn.functional.binary_cross_entropy_with_logits(X, t, reduction="none")
    ref = ref * (1 - (p * t + (1 - p) * (1 - t))) ** 2 * (0.25 * t + 0.75 * (1 - t))
    assert_close(cnn.SigmoidFocalLoss()(X, t), ref.mean())


def test_bad_options_are_refused_at_construction():
    with pytest.raises(ValueError, match="label_smoothing=1.5"):
        cnn.CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match="reduction='batchmean'"):
        cnn.CrossEntropyLoss(reduction="batchmean")
    with pytest.raises(ValueError, match="gamma=-1.0"):
        cnn.FocalLoss(gamma=-1)


def _train(criterion, steps=5):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 5)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(steps):
        opt.zero_grad()
        criterion(model(X), Y).backward()
        opt.step()
    return [p.detach() for p in model.parameters()]


def test_training_loop_does_not_notice_the_swap():
    for ours, theirs in ((cnn.CrossEntropyLoss(W, label_smoothing=0.1), torch.nn.CrossEntropyLoss(W, label_smoothing=0.1)),
                         (cnn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss())):
        for a, b in zip(_train(ours), _train(theirs)):
            assert_close(a, b)


@pytest.mark.parametrize("out_features", [(), (3, 2)])
def test_linear_cross_entropy_module_with_out_features_matches_torch(out_features):
    """PyTorch's K-dimensional LinearCrossEntropyLoss: the layer is flat,
    (num_classes * prod(out_features), in_features), and ignore_index=None is -100."""
    torch.manual_seed(1)
    theirs = torch.nn.LinearCrossEntropyLoss(5, 4, out_features=out_features, bias=True, dtype=torch.float64,
                                             ignore_index=None)
    ours = cnn.LinearCrossEntropyLoss(5, 4, out_features=out_features, bias=True, dtype=torch.float64,
                                      ignore_index=None)
    ours.load_state_dict(theirs.state_dict())
    t = torch.randint(0, 4, (6, *out_features))
    t.view(-1)[::5] = -100
    a, b = ours(X, t), theirs(X, t)
    assert_close(a.detach(), b.detach())
    for p, q in zip(torch.autograd.grad(a, list(ours.parameters())), torch.autograd.grad(b, list(theirs.parameters()))):
        assert_close(p, q)


def test_linear_cross_entropy_module_matches_torch():
    torch.manual_seed(0)
    ours = cnn.LinearCrossEntropyLoss(5, 7, bias=True, dtype=torch.float64, label_smoothing=0.1)
    theirs = torch.nn.LinearCrossEntropyLoss(5, 7, bias=True, dtype=torch.float64, label_smoothing=0.1,
                                             ignore_index=-100)
    theirs.load_state_dict(ours.state_dict())
    t = torch.tensor([0, 6, 2, -100, 1, 3])
    assert_close(ours(X, t).detach(), theirs(X, t).detach())
