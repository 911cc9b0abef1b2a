"""The compiled CPU kernels (``crossentropy._cpu``): their exponential over
its whole range, the integer-key maximum, the half types' conversions, and when they
are used. Their results on every registry case are ``test_registry.py``'s
``torch-kernel`` path (cross-entropy's few-classes kernel, for the registry's
cases of at most 6 classes), ``torch-rows`` (its row kernel) and ``numpy``
(``torch-chunks`` is the fallback they replace)."""

import numpy as np
import pytest
import torch

import crossentropy as ce

numba = pytest.importorskip("numba")

from crossentropy import _cpu  # noqa: E402
from crossentropy._cpu import _bits  # noqa: E402
from crossentropy._torch import cross_entropy_cpu  # noqa: E402


def _each(fn, **flags):
    """A compiled loop ``out[i] = fn(a[i])`` over a 1-d array (``fn`` inlined
    as in the kernels; ``flags``: numba's, e.g. the kernels' fastmath)."""
    @numba.njit(**flags)
    def loop(a, out):
        for i in range(a.shape[0]):
            out[i] = fn(a[i])
    return loop


_exp_all = _each(_bits.exp_fast)
_max_rows = _each(_bits.row_max)  # over the rows of a 2-d array
_to_bf16 = _each(_bits.f32_to_bf16)
_f16_to_f32 = _each(_bits.f16_to_f32)
_f32_to_f16 = _each(_bits.f32_to_f16)
_exp64_all = _each(_bits.exp_fast, fastmath={"reassoc", "contract"})  # the kernels' flags: Horner's rule in FMAs


def test_the_exponential_is_within_one_ulp_over_its_whole_range():
    """Every 7th float32 from -0 down to the smallest normal result,
    against float64 ``exp``: at most 1 ulp."""
    lo = np.array([_bits.NORMAL_LO], np.float32).view(np.uint32)[0]
    d = np.arange(0x80000000, int(lo) + 1, 7, dtype=np.uint64).astype(np.uint32).view(np.float32)
    out = np.empty_like(d)
    _exp_all(d, out)
    ref = np.exp(d.astype(np.float64))
    ulps = np.abs(out - ref) / np.spacing(ref.astype(np.float32)).astype(np.float64)
    assert d.min() >= _bits.NORMAL_LO and ulps.max() <= 1.0, ulps.max()


def test_the_log1p_polynomial_is_within_two_ulp_on_zero_to_one():
    """Every 5th float32 in [2^-40, 1] and the tiny ones below, through the
    kernels' ``log1p`` of float32 (``e p(e)``) with their fastmath flags,
    against float64 ``log1p``: at most 2 ulp (the atanh series it replaced
    did not meet that on the same points); and its coefficients are the
    interpolant ``log1p_coefficients`` recomputes, rounded to float32."""
    from crossentropy._cpu import binary

    np.testing.assert_array_equal(np.float32(binary._LOG1P), binary.log1p_coefficients().astype(np.float32))
    lo, hi = np.array([2.0**-40, 1.0], np.float32).view(np.uint32)
    e = np.concatenate([np.arange(lo, hi + 1, 5, dtype=np.uint32).view(np.float32),
                        np.float32([0.0, 2.0**-149, 1e-40, 1e-20, 1.0])])
    out = np.empty_like(e)
    _each(binary._log1p_series, fastmath={"reassoc", "contract"})(e, out)
    ref = np.log1p(e.astype(np.float64))
    ulps = np.abs(out - ref) / np.spacing(ref.astype(np.float32)).astype(np.float64)
    assert ulps.max() <= 2.0, (ulps.max(), e[ulps.argmax()])


def test_outside_its_range_the_kernel_recomputes():
    """Below -87.3 (subnormal results), at -inf, +inf and NaN the row kernel
    agrees with torch's exp-based result exactly where that is finite."""
    x = torch.tensor([[0.0, -87.0, -90.0, -100.0, -103.0, -104.5, -float("inf")],
                      [1.0, 2.0, 3.0, -120.0, -88.0, -87.4, -87.3]])
    y = torch.tensor([0, 3])
    for reduction in ("none", "sum"):
        a = x.clone().requires_grad_(True)
        loss = ce.cross_entropy(a, y, reduction=reduction)
        loss.backward(torch.ones_like(loss))
        b = x.double().requires_grad_(True)
        want = torch.nn.functional.cross_entropy(b, y, reduction=reduction)
        want.backward(torch.ones_like(want))
        torch.testing.assert_close(loss.double(), want, rtol=2e-7, atol=0)
        # the subnormal probabilities themselves, to float32's subnormal spacing
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=4e-7, atol=2.0**-149)


def test_the_maximum_sees_nan_and_infinities():
    x = np.random.default_rng(0).normal(size=(6, 37)).astype(np.float32)
    x[1, 5], x[2] = np.nan, -np.inf
    x[3, 7], x[4, 0] = np.inf, -0.0
    for dt in (np.float32, np.float64):
        out = np.empty(6, dt)
        _max_rows(x.astype(dt), out)
        want = x.astype(dt).max(1)
        np.testing.assert_array_equal(out, want)


def test_bfloat16_rounds_to_nearest_even_as_torch_does():
    f = np.random.default_rng(1).normal(size=100_000).astype(np.float32) * 1e3
    f[:4] = [np.inf, -np.inf, 0.0, -0.0]
    out = np.empty(f.size, np.uint16)
    _to_bf16(f, out)
    want = torch.from_numpy(f).bfloat16().view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(out, want)


def test_float16_converts_exactly_and_rounds_as_torch_does():
    """Every float16 bit pattern to float32 (subnormals, infinities, NaN),
    and back from float32 numbers at every scale, at the float16 numbers,
    their float32 neighbours and the midpoints between them (the ties of
    round-to-nearest-even), the overflow threshold 65520 and the subnormal
    step, against torch's conversions."""
    h = np.arange(-(2**15), 2**15, dtype=np.int32).astype(np.int16)
    out = np.empty(h.size, np.float32)
    _f16_to_f32(h, out)
    want = torch.from_numpy(h.copy()).view(torch.float16).float().numpy()
    np.testing.assert_array_equal(out.view(np.int32)[~np.isnan(want)], want.view(np.int32)[~np.isnan(want)])
    assert np.isnan(out[np.isnan(want)]).all()
    finite = want[np.isfinite(want)]
    up, down = np.nextafter(finite, np.float32(np.inf)), np.nextafter(finite, -np.float32(np.inf))
    mid = np.sort(finite.astype(np.float64))
    mid = ((mid[1:] + mid[:-1]) / 2).astype(np.float32)  # exact in float32: a tie
    rng = np.random.default_rng(2)
    f = np.concatenate([finite, up, down, mid, rng.normal(size=100_000).astype(np.float32) * 10.0 ** rng.integers(-9, 6, 100_000),
                        np.array([np.inf, -np.inf, 65504, 65519.996, 65520, -65520, 2.0**-25, 2.0**-24, 3 * 2.0**-26],
                                 np.float32)])
    got = np.empty(f.size, np.int16)
    _f32_to_f16(f, got)
    np.testing.assert_array_equal(got, torch.from_numpy(f).half().view(torch.int16).numpy())
    nan = np.empty(2, np.int16)
    _f32_to_f16(np.array([np.nan, -np.nan], np.float32), nan)
    assert torch.from_numpy(nan).view(torch.float16).isnan().all()


def test_which_tensors_take_the_compiled_kernel():
    x = torch.randn(8, 5)
    assert cross_entropy_cpu.applies(x, None)
    assert cross_entropy_cpu.applies(x.bfloat16(), None)
    assert cross_entropy_cpu.applies(x.half(), None)
    assert not cross_entropy_cpu.applies(x.T, None)  # not contiguous
    assert not cross_entropy_cpu.applies(x, object())  # vocabulary shards


def test_the_switch_turns_them_off(monkeypatch):
    assert _cpu.available()
    monkeypatch.setenv("CROSSENTROPY_CPU_KERNELS", "0")
    assert not _cpu.available()
    assert not cross_entropy_cpu.applies(torch.randn(4, 3), None)


def test_inplace_backward_through_the_kernel_bumps_the_version():
    """Written through NumPy, the gradient in the logits' buffer still counts
    as an in-place change for autograd (an op that saved the logits is told)."""
    y = torch.tanh(torch.randn(4, 6).requires_grad_(True))
    loss = ce.cross_entropy(y, torch.tensor([0, 1, 2, 3]), inplace_backward=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("options", [dict(), dict(softcap=3.0), dict(label_smoothing=0.1, z_loss=1e-3),
                                     dict(softcap=2.0, label_smoothing=0.2, weight="w")])
@pytest.mark.parametrize("classes", [37, 5])  # the row kernel; the few-classes kernel (but with a soft cap)
def test_inplace_backward_gives_the_gradient_of_the_default(dtype, options, classes):
    """The kernel writing the gradient over the logits (read before written,
    the soft cap's slope included) gives what it gives into a fresh buffer:
    to a few roundings (where the buffers alias, the vectoriser may sum a row
    in another order), far below any misread logit's error."""
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(13, classes, generator=g) * 3).to(dtype)
    y = torch.randint(0, classes, (13,), generator=g)
    y[2] = -100
    kw = {k: (torch.rand(classes, generator=g) + 0.5 if v == "w" else v) for k, v in options.items()}
    a = x.clone().requires_grad_(True)
    ce.cross_entropy(a, y, **kw).backward()
    leaf = x.clone().requires_grad_(True)
    b = leaf * 1
    ce.cross_entropy(b, y, inplace_backward=True, **kw).backward()
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(leaf.grad.double(), a.grad.double(), rtol=4 * eps, atol=4 * eps * a.grad.abs().max().item())


def test_the_gradient_buffer_is_reused_only_when_nothing_holds_it():
    """The last gradient buffer serves the next call of the same shape only
    when it is garbage: a gradient the caller kept (the tensor, a view of it,
    or a graph kept with retain_graph) is never written again."""
    x = torch.randn(16, 40)
    y = torch.randint(0, 40, (16,))
    leaf = x.clone().requires_grad_(True)
    ce.cross_entropy(leaf, y).backward()
    first = leaf.grad.data_ptr()
    leaf.grad = None
    ce.cross_entropy(leaf, y).backward()
    assert leaf.grad.data_ptr() == first  # nothing held it: reused
    kept, view = leaf.grad, leaf.grad[:3]
    want, want_view = kept.clone(), view.clone()
    leaf.grad = None
    ce.cross_entropy(leaf, (y + 1) % 40).backward()
    assert torch.equal(kept, want) and torch.equal(view, want_view)
    held = ce.cross_entropy(leaf, y)  # its graph holds the kept gradient until it is freed
    other = leaf.detach().clone().requires_grad_(True)
    ce.cross_entropy(other, (y + 2) % 40).backward()
    before = other.grad.clone()
    held.backward(retain_graph=True)
    torch.testing.assert_close(other.grad, before, rtol=0, atol=0)


def test_the_reuse_switch(monkeypatch):
    """CROSSENTROPY_REUSE_GRADIENT=0: no buffer is held between calls."""
    leaf = torch.randn(8, 30).requires_grad_(True)
    y = torch.randint(0, 30, (8,))
    ce.cross_entropy(leaf, y).backward()
    assert cross_entropy_cpu._HELD  # held by default
    monkeypatch.setenv("CROSSENTROPY_REUSE_GRADIENT", "0")
    leaf.grad = None
    ce.cross_entropy(leaf, y).backward()
    assert not cross_entropy_cpu._HELD


@pytest.mark.parametrize("gamma", [0, 1, 1.5, 2, 3, 4, 5])
def test_every_power_of_the_sigmoid_focal_kernel(gamma):
    """The compiled sigmoid focal loss takes an integer gamma (0 to 4) as
    products and any other by ``pow``: each against the core in float64,
    on confident and uncertain logits, hard and soft targets."""
    g = torch.Generator().manual_seed(int(gamma * 10))
    x = torch.randn(4099, generator=g, dtype=torch.float64) * 6
    t = torch.where(torch.arange(4099) % 3 == 0, torch.rand(4099, generator=g, dtype=torch.float64),
                    (torch.rand(4099, generator=g) < 0.5).double())
    assert cross_entropy_cpu.applies(x, None)
    a = x.clone().requires_grad_(True)
    loss = ce.sigmoid_focal_loss(a, t, alpha=0.3, gamma=gamma, reduction="none")
    loss.sum().backward()
    want, grad = ce.sigmoid_focal_loss.value_and_grad(x.numpy(), t.numpy(), alpha=0.3, gamma=gamma,
                                                      reduction="none", grad_output=np.ones(4099))
    np.testing.assert_allclose(loss.detach().numpy(), want, rtol=1e-13, atol=0)
    np.testing.assert_allclose(a.grad.numpy(), grad, rtol=1e-12, atol=1e-300)


def test_the_float64_exponential_is_within_one_ulp_over_its_whole_range():
    """A million points from 0 down to ``_exp64.NORMAL_LO``, and the tiny
    arguments near 0, against the 80-bit long double ``exp``: under 1 ulp."""
    from crossentropy._cpu import _exp64

    d = np.concatenate([-np.linspace(0.0, -_exp64.NORMAL_LO, 1_000_001),
                        -np.random.default_rng(2).uniform(0, 1e-3, 10_000), [-0.0, -1e-300, -5e-324]])
    out = np.empty_like(d)
    _exp64_all(d, out)
    ref = np.exp(d.astype(np.longdouble))
    if np.finfo(np.longdouble).nmant <= 52:
        pytest.skip("long double is float64 here")
    ulps = np.abs(out.astype(np.longdouble) - ref) / np.spacing(ref.astype(np.float64))
    assert float(ulps.max()) <= 1.0, float(ulps.max())


@pytest.mark.parametrize("fn,layout", [("cross_entropy", "rows"), ("cross_entropy", "few"), ("cross_entropy", "columns"),
                                       ("focal_loss", "rows"), ("focal_loss", "columns")])
def test_numpy_kernels_recompute_outside_the_exponentials_range(fn, layout, monkeypatch):
    """float64 logits whose shifted values fall below the polynomial's range
    (subnormal and zero probabilities), and -inf: the NumPy kernels (rows,
    cross-entropy's few-classes kernel, columns) agree with the core to
    float64 rounding."""
    from crossentropy._numpy import cross_entropy as driver

    f = getattr(ce, fn)
    x = np.array([[0.0, -700.0, -707.9, -708.1, -720.0, -745.0, -800.0, -np.inf],
                  [3.0, 2.0, -705.0, -709.0, -744.5, 1.0, 0.5, -1.0]])
    y = np.array([0, 3])
    kw = dict(reduction="sum", label_smoothing=0.0 if fn == "cross_entropy" else 0.1)
    if layout == "rows":
        monkeypatch.setattr(driver, "FEW_CLASSES", 0)
    class_first = layout == "columns"
    xs, axis = (np.ascontiguousarray(x.T), {"axis": 0}) if class_first else (x, {})
    value, grad = f.value_and_grad(xs, y, **axis, **kw)
    monkeypatch.setenv("CROSSENTROPY_CPU_KERNELS", "0")
    want_value, want_grad = f.value_and_grad(xs, y, **axis, **kw)
    np.testing.assert_allclose(value, want_value, rtol=1e-14, atol=0)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-13, atol=1e-300)
    if fn == "cross_entropy":  # its gradient holds the subnormal probabilities themselves: they were compared
        assert np.any((want_grad != 0) & (np.abs(want_grad) < 2.3e-308))


def test_which_numpy_arrays_take_the_compiled_kernels(monkeypatch):
    from crossentropy import _numpy

    x = np.zeros((5, 3))
    assert _numpy.applies(x) and _numpy.applies(x.astype(np.float32))
    assert not _numpy.applies(x.astype(np.float16))  # the core, in float32
    assert not _numpy.applies(np.zeros((0, 3)))
    assert _numpy.class_first(x) is None  # class axis last: the row kernels
    assert _numpy.class_first(np.moveaxis(np.zeros((3, 5, 2)), 0, -1)).shape == (3, 10)  # axis=0: columns
    assert _numpy.class_first(np.zeros((3, 5)).T[::2]) is None  # neither layout: copied, row kernels
    monkeypatch.setenv("CROSSENTROPY_CPU_KERNELS", "0")
    assert not _numpy.applies(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("target", ["index", "probabilities"])
def test_the_few_classes_kernel_gives_what_the_row_kernel_gives(dtype, target, monkeypatch):
    """Over several blocks of rows (the last one short) on both threads, with
    every option it takes, the few-classes kernel's loss rows, gradient and
    statistics are the row kernel's to a few roundings of the dtype (it
    computes in float64 where the row kernel computes in float32), and its
    hits are the same rows'."""
    from crossentropy._cpu.columns import BLOCK
    from crossentropy._numpy import cross_entropy as driver

    g = torch.Generator().manual_seed(5)
    n, classes = 2 * BLOCK + 77, 7
    x = (torch.randn(n, classes, generator=g) * 4).to(dtype)
    x[3, 2], x[4] = float("-inf"), float("-inf")  # a class with no chance, an ignored row of no chance
    if target == "index":
        y = torch.randint(0, classes, (n,), generator=g)
        y[4] = y[900] = -100
    else:
        y = torch.softmax(torch.randn(n, classes, generator=g), 1).to(dtype)
        x[4] = 0.0
    kw = dict(weight=(torch.rand(classes, generator=g) + 0.5).to(dtype), label_smoothing=0.1, z_loss=1e-3,
              reduction="none")

    def run():
        a = x.clone().requires_grad_(True)
        loss, stats = ce.cross_entropy_with_stats(a, y, **kw)
        loss.backward(torch.linspace(0.5, 1.5, n, dtype=dtype))
        return loss.double(), a.grad.double(), stats.lse.double(), stats.accuracy

    assert driver.FEW_CLASSES >= classes
    torch.set_num_threads(2)  # (the kernel takes a second thread from 32768 logits: here one, but blocks of 512)
    got = run()
    monkeypatch.setattr(driver, "FEW_CLASSES", 0)
    want = run()
    eps = torch.finfo(dtype).eps if dtype in (torch.bfloat16, torch.float16) else torch.finfo(torch.float32).eps
    eps = 1e-14 if dtype == torch.float64 else eps
    for a, b in zip(got[:3], want[:3]):
        torch.testing.assert_close(a, b, rtol=4 * eps, atol=4 * eps * max(1.0, b.abs().max().item()))
    assert float(got[3]) == float(want[3])
