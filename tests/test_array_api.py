"""Array kinds and the dtype policy: array-api-strict arrays through the
registry, NumPy float16/float32 kept, autocast inputs, extreme logits finite
in every dtype."""

import warnings

import array_api_strict as xps
import numpy as np
import pytest
import torch

import crossentropy as ce
from conftest import assert_close
from crossentropy.cases import CASES

# One case in five of the registry keeps the run short while covering every function.
STRICT_CASES = CASES[::5]


def _strict(a):
    return xps.asarray(a) if isinstance(a, np.ndarray) else a


@pytest.mark.parametrize("case", STRICT_CASES, ids=repr)
def test_array_api_strict_matches_numpy(case):
    args, kwargs = case.make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # kl_div's "mean" warning
        want_v, want_g = case.function.value_and_grad(*args, **kwargs)
        sargs = [_strict(a) for a in args]
        skw = {k: _strict(v) for k, v in kwargs.items()}
        got = case.function(*sargs, **skw)
        got_v, got_g = case.function.value_and_grad(*sargs, **skw)
    assert type(got).__module__.startswith("array_api_strict")
    assert type(got_g).__module__.startswith("array_api_strict")
    assert_close(np.asarray(got), want_v, rtol=1e-13)
    assert_close(np.asarray(got_v), want_v, rtol=1e-13)
    if "value-only" not in case.tags:
        assert_close(np.asarray(got_g), want_g, rtol=1e-13)


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
