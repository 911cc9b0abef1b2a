"""The forward that ``crossentropy.integrations.transformers.apply`` puts on a
causal LM: the model's own forward with ``lm_head`` answering a meta tensor,
then the loss by :func:`crossentropy.linear_cross_entropy` from what the head
received (``transformers.py`` says why and what is checked)."""

from __future__ import annotations

import dataclasses
import inspect
import math
import types

import crossentropy as ce

STATE = "_crossentropy_forward"  # apply()'s state, on the model
ABSENT = object()  # "the instance had no such attribute"


def forward(self, *args, **kwargs):
    """The model's forward; with ``labels``, the loss by
    ``crossentropy.linear_cross_entropy`` from the hidden states that
    ``lm_head`` receives, and no logits unless ``return_logits``."""
    import torch
    from transformers.utils import ModelOutput

    original = original_forward(self)
    sig = inspect.signature(original)
    bound = sig.bind(*args, **kwargs)
    call = {}
    for name, value in bound.arguments.items():
        if sig.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            call.update(value)
        else:
            call[name] = value
    labels = call.pop("labels", None)
    if labels is None:
        return original(*args, **kwargs)
    state = self.__dict__[STATE]
    want_dict = call.pop("return_dict", None)
    if want_dict is None:
        want_dict = getattr(self.config, "return_dict", True)
    if not want_dict:
        call["return_dict"] = True  # made a tuple below, once the fields are set

    # The original forward, with lm_head answering a meta tensor of the
    # logits' shape: it costs nothing, and what the forward does to it shows
    # whether the logits reach the loss as lm_head makes them.
    head = self.lm_head
    seen = []

    def capture(h):
        seen.append(h)
        seen.append(torch.empty((*h.shape[:-1], head.out_features), dtype=h.dtype, device="meta"))
        return seen[-1]

    own_forward = head.__dict__.get("forward", ABSENT)
    head.forward = capture
    try:
        out = original(**call)
    finally:
        restore(head, "forward", own_forward)
    name = type(self).__name__
    if len(seen) != 2 or not isinstance(out, ModelOutput) or "logits" not in field_names(out):
        raise ValueError(f"{name} does not follow the lm_head(hidden_states) + loss_function pattern "
                         f"(lm_head called {len(seen) // 2} times, output {type(out).__name__}); "
                         "crossentropy.integrations.transformers.unapply(model) restores it")
    h, placeholder = seen
    cap = getattr(self.config, "final_logit_softcapping", None)
    if out.logits is placeholder:
        cap = None
    elif cap is None or not (out.logits.is_meta and out.logits.shape == placeholder.shape):
        raise ValueError(f"{name} changes the logits between lm_head and its loss in a way that "
                         "crossentropy.integrations.transformers does not know (it knows the config's "
                         "final_logit_softcapping); unapply(model) restores it")

    lm_loss = loss(h, head, labels, call, cap, state["chunk_size"])
    logits = None
    if state["return_logits"]:
        logits = head(h)
        if cap is not None:  # Gemma 2/3: cap * tanh(logits / cap)
            logits = torch.tanh(logits / cap) * cap
    fields = {f: getattr(out, f) for f in field_names(out)}
    result = type(out)(**{**fields, "loss": lm_loss, "logits": logits})
    return result if want_dict else result.to_tuple()


def loss(h, head, labels, call, cap, chunk_size):
    """transformers' causal-LM loss of ``lm_head(h)`` (soft-capped by ``cap``)
    by ``linear_cross_entropy``, in float32."""
    import torch

    W, b = head.weight, head.bias
    kind = h.device.type
    if torch.is_autocast_enabled(kind):  # what nn.Linear would compute under autocast
        dt = torch.get_autocast_dtype(kind)
        h, W, b = h.to(dt), W.to(dt), None if b is None else b.to(dt)
    target, shift = labels, True
    if call.get("shift_labels") is not None:  # already shifted, as ForCausalLMLoss accepts them
        target, shift = call["shift_labels"], False
    target = target.to(h.device)
    rows = tuple(h.shape[:-1])
    if tuple(target.shape) != rows:
        # transformers flattens the shifted labels and the logits; so do we,
        # keeping the labels' last axis as the one to shift along
        if target.numel() != math.prod(rows):
            raise ValueError(f"labels of shape {tuple(target.shape)} do not match the {rows} positions that "
                             f"lm_head sees (logits_to_keep={call.get('logits_to_keep', 0)!r})")
        h = h.reshape(*target.shape, h.shape[-1])
    value = ce.linear_cross_entropy(h, W, target, linear_bias=b, ignore_index=call.get("ignore_index", -100),
                                    softcap=cap, shift=shift, num_items_in_batch=call.get("num_items_in_batch"),
                                    chunk_size=chunk_size)
    return value.float()


def original_forward(model):
    """The forward ``apply`` wraps: the instance's own (accelerate's hooks set
    one) or the class's, bound to ``model``."""
    state = model.__dict__.get(STATE)
    own = model.__dict__.get("forward") if state is None else state["original"]
    return own if own is not None else types.MethodType(type(model).forward, model)


def restore(obj, attr, value):
    """Put back an instance attribute as it was (``ABSENT``: not set on the instance)."""
    if value is ABSENT:
        obj.__dict__.pop(attr, None)
    else:
        setattr(obj, attr, value)


def field_names(output):
    return [f.name for f in dataclasses.fields(output)]
