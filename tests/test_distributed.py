"""Vocab-parallel cross-entropy on spawned gloo process groups (CPU), world
sizes 1, 2 and 3, even and uneven shards, against single-process results."""

import pytest
import torch.multiprocessing as mp

import _dist_worker


@pytest.mark.parametrize("world", [1, 2, 3])
def test_vocab_parallel_matches_single_process(world, tmp_path):
    mp.spawn(_dist_worker.run, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    for rank in range(world):
        assert (tmp_path / f"rank{rank}.txt").read_text() == "ok"
