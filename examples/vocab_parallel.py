"""Vocab-parallel cross-entropy on CPU with gloo.

    torchrun --nproc-per-node 2 examples/vocab_parallel.py

Each rank holds a slice of the classifier's rows (and so of the logits); the
loss printed by every rank equals the one-process loss on the full problem,
which rank 0 computes and prints beside it.
"""

import sys

import torch
import torch.distributed as dist

import crossentropy as ce
from crossentropy.distributed import vocab_parallel_cross_entropy, vocab_parallel_linear_cross_entropy


def main():
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # the same full problem on every rank
    N, H, V = 64, 32, 1000 * world
    x = torch.randn(N, H, dtype=torch.float64)
    W = torch.randn(V, H, dtype=torch.float64) / H**0.5
    target = torch.randint(0, V, (N,))
    target[::7] = -100
    opts = dict(label_smoothing=0.1, z_loss=1e-4)

    width = V // world
    rows = slice(rank * width, (rank + 1) * width)
    logits_shard = (x @ W[rows].T).requires_grad_(True)
    loss = vocab_parallel_cross_entropy(logits_shard, target, **opts)
    loss.backward()
    lin = vocab_parallel_linear_cross_entropy(x, W[rows], target, **opts)

    full = ce.cross_entropy(x @ W.T, target, **opts)
    line = (f"rank {rank}/{world}: vocab-parallel loss {loss.item():.12f}, linear {lin.item():.12f}, "
            f"one process {full.item():.12f}\n")
    sys.stdout.write(line)  # one write per rank, so that the ranks' lines do not interleave
    sys.stdout.flush()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
