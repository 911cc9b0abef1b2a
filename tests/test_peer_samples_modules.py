"""PyTorch's ModuleInfo samples (``module_db``) for the cross-entropy family,
run against ``crossentropy.nn``.

Each sample's ``constructor_input`` builds both torch's module and ours (the
same args and kwargs; ``LinearCrossEntropyLoss``'s ``options`` becomes
``chunk_size``/``accum_dtype`` and ``out_features=()`` is dropped, both
documented; a non-empty ``out_features`` is passed as given). Our
``LinearCrossEntropyLoss`` then loads torch's ``state_dict``, so both hold the
same layer. The forward value and the gradients of every input and parameter
that requires grad (``torch.autograd.grad``, random ``grad_output``) must match
torch's, float64 to 1e-10 and float32 to 2^-17 of torch's float64 module on
the same inputs, relative to
``max(1, |expected|)``, or within twice the error of PyTorch's own float32
module on the same inputs where that is larger (a linear layer's product
that cancels: 8% of random initialisations of one float32 sample leave
PyTorch's own module off by more than 2^-17); the module's parameters are
initialised under a seed of the sample's, whatever ran before; a mean over
nothing must be exactly 0 with a zero gradient where torch gives NaN. Comparison helpers: ``test_peer_samples.py``.
"""

import copy
import warnings
import zlib

import pytest
import torch

import crossentropy.nn as cnn
from test_peer_samples import (DTYPES, RTOL, check_torch_call, ignores_into_nothing, mean_over_nothing,
                               multilabel_soft_margin_loss, as_float64, outside_our_domain, refuses, seeded, short,
                               translate_linear)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torch.testing._internal.common_modules import module_db

NAMES = ["CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss", "KLDivLoss", "LinearCrossEntropyLoss",
         "MultiLabelSoftMarginLoss"]
# MultiLabelSoftMarginLoss is BCE-with-logits averaged over classes; we have no
# module for it, so it runs as that composition of our binary_cross_entropy_with_logits.
INFOS = {m.module_cls.__name__: m for m in module_db if m.module_cls.__name__ in NAMES}
KIND = {"CrossEntropyLoss": "cross_entropy", "NLLLoss": "nll_loss", "LinearCrossEntropyLoss": "linear_cross_entropy",
        "KLDivLoss": "kl_div", "BCELoss": "binary_cross_entropy", "BCEWithLogitsLoss": "binary_cross_entropy_with_logits",
        "MultiLabelSoftMarginLoss": "multilabel_soft_margin_loss"}


class MultiLabelSoftMarginLoss(torch.nn.Module):
    def __init__(self, weight=None, reduction="mean"):
        super().__init__()
        self.register_buffer("weight", weight)
        self.reduction = reduction

    def forward(self, input, target):
        return multilabel_soft_margin_loss(input, target, self.weight, self.reduction)


def test_every_family_module_in_module_db_is_covered():
    assert set(INFOS) == set(NAMES)


def module_samples(name, dtype):
    info = INFOS[name]
    return seeded(("module", name, dtype), lambda: info.module_inputs_func(
        info, device="cpu", dtype=dtype, requires_grad=True, training=True))


def describe(s):
    ctor = [short(a) for a in s.constructor_input.args]
    ctor += [f"{k}={short(v)}" for k, v in s.constructor_input.kwargs.items()
             if k not in ("device", "dtype") and not (k == "options" and v is None)]
    fwd = [short(a) for a in s.forward_input.args]
    return f"{s.desc or 'default'}-({','.join(ctor)})-fwd({','.join(fwd)})"


PARAMS = [pytest.param(name, dtype, i, mode, id=f"{name}-{short(dtype)}-{i:03d}-{describe(s)}-{mode}")
          for name in NAMES for dtype in DTYPES for i, s in enumerate(module_samples(name, dtype))
          for mode in ["as_given"] + ["all_ignored"] * ignores_into_nothing(
              s.forward_input.args[1], {"reduction": "mean", **s.constructor_input.kwargs})]


@pytest.mark.parametrize("name,dtype,i,mode", PARAMS)
def test_module_sample(name, dtype, i, mode):
    """``all_ignored``: the sample with every target set to its ``ignore_index``."""
    s = module_samples(name, dtype)[i]
    args, kwargs = s.constructor_input.args, s.constructor_input.kwargs
    forward_args = list(s.forward_input.args)
    if mode == "all_ignored":
        forward_args[1] = torch.full_like(forward_args[1], kwargs["ignore_index"])
    ours_cls = MultiLabelSoftMarginLoss if name == "MultiLabelSoftMarginLoss" else getattr(cnn, name)
    our_kwargs = dict(kwargs)
    if name == "LinearCrossEntropyLoss":
        our_kwargs = translate_linear(kwargs)
        if our_kwargs.get("out_features") == ():
            del our_kwargs["out_features"]
    # the module's initial parameters under a seed of their own, so that the
    # result does not depend on which tests ran before (or on which worker)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(zlib.crc32(f"{name}{dtype}{i}".encode()))
        theirs_module = INFOS[name].module_cls(*args, **kwargs)

    def run(module, cast=lambda v: v):
        leaves = {f"arg{j}": cast(a.detach().clone().requires_grad_(a.requires_grad))
                  for j, a in enumerate(forward_args)}
        leaves.update({f"param {n}": p for n, p in module.named_parameters()})
        return module(*(leaves[f"arg{j}"] for j in range(len(forward_args)))), leaves

    def ours():
        module = ours_cls(*args, **our_kwargs)
        if name == "LinearCrossEntropyLoss":
            module.load_state_dict(theirs_module.state_dict())
        else:
            assert set(module.state_dict()) == set(theirs_module.state_dict())
        return run(module)

    x, target = forward_args[:2]
    if outside_our_domain(KIND[name], target, kwargs):
        return refuses(ours)
    nothing = mean_over_nothing(KIND.get(name, ""), x, target, {"reduction": "mean", **kwargs})
    peer = None
    if dtype == torch.float32:  # PyTorch's module in float32 itself, before theirs() makes it float64
        peer_module = copy.deepcopy(theirs_module)
        peer = lambda: run(peer_module)  # noqa: E731

    def theirs():  # PyTorch's module in float64 on the same inputs
        module = theirs_module.double() if dtype == torch.float32 else theirs_module
        return run(module, as_float64)

    check_torch_call(ours, theirs, RTOL[dtype], nothing, zlib.crc32(f"{name}{i}".encode()), dtype, peer)
