"""crossentropy.integrations.transformers against the unpatched Hugging Face models.

Every model is a tiny random one built from its config (no download), on CPU.
The reference is the same model unpatched: its loss, every parameter's
gradient, the parameters after Trainer steps, generate()'s tokens.

Tolerances. float32: the patched loss is the same sum of the same logits in
another order (chunks of rows), so the loss agrees to 1e-5 relative and each
gradient to 1e-5 of its tensor's largest entry (the measured differences are
about 5e-7). bfloat16: transformers computes the loss in float32 from the
bfloat16 logits; linear_cross_entropy computes it from the same bfloat16
logits but returns it in bfloat16, one rounding of the value: at most 2**-8
relative (half a unit in the last place of a bfloat16 with 8 significant
bits). The gradients of a bfloat16 model are dominated by the base model's
own bfloat16 backward (about 1e-2 of each tensor's largest entry away from
float64, patched or not, measured); where the two paths round the logit
gradient differently (ours keeps it in float32 for dW, transformers rounds it
to bfloat16 first), that difference is carried back through every layer. So
in bfloat16 each gradient must agree with transformers' to 2**-5 of its
tensor's largest entry, and, the stronger check, be no further from the
float64 model's than transformers' own bfloat16 gradients are (times 1.25).
"""

import copy
import inspect
import subprocess
import sys

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from crossentropy.integrations import transformers as cet  # noqa: E402

V = 160
_COMMON = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
               num_key_value_heads=2)
MODELS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", _COMMON),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", _COMMON),
    "mistral": ("MistralConfig", "MistralForCausalLM", _COMMON),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(_COMMON, head_dim=8, final_logit_softcapping=3.0)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(vocab_size=V, n_embd=32, n_layer=1, n_head=4, n_positions=64,
                                                   resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                                   bos_token_id=0, eos_token_id=0)),
}


def _model(kind, dtype=torch.float32, seed=0):
    config_name, model_name, kw = MODELS[kind]
    torch.manual_seed(seed)
    config = getattr(transformers, config_name)(**kw)
    return getattr(transformers, model_name)(config).to(dtype)


def _batch(seed=0, B=3, T=11):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (B, T), generator=g)
    labels = ids.clone()
    labels[0, :4] = -100  # a prompt that does not count
    labels[1, -2:] = -100  # padding
    return ids, labels


def _loss_and_grads(model, **inputs):
    model.zero_grad(set_to_none=True)
    out = model(**inputs)
    out.loss.backward()
    return out, {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _rel(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_loss_and_every_gradient_match_the_unpatched_model(kind, dtype):
    model = _model(kind, dtype)
    ids, labels = _batch()
    ref, ref_grads = _loss_and_grads(model, input_ids=ids, labels=labels)
    cet.apply(model)
    out, grads = _loss_and_grads(model, input_ids=ids, labels=labels)
    assert type(out) is type(ref) and out.loss.dtype == ref.loss.dtype == torch.float32
    assert out.logits is None
    assert grads.keys() == ref_grads.keys()
    if dtype == torch.float32:
        torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=0)
        for name, g in grads.items():
            assert _rel(g, ref_grads[name]) <= 1e-5, name
        return
    torch.testing.assert_close(out.loss, ref.loss, rtol=2**-8, atol=0)
    for name, g in grads.items():
        assert _rel(g, ref_grads[name]) <= 2**-5, name
    exact = copy.deepcopy(cet.unapply(model)).to(torch.float64)
    _, exact_grads = _loss_and_grads(exact, input_ids=ids, labels=labels)
    ours = max(_rel(grads[n], exact_grads[n]) for n in grads)
    theirs = max(_rel(ref_grads[n], exact_grads[n]) for n in grads)
    assert ours <= 1.25 * theirs, (ours, theirs)


def test_under_autocast_as_lm_head_computes_there():
    # Trainer(bf16=True) runs a float32 model under autocast: lm_head's
    # product is bfloat16 there, and so is ours (the same 2**-8 as above)
    model = _model("llama")
    ids, labels = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = model(input_ids=ids, labels=labels).loss
        out = cet.apply(model)(input_ids=ids, labels=labels).loss
    out.backward()
    torch.testing.assert_close(out, ref, rtol=2**-8, atol=0)
    assert model.lm_head.weight.grad.dtype == torch.float32


def test_tied_embeddings_get_the_head_gradient():
    model = cet.apply(_model("gpt2"))
    assert model.lm_head.weight is model.transformer.wte.weight
    ids, labels = _batch()
    _, grads = _loss_and_grads(model, input_ids=ids, labels=labels)
    cet.unapply(model)
    _, ref_grads = _loss_and_grads(model, input_ids=ids, labels=labels)
    assert _rel(grads["transformer.wte.weight"], ref_grads["transformer.wte.weight"]) <= 1e-5


def test_a_head_with_a_bias():
    model = _model("llama")
    model.lm_head = torch.nn.Linear(32, V, bias=True)
    ids, labels = _batch()
    ref, ref_grads = _loss_and_grads(model, input_ids=ids, labels=labels)
    out, grads = _loss_and_grads(cet.apply(model), input_ids=ids, labels=labels)
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=0)
    assert _rel(grads["lm_head.bias"], ref_grads["lm_head.bias"]) <= 1e-5


@pytest.mark.parametrize("kind", ["llama", "gemma2"])
def test_logits_only_with_return_logits_and_untouched_without_labels(kind):
    model = _model(kind)
    ids, labels = _batch()
    with torch.no_grad():
        ref = model(input_ids=ids, labels=labels)
        plain = model(input_ids=ids).logits
        cet.apply(model)
        assert model(input_ids=ids, labels=labels).logits is None
        torch.testing.assert_close(model(input_ids=ids).logits, plain, rtol=0, atol=0)
        out = cet.apply(model, return_logits=True)(input_ids=ids, labels=labels)
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=0)  # soft-capped the same way for Gemma 2
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=0)
    assert out.past_key_values is not None and out.past_key_values is not ref.past_key_values


def test_outputs_hidden_states_attentions_and_tuples_as_the_model_gives_them():
    model = _model("llama").eval()
    ids, labels = _batch()
    kw = dict(input_ids=ids, labels=labels, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        ref = model(**kw)
        ref_tuple = model(**kw, return_dict=False)
        cet.apply(model)
        out = model(**kw)
        # positional arguments bind as the model's own forward binds them
        positional = model(ids, None, None, None, None, labels)
        tup = model(**kw, return_dict=False)
    for a, b in zip(out.hidden_states, ref.hidden_states, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(out.attentions, ref.attentions, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(positional.loss, ref.loss, rtol=1e-5, atol=0)
    # a tuple skips None fields, as transformers' own: the loss, then (no logits) the cache
    assert isinstance(tup, tuple) and len(tup) == len(ref_tuple) - 1
    torch.testing.assert_close(tup[0], ref_tuple[0], rtol=1e-5, atol=0)


def test_logits_to_keep():
    model = _model("qwen2")
    ids, labels = _batch()
    with torch.no_grad():
        ref = model(input_ids=ids, labels=labels[:, -5:], logits_to_keep=5).loss
        mask = torch.zeros(ids.shape, dtype=torch.bool)
        mask[:, 2:9] = True
        ref_mask = model(input_ids=ids, labels=labels[mask], logits_to_keep=mask).loss
        cet.apply(model)
        assert model(input_ids=ids, logits_to_keep=1).logits.shape == (3, 1, V)
        out = model(input_ids=ids, labels=labels[:, -5:], logits_to_keep=5).loss
        out_mask = model(input_ids=ids, labels=labels[mask], logits_to_keep=mask).loss
        with pytest.raises(ValueError, match=r"labels of shape \(3, 11\) do not match the \(3, 5\) positions"):
            model(input_ids=ids, labels=labels, logits_to_keep=5)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=0)
    torch.testing.assert_close(out_mask, ref_mask, rtol=1e-5, atol=0)


def test_num_items_in_batch_shift_labels_and_ignore_index():
    model = _model("mistral")
    ids, labels = _batch()
    counted = int((labels[:, 1:] != -100).sum())
    shifted = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:].contiguous()
    calls = [dict(labels=labels, num_items_in_batch=torch.tensor(4 * counted)),
             dict(labels=labels, num_items_in_batch=7),
             dict(labels=labels, shift_labels=shifted),
             dict(labels=torch.where(labels == -100, -1, labels), ignore_index=-1)]
    with torch.no_grad():
        refs = [model(input_ids=ids, **kw).loss for kw in calls]
        cet.apply(model)
        outs = [model(input_ids=ids, **kw).loss for kw in calls]
    for out, ref in zip(outs, refs):
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=0)
    # the sum over counted targets divided by num_items_in_batch, not a mean
    torch.testing.assert_close(outs[0] * 4, refs[2], rtol=1e-5, atol=0)


def test_chunk_size():
    model = _model("llama")
    ids, labels = _batch()
    with torch.no_grad():
        ref = model(input_ids=ids, labels=labels).loss
        for chunk in (1, 7, 10_000):  # rows of hidden states a chunk, fewer and more than the 30 rows
            torch.testing.assert_close(cet.apply(model, chunk_size=chunk)(input_ids=ids, labels=labels).loss, ref,
                                       rtol=1e-5, atol=0)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match=f"chunk_size={bad!r} must be None or an integer >= 1"):
            cet.apply(model, chunk_size=bad)


def _trainer_params(model, data, tmp_path):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=2, gradient_accumulation_steps=4, max_steps=2,
        learning_rate=0.5, optim="sgd", lr_scheduler_type="constant", weight_decay=0.0, use_cpu=True,
        report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0,
        dataloader_num_workers=0, remove_unused_columns=False)
    transformers.Trainer(model=model, args=args, train_dataset=data).train()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_trainer_with_gradient_accumulation_gives_the_unpatched_parameters(tmp_path):
    # micro-batches with very different counts of counted targets, where
    # dividing each by its own count (num_items_in_batch not passed) would
    # give other parameters than dividing by the count of all four
    g = torch.Generator().manual_seed(1)
    data = []
    for i in range(16):
        ids = torch.randint(0, V, (12,), generator=g)
        labels = ids.clone()
        labels[: (i * 5) % 11] = -100
        data.append({"input_ids": ids, "labels": labels})
    ref = _trainer_params(_model("llama"), data, tmp_path / "ref")
    patched = cet.apply(_model("llama"))
    ours = _trainer_params(patched, data, tmp_path / "ours")
    assert patched.accepts_loss_kwargs is True
    start = {n: p.detach() for n, p in _model("llama").named_parameters()}
    assert _rel(ref["lm_head.weight"], start["lm_head.weight"]) > 1e-3  # the steps moved the parameters
    for name, p in ours.items():
        step, ref_step = p - start[name], ref[name] - start[name]
        # the steps' gradients agree to 1e-5 (as above); the parameters are
        # float32 numbers, rounded after each of the two steps
        tol = 1e-5 * float(ref_step.abs().max()) + 2 * 2**-24 * float(start[name].abs().max())
        assert float((step - ref_step).abs().max()) <= tol, name
    # the check can fail: where Trainer does not pass num_items_in_batch (it
    # then divides each micro-batch's mean by the steps), the steps go elsewhere
    unscaled = cet.apply(_model("llama"))
    unscaled.accepts_loss_kwargs = False
    other = _trainer_params(unscaled, data, tmp_path / "other")
    assert max(_rel(other[n] - start[n], ref[n] - start[n]) for n in ref) > 1e-2


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_generate_is_unchanged(kind):
    model = _model(kind).eval()
    prompt = torch.randint(0, V, (2, 4), generator=torch.Generator().manual_seed(3))
    kw = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=5, do_sample=False, pad_token_id=0)
    ref = model.generate(prompt, **kw)
    torch.testing.assert_close(cet.apply(model).generate(prompt, **kw), ref, rtol=0, atol=0)


def test_unapply_restores_the_model_and_copies_keep_their_own_patch():
    model = _model("llama")
    cls_forward = type(model).forward
    had = "accepts_loss_kwargs" in model.__dict__
    cet.apply(model)
    assert "logits_to_keep" in inspect.signature(model.forward).parameters  # as generate() reads it
    twin = copy.deepcopy(model)
    assert twin.forward.__self__ is twin
    ids, labels = _batch()
    with torch.no_grad():
        assert twin(input_ids=ids, labels=labels).logits is None
        cet.unapply(model)
        assert model.forward.__func__ is cls_forward and "forward" not in model.__dict__
        assert ("accepts_loss_kwargs" in model.__dict__) == had
        assert model(input_ids=ids, labels=labels).logits is not None
        assert twin(input_ids=ids, labels=labels).logits is None  # the copy is still patched


def test_use_fused_loss_swaps_only_the_loss_function():
    model = _model("gemma2")
    ids, labels = _batch()
    ref, ref_grads = _loss_and_grads(model, input_ids=ids, labels=labels)
    cet.use_fused_loss(model)
    assert model.loss_function is cet.causal_lm_loss and model.accepts_loss_kwargs is True
    out, grads = _loss_and_grads(model, input_ids=ids, labels=labels, num_items_in_batch=torch.tensor(20))
    cet.unapply(model)
    assert model.loss_function is transformers.loss.loss_utils.ForCausalLMLoss
    assert "_loss_function" not in model.__dict__ and "accepts_loss_kwargs" not in model.__dict__
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=0)
    n = int((labels[:, 1:] != -100).sum())
    torch.testing.assert_close(out.loss, ref.loss * n / 20, rtol=1e-5, atol=0)
    for name, g in grads.items():
        assert _rel(g, ref_grads[name] * n / 20) <= 1e-5, name


def test_refuses_what_it_cannot_patch_naming_the_class():
    with pytest.raises(TypeError, match="needs a transformers PreTrainedModel.*got Linear"):
        cet.apply(torch.nn.Linear(2, 2))
    classifier = transformers.LlamaForSequenceClassification(transformers.LlamaConfig(**_COMMON, num_labels=2))
    with pytest.raises(ValueError, match="LlamaForSequenceClassification's loss_function is"):
        cet.apply(classifier)
    model = _model("llama")
    model.lm_head = torch.nn.Sequential(torch.nn.Linear(32, V, bias=False))
    with pytest.raises(TypeError, match="LlamaForCausalLM.lm_head is a Sequential, not a plain torch.nn.Linear"):
        cet.apply(model)
    assert "forward" not in model.__dict__
    cet.use_fused_loss(model)  # any head: only the loss changes


def test_refuses_at_the_first_forward_a_model_that_changes_its_logits():
    # Cohere multiplies the logits by config.logit_scale after lm_head
    config = transformers.CohereConfig(**_COMMON, logit_scale=0.5)
    model = cet.apply(transformers.CohereForCausalLM(config))
    ids, labels = _batch()
    with pytest.raises(ValueError, match="CohereForCausalLM changes the logits between lm_head and its loss"):
        model(input_ids=ids, labels=labels)


def test_importing_crossentropy_imports_neither_torch_nor_transformers():
    code = ("import sys, crossentropy, crossentropy.integrations.transformers; "
            "print(sorted({'torch', 'transformers'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
