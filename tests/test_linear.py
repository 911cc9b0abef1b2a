"""linear_cross_entropy against the naive cross_entropy(x @ W.T + b) in float64."""

import itertools

import pytest
import torch

import crossentropy as ce
from conftest import assert_close


def _problem(N=29, H=12, V=53, dtype=torch.float64, bias=True, seed=0, ignore_frac=0.2, lead=()):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, N, H, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    W = (torch.randn(V, H, generator=g, dtype=torch.float64) / H**0.5).to(dtype).requires_grad_(True)
    b = torch.randn(V, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True) if bias else None
    t = torch.randint(0, V, (*lead, N), generator=g)
    t = torch.where(torch.rand(t.shape, generator=g) < ignore_frac, -100, t)
    return x, W, b, t


def _grads(loss, params, seed=1):
    g = torch.rand(loss.shape, generator=torch.Generator().manual_seed(seed), dtype=loss.dtype) + 0.5
    params = [p for p in params if p is not None]
    return torch.autograd.grad(loss, params, g)


def _naive(x, W, b, t, **kw):
    logits = x @ W.T if b is None else x @ W.T + b
    kw = {k: v for k, v in kw.items() if k not in ("chunk_size", "shift")}
    return ce.cross_entropy(logits, t, axis=-1, **kw)


GRID = list(itertools.product(
    ("mean", "sum", "none"), (False, True), (0.0, 0.2), (0.0, 1e-2), (None, 4.0), (7, 29, 1000)
))


@pytest.mark.parametrize("reduction,weighted,ls,z,cap,chunk", GRID)
def test_matches_naive_float64(reduction, weighted, ls, z, cap, chunk):
    x, W, b, t = _problem()
    kw = dict(reduction=reduction, label_smoothing=ls, z_loss=z, softcap=cap)
    if weighted:
        kw["weight"] = torch.rand(W.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(3)) + 0.2
    ours = ce.linear_cross_entropy(x, W, t, linear_bias=b, chunk_size=chunk, **kw)
    ref = _naive(x, W, b, t, **kw)
    assert_close(ours.detach(), ref.detach())
    for a, r in zip(_grads(ours, (x, W, b)), _grads(ref, (x, W, b))):
        assert_close(a, r)


def test_default_chunk_and_no_bias_and_leading_dims():
    x, W, b, t = _problem(N=9, bias=False, lead=(2, 3))
    ours = ce.linear_cross_entropy(x, W, t)
    ref = _naive(x, W, None, t)
    assert_close(ours.detach(), ref.detach())
    for a, r in zip(_grads(ours, (x, W)), _grads(ref, (x, W))):
        assert_close(a, r)


def test_default_chunk_size_follows_the_memory_model():
    from crossentropy._torch.linear import default_chunk_size

    assert default_chunk_size(8192, 4096, 128256) == 512  # the docstring's worked example: the floor
    assert default_chunk_size(65536, 4096, 128256) == 2048  # like the input: 65536 / ceil(128256 / 4096)
    assert default_chunk_size(4096, 1024, 32000) == 512  # the floor of 512 rows
    assert default_chunk_size(1024, 1024, 128256) == 512  # the floor, under its cap of 2**26 // 128256 = 523
    assert default_chunk_size(4096, 512, 262144) == 256  # the floor capped at 256 MiB: 2**26 // 262144
    assert default_chunk_size(100, 1024, 32000) == 100  # never more than N
    assert default_chunk_size(0, 8, 8) == 1
    assert default_chunk_size(5, 4, 1 << 30) == 1


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_one_row_and_all_ignored(reduction):
    x, W, b, t = _problem(N=1, ignore_frac=0.0)
    assert_close(ce.linear_cross_entropy(x, W, t, linear_bias=b, reduction=reduction).detach(),
                 _naive(x, W, b, t, reduction=reduction).detach())
    t_all = torch.full_like(t, -100)
    x, W, b, _ = _problem(N=17)
    loss = ce.linear_cross_entropy(x, W, torch.full((17,), -100), linear_bias=b, reduction=reduction, chunk_size=4)
    assert torch.all(loss == 0)
    for g in _grads(loss, (x, W, b)):
        assert torch.all(g == 0) and torch.isfinite(g).all()
    del t_all


def test_whole_chunks_ignored():
    x, W, b, t = _problem(N=24)
    t[:8] = -100  # the first two chunks of 4 are empty
    kw = dict(label_smoothing=0.1, z_loss=1e-3)
    ours = ce.linear_cross_entropy(x, W, t, linear_bias=b, chunk_size=4, **kw)
    ref = _naive(x, W, b, t, **kw)
    assert_close(ours.detach(), ref.detach())
    for a, r in zip(_grads(ours, (x, W, b)), _grads(ref, (x, W, b))):
        assert_close(a, r)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_shift_equals_an_explicit_slice(reduction):
    x, W, b, t = _problem(N=11, lead=(3,))
    ours = ce.linear_cross_entropy(x, W, t, linear_bias=b, shift=True, reduction=reduction, chunk_size=4)
    ref = _naive(x[:, :-1], W, b, t[:, 1:], reduction=reduction)
    assert ours.shape == ref.shape
    assert_close(ours.detach(), ref.detach())
    for a, r in zip(_grads(ours, (x, W, b)), _grads(ref, (x, W, b))):
        assert_close(a, r)


def test_num_items_in_batch_replaces_the_mean_denominator():
    x, W, b, t = _problem()
    total = ce.linear_cross_entropy(x, W, t, linear_bias=b, reduction="sum")
    ours = ce.linear_cross_entropy(x, W, t, linear_bias=b, num_items_in_batch=100)
    assert_close(ours.detach(), total.detach() / 100)


def test_bfloat16_against_float32_reference():
    """bf16 inputs, fp32 accumulation: the logits carry bf16 rounding of the
    matmul (relative 2^-8 per product term, averaged over H), so values agree
    to about 1e-2 relative; the weight gradient, accumulated in float32 over
    chunks and cast once, agrees to a few bf16 ulps of its scale."""
    x, W, b, t = _problem(N=64, H=32, V=200, dtype=torch.bfloat16)
    ours = ce.linear_cross_entropy(x, W, t, linear_bias=b, chunk_size=8, label_smoothing=0.1)
    assert ours.dtype == torch.bfloat16
    x32, W32, b32 = (p.detach().float().requires_grad_(True) for p in (x, W, b))
    ref = _naive(x32, W32, b32, t, label_smoothing=0.1)
    assert abs(ours.float().item() - ref.item()) < 2e-2 * abs(ref.item())
    ga = _grads(ours.float() * 1, (x, W, b))
    gr = _grads(ref, (x32, W32, b32))
    for a, r in zip(ga, gr):
        assert a.dtype == torch.bfloat16
        scale = r.abs().max().item()
        assert (a.float() - r).abs().max().item() < 3e-2 * scale


def test_errors():
    x, W, b, t = _problem()
    with pytest.raises(ValueError, match=r"class probabilities and needs the logits' shape \(29, 53\)"):
        ce.linear_cross_entropy(x, W, torch.rand(29, 52))
    with pytest.raises(ValueError, match="linear_weight must have shape"):
        ce.linear_cross_entropy(x, W.T, t)
    with pytest.raises(IndexError, match="class index 53"):
        ce.linear_cross_entropy(x, W, torch.full((29,), 53))
    with pytest.raises(ValueError, match="chunk_size=0"):
        ce.linear_cross_entropy(x, W, t, chunk_size=0)
    with pytest.raises(ValueError, match="reduction='avg'"):
        ce.linear_cross_entropy(x, W, t, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing=2.0"):
        ce.linear_cross_entropy(x, W, t, label_smoothing=2.0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape,shift", [((0, 12), False), ((0, 5, 12), True), ((3, 0, 12), True),
                                         ((3, 1, 12), True), ((4, 0), False)], ids=str)
def test_empty_batches_give_a_value(shape, shift, reduction):
    """An empty batch with shift=True, (B, 0, H), and H = 0 raised a raw reshape
    error; torch gives a value (and for H = 0, log V per row)."""
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    W = torch.randn(7, shape[-1], dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 7, shape[:-1])
    loss = ce.linear_cross_entropy(x, W, t, shift=shift, reduction=reduction, label_smoothing=0.1)
    naive = _naive(x[..., :-1, :] if shift else x, W, None, t[..., 1:] if shift else t, reduction=reduction,
                   label_smoothing=0.1)
    assert loss.shape == naive.shape
    assert_close(loss.detach(), naive.detach())
    gx, gW = torch.autograd.grad(loss.sum(), (x, W))
    assert gx.shape == x.shape and gW.shape == W.shape and torch.isfinite(gW).all()
    if x.dim() == 2 and reduction != "mean":
        assert_close(loss.detach(), torch.nn.functional.linear_cross_entropy(x, W, t, reduction=reduction,
                                                                             label_smoothing=0.1).detach())


def test_shift_walks_the_flat_list_of_rows_that_count():
    """shift=True chunked within each sequence (T - 1 rows), so chunks were not
    what the documented model says; now the rows that count, after the shift
    and without the ignored ones, are walked as one flat list."""
    from crossentropy._checks import cross_entropy_options
    from crossentropy._torch.linear import prepare

    x, W, b, t = _problem(N=7, lead=(3,), ignore_frac=0.3)
    plan, *_ = prepare(x, W, t, b, None, cross_entropy_options(), shift=True, chunk_size=4, accum_dtype=None,
                       num_items=None)
    counted = (t[:, 1:] != -100).reshape(-1)
    rows = (torch.arange(3)[:, None] * 7 + torch.arange(6)).reshape(-1)[counted]
    assert torch.equal(plan.rows, rows) and plan.n_rows == int(counted.sum())
    for reduction in ("mean", "none"):  # chunks of 4 rows that cut across sequences
        ours = ce.linear_cross_entropy(x, W, t, linear_bias=b, shift=True, reduction=reduction, chunk_size=4)
        ref = _naive(x[:, :-1], W, b, t[:, 1:], reduction=reduction)
        assert_close(ours.detach(), ref.detach())
        for a, r in zip(_grads(ours, (x, W, b)), _grads(ref, (x, W, b))):
            assert_close(a, r)


@pytest.mark.parametrize("kind", ["index", "probs", "kdim"])
def test_numpy_value_and_grad_matches_torch_autograd(kind):
    """linear_cross_entropy takes NumPy inputs, with value_and_grad, like every other loss."""
    import numpy as np

    g = torch.Generator().manual_seed(7)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(*((4, 3) if kind == "kdim" else (4,)), 5, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(W.shape[:-1], generator=g, dtype=torch.float64, requires_grad=True)
    if kind == "probs":
        t = torch.softmax(torch.randn(6, 4, generator=g, dtype=torch.float64), -1)
    else:
        t = torch.randint(0, 4, (6, 3) if kind == "kdim" else (6,), generator=g)
    kw = dict(label_smoothing=0.1, z_loss=1e-3, reduction="sum")
    loss = torch.nn.functional.linear_cross_entropy(x, W, t, linear_bias=b, label_smoothing=0.1, reduction="sum")
    loss = loss + 1e-3 * (torch.logsumexp(_logits_of(x, W, b), 1) ** 2).sum()
    want = torch.autograd.grad(loss, (x, W, b))
    value, grads = ce.linear_cross_entropy.value_and_grad(x.detach().numpy(), W.detach().numpy(), t.numpy(),
                                                         linear_bias=b.detach().numpy(), chunk_size=4, **kw)
    assert isinstance(value, np.ndarray | np.floating) and isinstance(grads.linear_weight, np.ndarray)
    assert_close(value, loss.detach())
    for ours, theirs in zip(grads, want):
        assert_close(ours, theirs)
    assert_close(ce.linear_cross_entropy(x.detach().numpy(), W.detach().numpy(), t.numpy(),
                                         linear_bias=b.detach().numpy(), **kw), loss.detach())


def _logits_of(x, W, b):
    """(N, C, d...) logits of a 2-D or K-dimensional weight."""
    return (x @ W.reshape(-1, W.shape[-1]).T + b.reshape(-1)).reshape(x.shape[0], *W.shape[:-1])


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("kdim", [False, True])
def test_value_and_grad_takes_a_grad_output_shaped_like_the_losses(shift, kdim):
    """``reduction="none"`` over leading dimensions (a batch of sequences):
    ``grad_output`` has the losses' shape, and the gradients are autograd's
    of ``(losses * grad_output).sum()``. (It was broadcast against the flat
    rows, and failed for any batch of more than one dimension.)"""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(*((7, 3) if kdim else (7,)), 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 7, (2, 5, 3) if kdim else (2, 5), generator=g)
    if kdim:  # class indices (N, d...) of a K-dimensional weight: one row a position here
        x, t = x.reshape(10, 4).detach().requires_grad_(True), t.reshape(10, 3)
        shift = False
    losses = ce.linear_cross_entropy(x, W, t, shift=shift, reduction="none")
    go = torch.randn(losses.shape, generator=g, dtype=torch.float64)
    want = torch.autograd.grad((losses * go).sum(), (x, W))
    value, grads = ce.linear_cross_entropy.value_and_grad(x.detach(), W.detach(), t, shift=shift, reduction="none",
                                                         grad_output=go)
    assert_close(value, losses.detach())
    assert_close(grads.input, want[0])
    assert_close(grads.linear_weight, want[1])
