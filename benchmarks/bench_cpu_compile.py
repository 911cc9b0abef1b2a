"""The compiled CPU kernels' first-call cost: numba compiles each kernel once
per dtype on first use and caches the machine code on disk; later processes
load it. Each line is a fresh process timing its first call of a loss
(forward + backward, a small problem), with an empty cache ("cold") and then
with the cache the cold run wrote ("warm"), against the same call with the
compiled kernels off (``CROSSENTROPY_CPU_KERNELS=0``).

    python benchmarks/bench_cpu_compile.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import _measure as m

CALLS = {
    "cross_entropy float32": "ce.cross_entropy(torch.randn(64, 100, requires_grad=True), torch.randint(0, 100, (64,)))",
    "cross_entropy bfloat16": ("ce.cross_entropy(torch.randn(64, 100).bfloat16().requires_grad_(True), "
                               "torch.randint(0, 100, (64,)))"),
    "cross_entropy float64": ("ce.cross_entropy(torch.randn(64, 100, dtype=torch.float64, requires_grad=True), "
                              "torch.randint(0, 100, (64,)))"),
    "cross_entropy float16": ("ce.cross_entropy(torch.randn(64, 100).half().requires_grad_(True), "
                              "torch.randint(0, 100, (64,)))"),
    "cross_entropy float32, 10 classes": ("ce.cross_entropy(torch.randn(64, 10, requires_grad=True), "
                                          "torch.randint(0, 10, (64,)))"),
    "binary_cross_entropy_with_logits float32": ("ce.binary_cross_entropy_with_logits("
                                                 "torch.randn(1000, requires_grad=True), torch.rand(1000))"),
    "binary_cross_entropy_with_logits float32, weight, none": (
        "ce.binary_cross_entropy_with_logits(torch.randn(1000, requires_grad=True), torch.rand(1000), "
        "weight=torch.rand(1000), reduction='none').sum()"),
    "sigmoid_focal_loss float32": ("ce.sigmoid_focal_loss("
                                   "torch.randn(1000, requires_grad=True), torch.rand(1000), reduction='sum')"),
}
CHILD = """
import time, torch, crossentropy as ce
t0 = time.perf_counter()
({call}).backward()
print(time.perf_counter() - t0)
"""


def first_call(call, env):
    out = subprocess.run([sys.executable, "-c", CHILD.format(call=call)], env=env, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    print(m.machine())
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for name, call in CALLS.items():
            cold = first_call(call, env)
            warm = first_call(call, env)
            off = first_call(call, {**env, "CROSSENTROPY_CPU_KERNELS": "0"})
            rows.append(dict(call=name, cold=cold, warm=warm, off=off))
    print(m.table(rows, [("call", "first call", ""), ("cold", "cold cache s", ".2f"),
                         ("warm", "warm cache s", ".2f"), ("off", "kernels off s", ".2f")]))


if __name__ == "__main__":
    main()
