"""``benchmarks/gpu_suite.py --smoke``: the device script, run on CPU under
Triton's interpreter at tiny shapes, so that what a GPU session runs has run
before (its tables, every method that exists on CPU, its pytest step)."""

import os
import subprocess
import sys

import pytest

from crossentropy.cases import paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(paths.triton_device() != "cpu", reason="the smoke run is for a machine without a GPU")
def test_gpu_suite_smoke(tmp_path):
    out = tmp_path / "suite.md"
    env = dict(os.environ, TRITON_INTERPRET="1")
    run = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu_suite.py"), "--smoke", "--out",
                          str(out)], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    text = out.read_text()
    assert "tests (smoke selection): passed" in text
    assert "copy bandwidth" in text and "## cross-entropy fwd+bwd" in text and "## linear cross-entropy" in text
    assert "error" not in text, text
    for method in ("ours (Triton)", "ours (Triton, inplace_backward)", "ours (torch kernel)", "torch eager",
                   "ours vocab-parallel (Triton)", "ours vocab-parallel (torch kernel)", "ours one device (Triton)"):
        assert f"| {method} |" in text
    # the vocab-parallel functions on a process group of one, through the Triton kernels
    assert "vocab-parallel checks (one rank, gloo): passed" in text
    assert text.count("| passed |") == 4 and "## vocab-parallel linear cross-entropy fwd+bwd" in text
