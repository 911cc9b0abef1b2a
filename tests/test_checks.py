"""Bad input gets a TypeError, ValueError or IndexError naming the argument and
the value, on NumPy and on torch inputs alike."""

import numpy as np
import pytest
import torch

import crossentropy as ce

X = np.random.default_rng(0).normal(size=(3, 4))
Y = np.array([0, 3, 1])
P = np.full((3, 4), 0.25)


def _both(*args, **kwargs):
    """The same call with NumPy and with torch arrays."""
    conv = lambda a: torch.from_numpy(a) if isinstance(a, np.ndarray) else a  # noqa: E731
    return [(args, kwargs), ([conv(a) for a in args], {k: conv(v) for k, v in kwargs.items()})]


BAD = [
    # (function, args, kwargs, exception, message pattern)
    (ce.cross_entropy, (X.astype(np.int64), Y), {}, TypeError, "input must have a real floating dtype"),
    (ce.cross_entropy, (np.array([["a", "b"]]), np.array([0])), {}, TypeError, "input must have a real floating"),
    (ce.cross_entropy, (X, Y.astype(float)), {}, ValueError, r"target is floating with shape \(3,\)"),
    (ce.cross_entropy, (X, np.array([0, 4, 1])), {}, IndexError, r"class index 4, outside \[0, 4\)"),
    (ce.cross_entropy, (X, np.array([0, -2, 1])), {}, IndexError, "class index -2"),
    (ce.cross_entropy, (X, np.array([0, 1])), {}, ValueError, r"target of shape \(2,\) does not match input"),
    (ce.cross_entropy, (np.array(1.0), np.array(0)), {}, ValueError, "input must have at least 1 dimension"),
    (ce.cross_entropy, (X, Y), dict(reduction="avg"), ValueError, "reduction='avg' is not one of"),
    (ce.cross_entropy, (X, Y), dict(label_smoothing=1.5), ValueError, r"label_smoothing=1.5 must be in \[0.0, 1.0\]"),
    (ce.cross_entropy, (X, Y), dict(label_smoothing=-0.1), ValueError, "label_smoothing=-0.1"),
    (ce.cross_entropy, (X, Y), dict(z_loss=-1.0), ValueError, "z_loss=-1.0 must be >= 0"),
    (ce.cross_entropy, (X, Y), dict(softcap=0.0), ValueError, "softcap=0.0 must be > 0"),
    (ce.cross_entropy, (X, Y), dict(softcap=-3.0), ValueError, "softcap=-3.0"),
    (ce.cross_entropy, (X, Y), dict(weight=np.ones(3)), ValueError, r"weight must be a 1-D .* length C=4, got shape \(3,\)"),
    (ce.cross_entropy, (X, P), dict(ignore_index=0), ValueError, "ignore_index=0 cannot be used with probability"),
    (ce.cross_entropy, (X, Y), dict(axis=2), ValueError, "axis=2 is out of range"),
    (ce.cross_entropy, (X, Y), dict(ignore_index=1.5), TypeError, "ignore_index=1.5 must be an integer"),
    (ce.cross_entropy, (X, P.astype(np.int64)), {}, TypeError, "read as class probabilities and must be floating"),
    (ce.focal_loss, (X, Y), dict(gamma=-1.0), ValueError, "gamma=-1.0 must be >= 0"),
    (ce.focal_loss, (X, np.array([0, 9, 1])), {}, IndexError, "class index 9"),
    (ce.nll_loss, (X, P), {}, ValueError, "this loss takes class indices"),
    (ce.binary_cross_entropy, (np.array([0.5, 1.2]), np.array([1.0, 0.0])), {}, ValueError,
     r"input contains 1.2.*\[0, 1.0\]"),
    (ce.binary_cross_entropy, (np.array([0.5, -0.2]), np.array([1.0, 0.0])), {}, ValueError, "input contains -0.2"),
    (ce.binary_cross_entropy, (np.array([0.5, np.nan]), np.array([1.0, 0.0])), {}, ValueError, "input contains NaN"),
    (ce.binary_cross_entropy, (np.array([0.5, 0.5]), np.array([1.0, 0.0, 1.0])), {}, ValueError,
     r"target has shape \(3,\) but input has shape \(2,\)"),
    (ce.binary_cross_entropy_with_logits, (X, P[:2]), {}, ValueError, r"target has shape \(2, 4\)"),
    (ce.binary_cross_entropy_with_logits, (X, P), dict(pos_weight=np.ones(3)), ValueError,
     r"pos_weight of shape \(3,\) does not broadcast to \(3, 4\)"),
    (ce.binary_cross_entropy_with_logits, (X, P), dict(reduction="batchmean"), ValueError, "reduction='batchmean'"),
    (ce.sigmoid_focal_loss, (X, P), dict(gamma=-0.5), ValueError, "gamma=-0.5"),
    (ce.sigmoid_focal_loss, (X, P), dict(alpha=1.5), ValueError, "alpha=1.5"),
    (ce.entropy, (np.array([0.5, np.nan]),), {}, ValueError, "p contains NaN"),
    (ce.entropy, (np.array([1.5, -0.5]),), {}, ValueError, "p contains -0.5"),
    (ce.kl_divergence, (P, P[:2]), {}, ValueError, r"q has shape \(2, 4\) but p has shape \(3, 4\)"),
    (ce.kl_divergence, (P, -P), {}, ValueError, "q contains -0.25"),
    (ce.js_divergence, (P, np.full((3, 4), np.nan)), {}, ValueError, "q contains NaN"),
    (ce.kl_div, (X, P), dict(reduction="avg"), ValueError, "reduction='avg'"),
    (ce.kl_div, (X, P[:, :3]), {}, ValueError, r"target of shape \(3, 3\) does not broadcast"),
    (ce.softmax, (X.astype(np.int32),), {}, TypeError, "x must have a real floating dtype"),
    (ce.softmax, (X,), dict(axis=5), ValueError, "axis=5 is out of range"),
]


@pytest.mark.parametrize("f,args,kwargs,exc,pattern", BAD, ids=lambda v: getattr(v, "__name__", None))
def test_bad_input_gets_a_clear_error(f, args, kwargs, exc, pattern):
    calls = _both(*args, **kwargs) if args[0].dtype.kind != "U" else [(args, kwargs)]
    for a, kw in calls:
        with pytest.raises(exc, match=pattern):
            f(*a, **kw)
        if hasattr(f, "value_and_grad"):
            with pytest.raises(exc, match=pattern):
                f.value_and_grad(*a, **kw)


def test_mixed_array_libraries_are_refused():
    with pytest.raises(TypeError, match="target is a numpy.ndarray but input is a torch.Tensor"):
        ce.cross_entropy(torch.from_numpy(X), Y)
    with pytest.raises(TypeError, match="weight is a torch.Tensor but input is a numpy.ndarray"):
        ce.cross_entropy(X, Y, weight=torch.ones(4))


def test_non_arrays_are_refused():
    with pytest.raises(TypeError, match="input must be an array"):
        ce.cross_entropy([[0.0, 1.0]], [1])


def test_grad_output_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"grad_output has shape \(2,\) but the value has shape \(3,\)"):
        ce.cross_entropy.value_and_grad(X, Y, reduction="none", grad_output=np.ones(2))
    with pytest.raises(ValueError, match=r"grad_output has shape \(3,\) but the value has shape \(\)"):
        ce.cross_entropy.value_and_grad(X, Y, grad_output=np.ones(3))


def test_sequences_are_accepted_for_weights():
    a = ce.cross_entropy(X, Y, weight=[1.0, 2.0, 3.0, 4.0])
    b = ce.cross_entropy(X, Y, weight=np.array([1.0, 2.0, 3.0, 4.0]))
    assert a == b


def test_error_text_names_ranges_in_words():
    """Error text printed [None, 1.0] and [0, inf] ranges."""
    for call in (lambda: ce.sigmoid_focal_loss(X, P, alpha=1.5), lambda: ce.entropy(np.array([0.5, np.nan])),
                 lambda: ce.cross_entropy(X, Y, z_loss=-1.0), lambda: ce.binary_cross_entropy(P, P * 5)):
        with pytest.raises(ValueError) as info:
            call()
        assert "None" not in str(info.value) and "inf]" not in str(info.value), str(info.value)
    with pytest.raises(ValueError, match=r"alpha=1.5 must be <= 1.0"):
        ce.sigmoid_focal_loss(X, P, alpha=1.5)


@pytest.mark.parametrize("f,kwargs", [
    (ce.cross_entropy, {}), (ce.cross_entropy, dict(label_smoothing=0.1)), (ce.focal_loss, {})],
    ids=lambda v: getattr(v, "__name__", str(v)))
def test_probability_targets_outside_0_1_are_refused(f, kwargs):
    """A probability target outside [0, 1] (or NaN) is refused, on CPU; the README says so."""
    for bad in (P * 5, P - 0.5, np.where(P > 0.2, np.nan, P)):
        for make in (np.array, torch.from_numpy):
            with pytest.raises(ValueError, match="target contains"):
                f(make(X), make(bad), **kwargs)


def test_options_are_checked_once_for_every_entry_point():
    """One validation of the cross-entropy options: the function, its kernel,
    linear and the module say the same words."""
    import crossentropy.nn as cnn

    x, t = torch.from_numpy(X), torch.from_numpy(Y)
    calls = [lambda: ce.cross_entropy(X, Y, label_smoothing=2.0), lambda: ce.cross_entropy(x, t, label_smoothing=2.0),
             lambda: ce.linear_cross_entropy(x, torch.eye(4, dtype=x.dtype), t, label_smoothing=2.0),
             lambda: cnn.CrossEntropyLoss(label_smoothing=2.0), lambda: cnn.FocalLoss(label_smoothing=2.0),
             lambda: cnn.LinearCrossEntropyLoss(4, 4, label_smoothing=2.0)]
    for call in calls:
        with pytest.raises(ValueError, match=r"^label_smoothing=2.0 must be in \[0.0, 1.0\]$"):
            call()


def test_remembered_options_are_the_checked_ones():
    """Options already checked are remembered by value and type: a good call
    first changes no later verdict (True is not 1, a string is not a number,
    an unhashable or NaN argument is still refused by name)."""
    from crossentropy import _checks

    x, t = torch.from_numpy(X), torch.from_numpy(Y)
    for _ in range(2):  # the second round finds the first one's options remembered
        assert float(ce.cross_entropy(x, t, ignore_index=1)) == float(ce.cross_entropy.reference(x, t, ignore_index=1))
        for kwargs, exc, pattern in [(dict(ignore_index=True), TypeError, "ignore_index=True must be an integer"),
                                     (dict(label_smoothing="0"), TypeError, "label_smoothing='0' must be a real"),
                                     (dict(z_loss=[0.0]), TypeError, r"z_loss=\[0.0\] must be a real"),
                                     (dict(z_loss=float("nan")), ValueError, "z_loss=nan must not be NaN")]:
            with pytest.raises(exc, match=pattern):
                ce.cross_entropy(x, t, **kwargs)
    assert _checks.cross_entropy_options(ignore_index=1) is _checks.cross_entropy_options(ignore_index=1)
    assert _checks.cross_entropy_options(label_smoothing=0) == _checks.cross_entropy_options(label_smoothing=0.0)


@pytest.mark.parametrize("make", [np.asarray, torch.from_numpy], ids=["numpy", "torch"])
def test_an_ignore_index_among_the_classes_still_masks_its_rows(make):
    """Targets all in [0, C) skip the mask only when ignore_index lies outside
    it: with ignore_index=0 the rows whose target is 0 are left out."""
    x, t = make(X), make(Y)
    keep = Y != 0
    assert keep.any() and not keep.all()
    got = ce.cross_entropy(x, t, ignore_index=0, reduction="none")
    want = ce.cross_entropy(x, t, reduction="none")
    np.testing.assert_array_equal(np.asarray(got)[~keep], 0)
    np.testing.assert_allclose(np.asarray(got)[keep], np.asarray(want)[keep], rtol=1e-6)
    mean = ce.cross_entropy(x, t, ignore_index=0)
    np.testing.assert_allclose(float(mean), float(np.asarray(want)[keep].mean()), rtol=1e-6)
