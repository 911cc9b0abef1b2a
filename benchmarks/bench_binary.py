"""Binary losses on logits, forward + backward: ours against PyTorch eager, torchvision's formula and torch.compile.

    python benchmarks/bench_binary.py            # N = 1,000,000 elements and an N sweep (~5 min)
    python benchmarks/bench_binary.py --quick    # N = 200,000, time only, nothing written

Losses, float32, mean reduction:

* ``binary_cross_entropy_with_logits`` (with and without ``pos_weight``):
  ours against ``torch.nn.functional``'s;
* ``sigmoid_focal_loss`` (alpha 0.25, gamma 2): ours against torchvision's
  formula, written out here since torchvision is not installed beside the
  CPU build of torch.

Each also against ``torch.compile`` of the peer, and ours with the compiled
CPU kernels off (``ours, torch chunks``: what CUDA and the fallbacks run). Time: in one process,
interleaved, median of ``--reps`` rounds. Extra peak memory over the inputs:
each method in its own subprocess (see ``_measure.py``).

Writes ``results/binary.csv`` and ``results/binary.png`` (time and memory
against N).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

import _measure as m
import crossentropy as ce

LOSSES = ("bce_with_logits", "bce_with_logits pos_weight", "sigmoid_focal")
METHODS = ("ours", "ours, torch chunks", "torch", "torch.compile")
SWEEP_N = (100_000, 300_000, 1_000_000, 3_000_000, 10_000_000)


def torchvision_sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0):
    """torchvision.ops.sigmoid_focal_loss's formula, mean reduction."""
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean()


def loss_fn(loss, method):
    pw = torch.full((1,), 2.0)
    if loss == "bce_with_logits":
        ours, peer = ce.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits
    elif loss == "bce_with_logits pos_weight":
        ours = lambda x, y: ce.binary_cross_entropy_with_logits(x, y, pos_weight=pw)  # noqa: E731
        peer = lambda x, y: F.binary_cross_entropy_with_logits(x, y, pos_weight=pw)  # noqa: E731
    elif loss == "sigmoid_focal":
        ours = lambda x, y: ce.sigmoid_focal_loss(x, y, reduction="mean")  # noqa: E731
        peer = torchvision_sigmoid_focal_loss
    else:
        raise ValueError(f"loss: unknown {loss!r}")
    if method == "ours":
        return ours
    if method == "ours, torch chunks":  # the compiled CPU kernels off
        return m.kernels_off(ours)
    if method == "torch":
        return peer
    if method == "torch.compile":
        return torch.compile(peer, dynamic=False)
    raise ValueError(f"method: unknown {method!r}")


def inputs(n):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, generator=g).mul_(3)
    y = torch.randint(0, 2, (n,), generator=g).float()
    return x, y


def build_child(spec):
    torch.set_num_threads(spec["threads"])
    x, y = inputs(spec["n"])
    return m.grad_step(loss_fn(spec["loss"], spec["method"]), [x.requires_grad_(True)], y,
                       compiled=spec["method"] == "torch.compile")


def measure(n, reps, threads, losses, memory=True):
    x, y = inputs(n)
    rows = []
    for loss in losses:
        print(f"{loss} N={n:,} ...", file=sys.stderr, flush=True)
        leaves = {mth: x.clone().requires_grad_(True) for mth in METHODS}

        def stepper(mth, f):
            leaf = leaves[mth]

            def setup():
                leaf.grad = None

            return setup, lambda: f(leaf, y).backward()

        secs = m.interleaved({mth: stepper(mth, loss_fn(loss, mth)) for mth in METHODS}, reps=reps, warmup=2)
        for mth in METHODS:
            got = m.run_child(__file__, dict(loss=loss, method=mth, n=n, threads=threads)) if memory else None
            rows.append(dict(loss=loss, method=mth, N=n, ms=1e3 * secs[mth], extra_mb=got and got["extra_mb"]))
        ref = next(r for r in rows if r["loss"] == loss and r["method"] == "torch" and r["N"] == n)
        for r in rows[-len(METHODS):]:
            r["time_vs_torch"] = r["ms"] / ref["ms"]
            r["mem_vs_torch"] = r["extra_mb"] / ref["extra_mb"] if memory and ref["extra_mb"] else None
    return rows


COLUMNS = [("loss", "loss", ""), ("method", "method", ""), ("N", "N", ","), ("ms", "ms", ".2f"),
           ("time_vs_torch", "time / torch", ".2f"), ("extra_mb", "extra peak MB", ".1f"),
           ("mem_vs_torch", "memory / torch", ".2f")]


def sweep_reps(n, reps):
    """Rounds at ``n`` elements in the sweep: a third of ``reps`` from 1M up
    (steps of milliseconds and more), three times ``reps`` below (steps of
    about 0.5 ms, for which 10 rounds gave a noisy median on this VM)."""
    return max(5, reps // 3) if n >= 1_000_000 else 3 * reps


def main():
    args = m.parser(__doc__, "200,000 elements, time only; writes nothing").parse_args()
    m.start(args)
    if args.quick:
        print(m.table(measure(200_000, args.reps or 10, args.threads, LOSSES, memory=False), COLUMNS))
        return
    reps = args.reps or 30
    rows = measure(1_000_000, reps, args.threads, LOSSES)
    print(f"\nforward + backward, float32, mean, median of {reps} interleaved rounds\n")
    print(m.table(rows, COLUMNS))
    print()
    for r in rows:
        if r["method"] == "ours":
            ok = "met" if r["time_vs_torch"] <= 1.0 else "NOT met"
            print(f"{r['loss']}: time {r['time_vs_torch']:.2f}x the peer (target <= 1.0x): {ok}")
    sweep = []
    for n in SWEEP_N:
        sweep += measure(n, sweep_reps(n, reps), args.threads, ("bce_with_logits", "sigmoid_focal"))
    print("\nN sweep\n")
    print(m.table(sweep, COLUMNS))
    m.write_csv("binary.csv", m.labelled(targets=rows, sweep=sweep))
    plotted = [dict(r, method=f"{r['loss']}: {r['method']}") for r in sweep]
    m.plot_sweep("binary.png", plotted, f"binary losses forward + backward, float32, {args.threads} threads",
                 [("ms", "time per step (ms)"), ("extra_mb", "extra peak memory over the inputs (MB)")],
                 x="N", xlabel="N (elements, log scale)", log_y=("ms",))


if __name__ == "__main__":
    m.entry(main, build_child)
