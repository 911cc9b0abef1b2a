"""Hugging Face transformers causal language models on this library's losses.

``apply(model)`` makes a ``*ForCausalLM`` model's forward with ``labels``
compute the loss from the final hidden states and ``lm_head.weight`` with
:func:`crossentropy.linear_cross_entropy` (``shift=True``), so that the
``(B, T, V)`` logits are never held, neither in the forward pass nor in
its backward. ``use_fused_loss(model)`` only swaps ``model.loss_function``
for the fused :func:`crossentropy.cross_entropy` (the logits are kept).
``unapply(model)`` undoes either.

Which models: any transformers 5.x causal LM whose forward follows the
pattern ``h = base_model(...)``, ``logits = self.lm_head(h)`` (after
``logits_to_keep``), optionally Gemma's soft cap, then
``self.loss_function(logits, labels, ...)``. That is detected from the model,
not from a list of classes: ``apply`` checks the structure (a plain
``nn.Linear`` ``lm_head``, the base model at ``model.base_model_prefix``, a
forward taking ``labels`` and ``logits_to_keep``, the causal-LM loss), and
the first forward with labels checks the behaviour: the original forward runs
with ``lm_head`` answering a *meta* tensor (free, no memory), which records
the head's input; the logits the forward then returns must be that meta
tensor itself, or, where the config has ``final_logit_softcapping``, a meta
tensor derived from it. A model that does anything else to its logits (a
``logit_scale``, say) raises ``ValueError`` naming its class instead of
training on a wrong loss.

The rest of the forward is the model's own: the base model gets every
argument it would get, the output has the model's class, its
``past_key_values`` (``cache``), hidden states and attentions; with labels,
``logits`` is ``None`` unless ``apply(model, return_logits=True)``.

``Trainer`` passes ``num_items_in_batch`` (the count of counted targets over
all gradient-accumulation steps) only to a model whose ``accepts_loss_kwargs``
is true or whose forward takes ``**kwargs``; ``apply`` and ``use_fused_loss``
set ``model.accepts_loss_kwargs = True``, so create the ``Trainer`` after
calling them. The loss is returned in float32, as transformers' own; in
bfloat16 or float16 its value has been rounded to that dtype first (the
library returns the input's dtype; the gradients are accumulated in float32).
"""

from __future__ import annotations

import inspect
import types

import crossentropy as ce

from ._causal_lm import ABSENT as _ABSENT
from ._causal_lm import STATE as _FORWARD
from ._causal_lm import forward as _forward
from ._causal_lm import original_forward as _original_forward
from ._causal_lm import restore as _restore

__all__ = ["apply", "unapply", "use_fused_loss"]

_LOSS = "_crossentropy_loss"  # the state of use_fused_loss(), on the model
_ACCEPTS = "_crossentropy_accepts"  # the model's own accepts_loss_kwargs, while either is applied


def apply(model, *, return_logits=False, chunk_size=None):
    """Patch ``model`` (a transformers ``PreTrainedModel`` causal LM) in place
    so that its forward with ``labels`` computes the loss with
    :func:`crossentropy.linear_cross_entropy`; returns ``model``.

    The loss is transformers' causal-LM loss: labels shifted by one,
    ``ignore_index=-100`` (or the ``ignore_index`` passed to the forward),
    pre-shifted ``shift_labels`` if given, divided by ``num_items_in_batch``
    when given and by the count of counted targets otherwise, the config's
    ``final_logit_softcapping`` applied to the logits, ``lm_head``'s bias if
    it has one, and tied embeddings (the head's weight is the embedding's
    tensor, so its gradient reaches the embedding). Without ``labels`` the
    forward is the model's own. With ``labels``, the output's ``logits`` is
    ``None`` unless ``return_logits`` (they are then computed too, which
    costs their memory again). ``chunk_size``: rows of hidden states a
    chunk of ``linear_cross_entropy`` (default below).

    The default chunk is ``linear_cross_entropy``'s own,
    ``max(ceil(N / ceil(V / H)), min(512, 2**26 // V))`` rows (``N``
    positions, ``H`` hidden size): 512 rows at V = 128256, H = 512, where
    the step took 0.93x the unpatched one's time for 0.25x its extra peak
    memory on this project's CPU (``benchmarks/bench_transformers.py``,
    ``BENCHMARKS.md``).

    Raises ``TypeError`` for a model that is not a ``PreTrainedModel`` or
    whose ``lm_head`` is not a plain ``torch.nn.Linear``, and ``ValueError``
    for one that is not a causal LM of that pattern, each naming its class.
    Calling it again replaces the options.
    """
    _check_causal_lm(model, "apply")
    _check_head_pattern(model)
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size={chunk_size!r} must be None or an integer >= 1")
    if _FORWARD in model.__dict__:
        _restore_forward(model)
    model.__dict__[_FORWARD] = {
        "original": model.__dict__.get("forward"),  # an instance forward (accelerate's hooks), or None
        "return_logits": bool(return_logits),
        "chunk_size": chunk_size,
    }
    # The patched forward shows the original's signature, which generate()
    # and Trainer read (``logits_to_keep``, the model's argument names).
    sig = inspect.signature(_original_forward(model))
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)

    def forward(self, *args, **kwargs):
        return _forward(self, *args, **kwargs)

    forward.__signature__ = sig.replace(parameters=[self_param, *sig.parameters.values()])
    forward.__doc__ = _forward.__doc__
    # A bound method on the instance (copy.deepcopy rebinds it to the copy).
    model.forward = types.MethodType(forward, model)
    _claim_loss_kwargs(model)
    return model


def use_fused_loss(model):
    """Swap only ``model.loss_function`` for the causal-LM loss on the fused
    :func:`crossentropy.cross_entropy` (the logits are made and kept as the
    model makes them; the loss's own copies are not); returns ``model``."""
    _check_causal_lm(model, "use_fused_loss")
    if _LOSS not in model.__dict__:
        model.__dict__[_LOSS] = model.__dict__.get("_loss_function", _ABSENT)
        model.loss_function = causal_lm_loss
        _claim_loss_kwargs(model)
    return model


def unapply(model):
    """Undo :func:`apply` and :func:`use_fused_loss` on ``model`` (either, both
    or neither applied); returns ``model``."""
    if _FORWARD in model.__dict__:
        _restore_forward(model)
    if _LOSS in model.__dict__:
        _restore(model, "_loss_function", model.__dict__.pop(_LOSS))
    if _ACCEPTS in model.__dict__:
        _restore(model, "accepts_loss_kwargs", model.__dict__.pop(_ACCEPTS))
    return model


def causal_lm_loss(logits, labels, vocab_size, num_items_in_batch=None, ignore_index=-100, shift_labels=None,
                   **kwargs):
    """transformers' ``ForCausalLMLoss`` (same arguments, same value) on the
    fused :func:`crossentropy.cross_entropy`: labels shifted by one unless
    ``shift_labels`` is given, the sum divided by ``num_items_in_batch`` when
    given, else the mean; returned in float32. Other keyword arguments are
    ignored, as there."""
    import torch

    if shift_labels is None:
        shift_labels = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    loss = ce.cross_entropy(logits.reshape(-1, vocab_size), shift_labels.reshape(-1).to(logits.device),
                            ignore_index=ignore_index, num_items_in_batch=num_items_in_batch)
    return loss.float()


# ---------------------------------------------------------------------------
# detection and state
# ---------------------------------------------------------------------------


def _check_causal_lm(model, what):
    """A transformers model whose loss is the causal-LM cross-entropy, or the error naming its class."""
    from transformers import PreTrainedModel
    from transformers.loss.loss_utils import ForCausalLMLoss

    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"{what} needs a transformers PreTrainedModel (a *ForCausalLM model), got "
                        f"{type(model).__qualname__}")
    name = type(model).__name__
    if getattr(model.config, "is_encoder_decoder", False):
        raise ValueError(f"{name} is an encoder-decoder model; {what} supports causal language models only")
    loss = model.loss_function
    if loss is not ForCausalLMLoss and loss is not causal_lm_loss:
        raise ValueError(f"{name}'s loss_function is {getattr(loss, '__name__', loss)!r}, not the causal-LM "
                         f"cross-entropy ForCausalLMLoss; {what} supports causal language models only")


def _check_head_pattern(model):
    """The structure ``apply`` relies on, or the error naming the class."""
    import torch

    name = type(model).__name__
    head = getattr(model, "lm_head", None)
    if head is None:
        raise ValueError(f"{name} has no lm_head; apply supports causal LMs whose logits are lm_head(hidden_states)")
    if type(head) is not torch.nn.Linear:
        raise TypeError(f"{name}.lm_head is a {type(head).__qualname__}, not a plain torch.nn.Linear; apply "
                        "computes the loss from lm_head.weight and lm_head.bias, so it supports only that "
                        "(use_fused_loss works with any head)")
    prefix = getattr(model, "base_model_prefix", "")
    if not isinstance(getattr(model, prefix, None) if prefix else None, torch.nn.Module):
        raise ValueError(f"{name} has no base model at base_model_prefix={prefix!r}")
    params = inspect.signature(_original_forward(model)).parameters
    missing = [p for p in ("labels", "logits_to_keep") if p not in params]
    if missing or any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params.values()):
        raise ValueError(f"{name}.forward takes no {' or '.join(missing) or '*args'} argument; apply supports "
                         "causal LMs whose forward takes labels and logits_to_keep")


def _restore_forward(model):
    state = model.__dict__.pop(_FORWARD)
    _restore(model, "forward", _ABSENT if state["original"] is None else state["original"])


def _claim_loss_kwargs(model):
    """``model.accepts_loss_kwargs = True``, so that ``Trainer`` passes
    ``num_items_in_batch``; the value it had is kept for ``unapply``."""
    if _ACCEPTS not in model.__dict__:
        model.__dict__[_ACCEPTS] = model.__dict__.get("accepts_loss_kwargs", _ABSENT)
    model.accepts_loss_kwargs = True
