"""A Hugging Face Llama's training step, patched by crossentropy.integrations.transformers against unpatched.

    python benchmarks/bench_transformers.py           # V=32000 and V=128256 (~5 min)
    python benchmarks/bench_transformers.py --quick   # V=32000, T=128; nothing written

The model: ``LlamaForCausalLM`` from a config (random weights, no download),
hidden 512, 2 layers, 8 heads, MLP 1376, float32, untied head; the batch
B=4, T=512 with ``labels = input_ids``. One step is ``model.zero_grad()``,
the forward with labels and ``loss.backward()``: every parameter gets its
gradient. Methods: ``unpatched`` (transformers' ``lm_head`` and
``ForCausalLMLoss``, which hold the ``(B, T, V)`` logits, their float32
log-softmax and their gradient) and ``patched``
(``crossentropy.integrations.transformers.apply(model)``: the loss from the
final hidden states and ``lm_head.weight`` by ``linear_cross_entropy``, in
its default chunks).

Time: both models (the same weights) in one process, interleaved, median of
``--reps`` rounds (``_measure.interleaved``). Extra peak memory: each method
in a subprocess of its own, which builds the model and the batch, then runs
one step (the first: no earlier step whose freed memory the allocator could
keep and hide the step's peak), resetting the kernel's high-water mark before
it: ``VmHWM`` minus the resident set before the step, the parameters'
gradients included (they are kept), and also shown without them.

Writes ``results/transformers.csv``.
"""

from __future__ import annotations

import sys

import _measure as m

B, T, HIDDEN, LAYERS = 4, 512, 512, 2
METHODS = ("unpatched", "patched")


def build(v, seq, method):
    import torch
    import transformers

    from crossentropy.integrations import transformers as cet

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=v, hidden_size=HIDDEN, intermediate_size=1376,
                                      num_hidden_layers=LAYERS, num_attention_heads=8, num_key_value_heads=8,
                                      max_position_embeddings=seq)
    model = transformers.LlamaForCausalLM(config)
    if method == "patched":
        cet.apply(model)
    ids = torch.randint(0, v, (B, seq), generator=torch.Generator().manual_seed(1))
    return model, ids


def stepper(model, ids):
    def step():
        model.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.detach(), [p.grad for p in model.parameters()]

    return step


def build_child(spec):
    import torch

    torch.set_num_threads(spec["threads"])
    model, ids = build(spec["V"], spec["T"], spec["method"])
    return stepper(model, ids)


def chunk_rows(method, v, seq):
    """Rows a chunk of the patched method (apply's default: linear_cross_entropy's)."""
    from crossentropy._torch.linear import default_chunk_size

    return default_chunk_size(B * (seq - 1), HIDDEN, v) if method != "unpatched" else None


def grad_mb(model):
    return sum(p.numel() * p.element_size() for p in model.parameters()) / m.MB


def measure(v, seq, reps, threads):
    models = {mth: build(v, seq, mth) for mth in METHODS}
    steps = {mth: stepper(*models[mth]) for mth in METHODS}
    losses = {mth: float(steps[mth]()[0]) for mth in METHODS}  # and a check that they agree
    print(f"V={v} T={seq}: losses {losses}; timing ...", file=sys.stderr, flush=True)
    secs = m.interleaved(steps, reps=reps, warmup=0)
    grads = grad_mb(models["patched"][0])
    del models, steps
    rows = []
    for mth in METHODS:
        got = m.run_child(__file__, dict(method=mth, V=v, T=seq, threads=threads))
        extra = None if got is None else got["extra_mb"]
        rows.append(dict(method=mth, chunk=chunk_rows(mth, v, seq), V=v, B=B, T=seq, ms=1e3 * secs[mth], extra_mb=extra,
                         beyond_grads_mb=None if extra is None else extra - grads, grads_mb=grads,
                         logits_mb=B * seq * v * 4 / m.MB, loss=losses[mth]))
    base = rows[0]
    for r in rows:
        r["time_ratio"] = r["ms"] / base["ms"]
        r["mem_ratio"] = (r["extra_mb"] / base["extra_mb"]
                          if r["extra_mb"] is not None and base["extra_mb"] else None)
    return rows


COLUMNS = [("method", "method", ""), ("chunk", "rows a chunk", "d"), ("V", "V", "d"), ("ms", "ms", ".0f"), ("time_ratio", "time / unpatched", ".2f"),
           ("extra_mb", "extra peak MB", ".0f"), ("mem_ratio", "memory / unpatched", ".2f"),
           ("beyond_grads_mb", "beyond the grads MB", ".0f"), ("logits_mb", "logits MB", ".0f")]


def main():
    ap = m.parser(__doc__, "V=32000, T=128; writes nothing")
    args = ap.parse_args()
    try:
        import transformers  # noqa: F401
    except ImportError:
        print("transformers is not installed (pip install 'crossentropy[hf]'): nothing to measure")
        return
    m.start(args)
    if args.quick:
        print(m.table(measure(32000, 128, args.reps or 2, args.threads), COLUMNS))
        return
    reps = args.reps or 3
    rows = [r for v in (32000, 128256) for r in measure(v, T, reps, args.threads)]
    print(f"\none training step (forward + backward), B={B}, T={T}, hidden {HIDDEN}, {LAYERS} layers, float32, "
          f"median of {reps} interleaved rounds\n")
    print(m.table(rows, COLUMNS))
    big = next(r for r in rows if r["method"] == "patched" and r["V"] == 128256)
    for key, what, limit in (("mem_ratio", "extra peak memory", 0.5), ("time_ratio", "time", 1.0)):
        if big.get(key) is not None:
            print(f"V=128256, {what} vs unpatched: {big[key]:.2f}x (target <= {limit}x): "
                  f"{'met' if big[key] <= limit else 'NOT met'}")
    m.write_csv("transformers.csv", rows)


if __name__ == "__main__":
    m.entry(main, build_child)
