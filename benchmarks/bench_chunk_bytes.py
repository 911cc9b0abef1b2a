"""Why the fused CPU kernels walk chunks: their time against the chunk size.

    python benchmarks/bench_chunk_bytes.py            # the sizes below; writes results/chunk_bytes.csv
    python benchmarks/bench_chunk_bytes.py --quick    # smaller sizes, nothing written

Cross-entropy (``crossentropy._torch.cross_entropy``, N=4096, V=32000): the kernel
makes several passes over a chunk of rows (a copy into the gradient buffer,
the row maximum, one exponential, the row sum, the scaling into the
gradient). Chunks of ``_CHUNK_BYTES`` (shipped: 2 MiB) against smaller and
larger ones and the whole tensor.

Binary cross-entropy on logits and the sigmoid focal loss
(``crossentropy._torch.binary``, 1M and 10M elements): chunks of
``_CHUNK_ELEMS`` (shipped: 256K elements) against other sizes and the whole
tensor, where every temporary is an input-sized buffer.

Forward + backward, float32, in one process, the settings interleaved, median
of ``--reps`` rounds, against the PyTorch peer (``F.cross_entropy``,
``F.binary_cross_entropy_with_logits``, torchvision's focal-loss formula).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

import _measure as m
import crossentropy as ce
from bench_binary import inputs as binary_inputs
from bench_binary import torchvision_sigmoid_focal_loss
from crossentropy._torch import binary as elementwise
from crossentropy._torch import cross_entropy as fused

WHOLE = 1 << 62
CE_SIZES = {"256 KiB": 1 << 18, "2 MiB (default)": 1 << 21, "16 MiB": 1 << 24, "whole tensor": WHOLE}
BINARY_SIZES = {"64K elements": 1 << 16, "256K elements (default)": 1 << 18, "1M elements": 1 << 20,
                "whole tensor": WHOLE}


def patched(module, name, value, f):
    """``f`` run with ``module.name`` set to ``value``."""
    def run(*a):
        saved = getattr(module, name)
        setattr(module, name, value)
        try:
            return f(*a)
        finally:
            setattr(module, name, saved)
    return run


def timed(methods, x, t, reps):
    """Median seconds of forward + backward of each method, interleaved."""
    leaves = {k: x.clone().requires_grad_(True) for k in methods}

    def stepper(k):
        def setup():
            leaves[k].grad = None

        return setup, lambda: methods[k](leaves[k], t).backward()

    return m.interleaved({k: stepper(k) for k in methods}, reps=reps, warmup=1)


def rows_for(op, size, secs, peer):
    return [dict(op=op, size=size, chunk=k, ms=1e3 * s, time_vs_peer=s / secs[peer]) for k, s in secs.items()]


def main():
    args = m.parser(__doc__, "smaller sizes; writes nothing").parse_args()
    m.start(args)
    reps = args.reps or (5 if args.quick else 9)
    rows = []

    n, v = (1024 if args.quick else 4096), 32000
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, v, generator=g).mul_(2)
    t = torch.randint(0, v, (n,), generator=g)
    methods = {f"ours, {k}": patched(fused, "_BLOCK_BYTES", b, ce.cross_entropy) for k, b in CE_SIZES.items()}
    methods["F.cross_entropy"] = F.cross_entropy
    print(f"cross_entropy N={n} V={v} ...", file=sys.stderr, flush=True)
    rows += rows_for("cross_entropy", f"{n}x{v}", timed(methods, x, t, reps), "F.cross_entropy")
    del x, t

    focal = lambda a, b: ce.sigmoid_focal_loss(a, b, reduction="mean")  # noqa: E731
    for op, ours, peer_name, peer in (
        ("bce_with_logits", ce.binary_cross_entropy_with_logits, "F.bce_with_logits", F.binary_cross_entropy_with_logits),
        ("sigmoid_focal", focal, "torchvision formula", torchvision_sigmoid_focal_loss),
    ):
        for n in ((200_000, 2_000_000) if args.quick else (1_000_000, 10_000_000)):
            x, t = binary_inputs(n)
            methods = {f"ours, {k}": patched(elementwise, "_CHUNK_ELEMS", c, ours) for k, c in BINARY_SIZES.items()}
            methods[peer_name] = peer
            print(f"{op} N={n:,} ...", file=sys.stderr, flush=True)
            rows += rows_for(op, f"{n:,}", timed(methods, x, t, reps), peer_name)

    print(f"\nforward + backward, float32, median of {reps} interleaved rounds\n")
    print(m.table(rows, [("op", "op", ""), ("size", "size", ""), ("chunk", "method", ""), ("ms", "ms", ".1f"),
                         ("time_vs_peer", "time / peer", ".2f")]))
    if not args.quick:
        m.write_csv("chunk_bytes.csv", rows)


if __name__ == "__main__":
    main()
