"""Binary losses on logits, forward + backward: ours against PyTorch and torchvision.

    python benchmarks/bench_binary.py            # N = 1,000,000 elements
    python benchmarks/bench_binary.py --quick    # N = 200,000

Compares, in one process and interleaved round by round (so that a noisy
neighbour slows every method alike):

* ``binary_cross_entropy_with_logits``: ours vs ``torch.nn.functional``'s;
* ``sigmoid_focal_loss``: ours vs torchvision's formula (written out here,
  since torchvision is not installed beside the CPU build of torch).

Prints a table with the median time of each and the ratio ours / peer, and
writes ``benchmarks/results/binary.csv``.
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import statistics
import time

import torch
import torch.nn.functional as F

import crossentropy as ce

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def torchvision_sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0, reduction="mean"):
    """torchvision.ops.sigmoid_focal_loss's formula."""
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean() if reduction == "mean" else loss.sum()


def cases(n, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, generator=g).mul_(3).to(dtype)
    hard = torch.randint(0, 2, (n,), generator=g).to(dtype)
    pw = torch.full((1,), 2.0, dtype=dtype)
    return {
        "bce_with_logits": (x, hard, lambda a: ce.binary_cross_entropy_with_logits(a, hard),
                            lambda a: F.binary_cross_entropy_with_logits(a, hard)),
        "bce_with_logits pos_weight": (x, hard,
                                       lambda a: ce.binary_cross_entropy_with_logits(a, hard, pos_weight=pw),
                                       lambda a: F.binary_cross_entropy_with_logits(a, hard, pos_weight=pw)),
        "sigmoid_focal gamma=2": (x, hard, lambda a: ce.sigmoid_focal_loss(a, hard, reduction="mean"),
                                  lambda a: torchvision_sigmoid_focal_loss(a, hard)),
    }


def step(f, x):
    a = x.detach().clone().requires_grad_(True)
    f(a).backward()


def measure(n, dtype, reps):
    rows = []
    for name, (x, _, ours, peer) in cases(n, dtype).items():
        for f in (ours, peer):  # warm-up
            step(f, x)
        times = {"ours": [], "peer": []}
        for _ in range(reps):
            for label, f in (("ours", ours), ("peer", peer)):
                t0 = time.perf_counter()
                step(f, x)
                times[label].append(time.perf_counter() - t0)
        o, p = statistics.median(times["ours"]), statistics.median(times["peer"])
        rows.append(dict(loss=name, n=n, dtype=str(dtype).replace("torch.", ""), ours_ms=1e3 * o,
                         peer_ms=1e3 * p, ratio=o / p))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200,000 elements, few repetitions")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--reps", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    n = args.n or (200_000 if args.quick else 1_000_000)
    reps = args.reps or (10 if args.quick else 40)
    rows = measure(n, torch.float32, reps)
    print(f"binary losses, forward + backward, float32, N = {n:,}, median of {reps}, torch {torch.__version__}")
    print(f"{'loss':30s} {'ours ms':>9s} {'peer ms':>9s} {'ours/peer':>10s}")
    for r in rows:
        print(f"{r['loss']:30s} {r['ours_ms']:9.2f} {r['peer_ms']:9.2f} {r['ratio']:10.2f}")
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        with open(RESULTS / "binary.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {RESULTS / 'binary.csv'}")


if __name__ == "__main__":
    main()
