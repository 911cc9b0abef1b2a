"""The torch kernel of cross_entropy against the array-API core: dtypes, odd
shapes, gradcheck, in-place backward, stats, compile, chunk boundaries,
probability targets, empty batches. (Every registry case runs through it in
test_registry.py.)"""

import pytest
import torch
import torch.nn.functional as F

import crossentropy as ce
from crossentropy._torch import cross_entropy as fused
from conftest import assert_close

OPTIONS = [dict(), dict(label_smoothing=0.1, z_loss=1e-3, softcap=8.0), dict(ignore_index=3, label_smoothing=0.2)]


def _data(shape, C, seed=0, dtype=torch.float32, ignore_index=-100):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(*shape[:-1], C, generator=g, dtype=torch.float64) * 3).to(dtype)
    t = torch.randint(0, C, shape[:-1], generator=g)
    t[..., ::5] = ignore_index
    return x, t


def _core(x, t, **kw):
    """The NumPy core on the same (rounded) inputs, in float64."""
    kw = {k: (v.double().numpy() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    return ce.cross_entropy.value_and_grad(x.double().numpy(), t.numpy(), **kw)


# float32 sums V terms of relative error 2^-24 each (the exponentials and the
# running sum), so both values and gradients agree to about 1e-6 relative;
# 1e-5 is the bound. Half precision is computed in float32 from the
# same rounded inputs, then the loss and gradient are rounded once to the half
# type: one rounding, 2^-8 (bfloat16) or 2^-11 (float16) relative to the
# largest entry.
TOL = {torch.float32: 1e-5, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


@pytest.mark.parametrize("dtype", list(TOL), ids=str)
@pytest.mark.parametrize("kw", OPTIONS, ids=["plain", "smooth-z-cap", "ignore3"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fused_matches_the_core_per_dtype(dtype, kw, reduction):
    x, t = _data((64, 0), 1000, dtype=dtype, ignore_index=kw.get("ignore_index", -100))
    a = x.clone().requires_grad_(True)
    loss = ce.cross_entropy(a, t, reduction=reduction, **kw)
    assert loss.dtype == dtype
    g = torch.rand(loss.shape, generator=torch.Generator().manual_seed(1)) + 0.5
    loss.backward(g.to(dtype))
    v, grad = _core(x, t, reduction=reduction, grad_output=g.double().numpy(), **kw)
    assert a.grad.dtype == dtype
    assert_close(loss.detach().double(), v, rtol=TOL[dtype])
    assert_close(a.grad.double(), grad, rtol=TOL[dtype])


@pytest.mark.parametrize("C", [1000, 5003])
def test_odd_shapes_3x423xV(C):
    """Rows not a multiple of the chunk, V not a multiple of anything, the
    class axis last of a 3-D input."""
    x, t = _data((3, 423, 0), C)
    w = torch.rand(C, generator=torch.Generator().manual_seed(5)) + 0.5
    a = x.clone().requires_grad_(True)
    loss = ce.cross_entropy(a, t, axis=-1, label_smoothing=0.1, weight=w)
    loss.backward()
    v, grad = _core(x, t, axis=-1, label_smoothing=0.1, weight=w)
    assert_close(loss.detach().double(), v, rtol=1e-5)
    assert_close(a.grad.double(), grad, rtol=1e-5)


def test_class_axis_one_layout_goes_through_a_copy_and_back():
    x, t = _data((2, 7, 0), 11)
    x = x.movedim(-1, 1).contiguous()  # (N, C, d)
    a = x.clone().requires_grad_(True)
    ce.cross_entropy(a, t, reduction="sum").backward()
    v, grad = _core(x, t, reduction="sum")
    assert_close(a.grad.double(), grad, rtol=1e-5)


def test_gradcheck_float64():
    """gradcheck runs several backwards through one graph: the kept gradient
    is then scaled out of place (see the next test). The per-row VJP of
    "none" is checked through fixed random row weights."""
    rows = torch.rand(6, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) + 0.5
    for kw in OPTIONS:
        x, t = _data((6, 0), 5, dtype=torch.float64, ignore_index=kw.get("ignore_index", -100))
        f = lambda a: ce.cross_entropy(a, t, **kw)  # noqa: E731
        assert torch.autograd.gradcheck(f, (x.clone().requires_grad_(True),))
        g = lambda a: (ce.cross_entropy(a, t, reduction="none", **kw) * rows).sum()  # noqa: E731
        assert torch.autograd.gradcheck(g, (x.clone().requires_grad_(True),))


def test_retain_graph_backward_twice_gives_the_same_gradient():
    """With retain_graph the kept gradient is scaled out of place; without, in
    place (the last use), and a third backward is refused by autograd."""
    x, t = _data((4, 0), 5)
    for f, target in ((ce.cross_entropy, t), (ce.binary_cross_entropy_with_logits, torch.rand(4, 5))):
        a = x.clone().requires_grad_(True)
        loss = f(a, target)
        loss.backward(retain_graph=True)
        first = a.grad.clone()
        loss.backward()
        assert_close(a.grad, 2 * first, rtol=1e-6)
        with pytest.raises(RuntimeError):
            loss.backward()


def test_inplace_backward_overwrites_only_when_asked():
    x, t = _data((32, 0), 50)
    a = x.clone().requires_grad_(True)
    ce.cross_entropy(a, t).backward()
    assert torch.equal(a.detach(), x), "the default must never mutate the input"

    leaf = x.clone().requires_grad_(True)
    b = leaf * 1  # a non-leaf whose buffer may be reused, as in a model's output
    loss = ce.cross_entropy(b, t, inplace_backward=True)
    assert_close(loss.detach(), ce.cross_entropy(x, t).detach(), rtol=1e-6)
    loss.backward()
    assert_close(leaf.grad, a.grad, rtol=1e-6)
    assert not torch.equal(b.detach(), x), "the logits buffer now holds the gradient"
    assert_close(b.detach(), a.grad, rtol=1e-6)

    # An op that saved the logits for its own backward is told, not fooled.
    y = torch.tanh(x.clone().requires_grad_(True))
    loss = ce.cross_entropy(y, t, inplace_backward=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_no_grad_needed_computes_no_gradient():
    x, t = _data((16, 0), 30)
    with torch.no_grad():
        v = ce.cross_entropy(x.clone().requires_grad_(True), t)
    assert v.grad_fn is None
    assert_close(v, _core(x, t)[0], rtol=1e-6)


@pytest.mark.parametrize("probs", [False, True])
def test_stats_match_a_reference_from_full_logits(probs):
    x, t = _data((40, 0), 17, dtype=torch.float64)
    t[3] = 2
    x[3, 2] = 50.0  # a sure hit
    target = torch.softmax(torch.randn(40, 17, dtype=torch.float64), -1) if probs else t
    kw = dict(z_loss=1e-2, softcap=20.0, label_smoothing=0.1)
    loss, stats = ce.cross_entropy_with_stats(x.clone().requires_grad_(True), target, **kw)
    assert_close(loss.detach(), ce.cross_entropy(x, target, **kw))
    s = 20.0 * torch.tanh(x / 20.0)
    lse = torch.logsumexp(s, -1)
    counted = torch.ones(40, dtype=torch.bool) if probs else t != -100
    truth = target.argmax(-1) if probs else t
    assert_close(stats.lse, lse)
    assert_close(stats.z_loss, 1e-2 * lse**2 * counted)
    acc = ((s.argmax(-1) == truth) & counted).sum().double() / counted.sum()
    assert_close(stats.accuracy, acc)
    np_loss, np_stats = ce.cross_entropy_with_stats(x.numpy(), target.numpy(), **kw)
    assert_close(np_stats.lse, lse)
    assert_close(np_stats.accuracy, acc)


def test_stats_when_everything_is_ignored():
    x, _ = _data((5, 0), 4)
    loss, stats = ce.cross_entropy_with_stats(x.requires_grad_(True), torch.full((5,), -100))
    assert loss.item() == 0 and stats.accuracy.item() == 0 and torch.all(stats.z_loss == 0)


def test_chunk_boundaries_do_not_matter(monkeypatch):
    x, t = _data((37, 0), 23, dtype=torch.float64)
    want = ce.cross_entropy.value_and_grad(x, t, label_smoothing=0.1)
    for rows in (1, 4, 37, 100):
        monkeypatch.setattr(fused, "rows_per_block", lambda C, rows=rows: rows)
        a = x.clone().requires_grad_(True)
        v = ce.cross_entropy(a, t, label_smoothing=0.1)
        v.backward()
        assert_close(v.detach(), want[0])
        assert_close(a.grad, want[1])


def test_num_items_in_batch():
    x, t = _data((12, 0), 9, dtype=torch.float64)
    total = ce.cross_entropy(x, t, reduction="sum")
    assert_close(ce.cross_entropy(x, t, num_items_in_batch=40), total / 40)
    assert_close(ce.cross_entropy(x.numpy(), t.numpy(), num_items_in_batch=40), total / 40)


def _compiled_agrees(f, x):
    """f compiled with fullgraph=True gives f's value and gradient at x."""
    compiled = torch.compile(f, fullgraph=True)
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    la, lb = compiled(a), f(b)
    la.backward()
    lb.backward()
    assert_close(la.detach(), lb.detach(), rtol=1e-6)
    assert_close(a.grad, b.grad, rtol=1e-6)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_torch_compile_fullgraph_agrees():
    x, t = _data((8, 0), 50)

    def f(a):
        return ce.cross_entropy(a, t, label_smoothing=0.1, z_loss=1e-4)

    _compiled_agrees(f, x)


def test_out_of_range_index_still_raises_on_cpu():
    x, _ = _data((4, 0), 6)
    with pytest.raises(IndexError, match="class index 6"):
        ce.cross_entropy(x.requires_grad_(True), torch.tensor([0, 6, 1, 2]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("inplace", [False, True])
def test_half_gradient_scaled_by_grad_output_in_chunks(monkeypatch, dtype, reduction, inplace):
    """A grad_output other than 1 (gradient accumulation's ``loss / k``, or a
    per-row one) multiplies a half-precision gradient through float32 chunks;
    3 rows a chunk so that 40 rows take several, and the last a short one."""
    monkeypatch.setattr(fused, "rows_per_block", lambda C: 3)
    x, t = _data((40, 0), 257, dtype=dtype)
    g = torch.full((), 0.25) if reduction == "mean" else \
        torch.rand(40, generator=torch.Generator().manual_seed(2)) + 0.5
    a = x.clone().requires_grad_(True)
    loss = ce.cross_entropy(a, t, reduction=reduction, label_smoothing=0.1, inplace_backward=inplace)
    loss.backward(g.to(dtype))
    _, grad = _core(x, t, reduction=reduction, label_smoothing=0.1, grad_output=g.to(dtype).double().numpy())
    # two roundings to the half type: the kept gradient, then its product with grad_output
    assert_close(a.grad.double(), grad, rtol=2 * TOL[dtype])


def test_unit_and_other_grad_outputs_with_and_without_a_retained_graph():
    """A grad_output of 1 on CPU hands the kept gradient over as it is; any
    other, and a retained graph, multiply: all four give grad_output times
    the gradient."""
    x, t = _data((6, 0), 9, dtype=torch.float64)
    want = ce.cross_entropy.value_and_grad(x, t)[1]
    for g, retain in ((1.0, False), (1.0, True), (3.0, False), (3.0, True)):
        a = x.clone().requires_grad_(True)
        ce.cross_entropy(a, t).backward(torch.tensor(g, dtype=torch.float64), retain_graph=retain)
        assert_close(a.grad, g * want, rtol=1e-12)


def test_half_gradient_of_no_rows_scaled_by_grad_output():
    """An empty half-precision batch with a grad_output other than 1: an
    empty gradient of the input's shape, as torch gives."""
    x = torch.zeros(0, 5, dtype=torch.bfloat16, requires_grad=True)
    r = x.detach().double().requires_grad_(True)
    t = torch.zeros(0, dtype=torch.long)
    (ce.cross_entropy(x, t, reduction="sum") * 0.5).backward()
    (F.cross_entropy(r, t, reduction="sum") * 0.5).backward()
    assert x.grad.shape == r.grad.shape == (0, 5) and x.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("probs", [False, True], ids=["index", "probs"])
def test_an_empty_batch_with_every_option(dtype, reduction, probs):
    """cross_entropy(torch.empty(0, 5), torch.empty(0, dtype=torch.long),
    label_smoothing=0.5) raised TypeError in the kernel, for every reduction.
    Torch gives an empty tensor, 0, or NaN for "mean" (0 here, by design)."""
    x = torch.empty(0, 5, dtype=dtype, requires_grad=True)
    t = torch.empty(0, 5, dtype=dtype) if probs else torch.empty(0, dtype=torch.long)
    kw = dict(label_smoothing=0.5, z_loss=1e-3, softcap=5.0, weight=torch.rand(5, dtype=dtype), reduction=reduction)
    loss = ce.cross_entropy(x, t, **kw)
    loss.sum().backward()
    assert loss.dtype == dtype and x.grad.shape == (0, 5)
    ref = F.cross_entropy(x.detach().double(), t.double() if probs else t, label_smoothing=0.5, reduction=reduction)
    assert loss.shape == ref.shape
    if reduction != "none":
        assert loss.item() == 0 and (reduction == "sum") == (ref.item() == 0)


def test_probability_targets_take_the_kernel_in_blocks(monkeypatch):
    """Probability targets go through the kernel too, block by block, with
    weights, smoothing, z-loss and the soft cap; against the core."""
    x, _ = _data((37, 0), 11, dtype=torch.float64)
    p = torch.softmax(torch.randn(37, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(4)), -1)
    kw = dict(weight=torch.rand(11, dtype=torch.float64) + 0.5, label_smoothing=0.2, z_loss=1e-2, softcap=4.0)
    want = ce.cross_entropy.value_and_grad(x.numpy(), p.numpy(), **{k: (v.numpy() if torch.is_tensor(v) else v)
                                                                   for k, v in kw.items()})
    for rows in (1, 5, 100):
        monkeypatch.setattr(fused, "rows_per_block", lambda C, rows=rows: rows)
        a = x.clone().requires_grad_(True)
        loss = ce.cross_entropy(a, p, **kw)
        assert type(loss.grad_fn).__name__ == "_KeptBackward"  # the kernel, not the core
        loss.backward()
        assert_close(loss.detach(), want[0])
        assert_close(a.grad, want[1])


def test_float32_logits_of_1e4_keep_the_loss_precision():
    """The loss is written relative to the row maximum: at logits of 1e4 in
    float32, LSE - s_y would lose about 1e-3 to LSE's rounding."""
    x = torch.tensor([[1e4, 1e4 - 1, -1e4], [1e4, 1e4, 0.0]])
    y = torch.tensor([0, 1])
    want = F.cross_entropy(x.double(), y, reduction="none")
    for f in (ce.cross_entropy, ce.cross_entropy.reference):
        got = f(x.clone().requires_grad_(True), y, reduction="none").detach().double()
        assert torch.all((got - want).abs() <= 4 * 2.0**-24 * want), (got, want)
