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


def test_torchrun_example_prints_the_one_process_loss():
    import pathlib
    import re
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(root / "examples" / "vocab_parallel.py")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    # The two ranks print concurrently; their lines may interleave.
    number = r"(-?\d+\.\d{12})"
    reports = re.findall(rf"rank (\d)/2: vocab-parallel loss {number}, linear {number}, one process {number}",
                         out.stdout)
    assert sorted(r[0] for r in reports) == ["0", "1"], out.stdout
    assert len({n for r in reports for n in r[1:]}) == 1, out.stdout
