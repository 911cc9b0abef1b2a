"""Compiles every Triton kernel of crossentropy, in a covering set of its
specialisations (each value of each switch at least once, each input dtype;
every combination of the switches with ``--all``),
to a cubin for sm_90 with Triton's own compiler: no GPU needed. Run by
tests/test_triton.py in a process without TRITON_INTERPRET (an interpreted
kernel cannot be compiled). Prints "compiled N kernels"."""

import itertools

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from crossentropy._triton import binary, cross_entropy, linear

TARGET = GPUTarget("cuda", 90, 32)
TY = {tl.float32: "fp32", tl.float64: "fp64", tl.bfloat16: "bf16", tl.float16: "fp16"}


# shared memory a block may use on sm_90 (227 KiB): Triton checks it only when
# a kernel is loaded onto a device, so it is checked here
SHARED_LIMIT = 232448


def compile_one(fn, signature, constants):
    sig = dict(signature, **{k: "constexpr" for k in constants})
    kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=constants), target=TARGET,
                            options={"num_warps": 8, "enable_fp_fusion": True})
    shared = kernel.metadata.shared
    if shared > SHARED_LIMIT:
        raise RuntimeError(f"needs {shared} bytes of shared memory, more than sm_90's {SHARED_LIMIT}")
    return shared


DTYPES = (tl.bfloat16, tl.float32, tl.float16, tl.float64)


def _covering(full, *switches):
    """Every combination of the switches' values (``full``), else a diagonal
    of them: as many as the longest switch has values, each value of each
    switch at least once. Each zipped with the four input dtypes in turn."""
    if full:
        combos = list(itertools.product(*switches))
    else:
        combos = [tuple(s[i % len(s)] for s in switches) for i in range(max(map(len, switches)))]
    return zip(combos, itertools.cycle(DTYPES))


def ce_specs(full):
    for (soft, cap, stats), out in _covering(full, (0, 1, 2, 3), (False, True), (True, False)):
        acc = tl.float64 if out == tl.float64 else tl.float32
        x, a = "*" + TY[out], "*" + TY[acc]
        stats_sig = dict(x_ptr=x, sx_n="i64", sx_c="i32", b_ptr=a, t_ptr=a, st_n="i32", st_c="i32", w_ptr=a, p_ptr=a,
                         m_out=a, sum_out=a, dot_out=a, soft_out=a, arg_out="*i64", truth_out="*i64", C="i32")
        yield cross_entropy._stats_kernel, stats_sig, dict(SOFT=soft, WEIGHTED=soft == 3 and cap, CAP=cap,
                                                           STATS=stats, BLOCK=4096, ACC=acc)
        grad_sig = dict(x_ptr=x, sx_n="i64", sx_c="i32", g_ptr=x, sg_n="i64", sg_c="i32", m_ptr=a, f_ptr=a, v_ptr=a,
                        vh_ptr=a, y_ptr="*i64", b_ptr=a, t_ptr=a, st_n="i32", st_c="i32", w_ptr=a, p_ptr=a, C="i32")
        yield cross_entropy._grad_kernel, grad_sig, dict(SOFT=soft, WEIGHTED=soft == 3 and cap, CAP=cap,
                                                         HARD=soft != 3, BLOCK=4096, ACC=acc, OUT=out)


def binary_specs(full):
    bce = _covering(full, (0,), (0, 1, 2, 3), (-1,), (False, True))  # BCE has no gamma
    focal = _covering(full, (1,), (0, 1, 2, 3), (-1, 0, 2), (True, False))
    for (loss, w, gamma, rows), out in itertools.chain(bce, focal):
        acc = tl.float64 if out == tl.float64 else tl.float32
        x, a = "*" + TY[out], "*" + TY[acc]
        sig = dict(x_ptr=x, t_ptr="*u8" if w == 3 else x, w_ptr=a, pw_ptr=a, p_ptr=a, loss_ptr=x, part_ptr=a, g_ptr=x,
                   n="i64", C="i32")
        yield binary._binary_kernel, sig, dict(LOSS=loss, W=w, PW=(w + 1) % 4 if loss == 0 else 0, ALPHA=w % 2 == 1,
                                               GAMMA=gamma, ROWS=rows, GRAD=not rows or w == 2, BLOCK=1024, ACC=acc,
                                               OUT=out)


def linear_specs(full):
    for (soft, cap, bias), x_ty in _covering(full, (0, 1, 2, 3), (False, True), (True, False)):
        acc = tl.float64 if x_ty == tl.float64 else tl.float32
        x, a = "*" + TY[x_ty], "*" + TY[acc]
        prec = "ieee" if x_ty in (tl.float32, tl.float64) else "tf32"
        blocks = dict(BLOCK_N=32, BLOCK_V=64, BLOCK_H=32) if x_ty == tl.float64 else dict(BLOCK_N=64, BLOCK_V=128,
                                                                                          BLOCK_H=64)
        head = dict(x_ptr=x, sx="i32", w_ptr=x, sw="i32", b_ptr=x, rows_ptr="*i64", y_ptr="*i64", bv_ptr=a, t_ptr=a,
                    st="i32", wc_ptr=a, p_ptr=a)
        common = dict(SOFT=soft, WEIGHTED=soft == 3 and cap, CAP=cap, BIAS=bias, ACC=acc, PREC=prec, **blocks)
        yield linear._stats_kernel, dict(head, m_out=a, sum_out=a, dot_out=a, soft_out=a, tgt_out=a, n="i32",
                                         V="i32", H="i32", tiles_per_split="i32"), common
        yield linear._grad_kernel, dict(head, m_ptr=a, f_ptr=a, v_ptr=a, vh_ptr=a, gx_ptr=a, gw_ptr=a, gb_ptr=a,
                                        n="i32", V="i32", H="i32"), dict(common, HARD=soft != 3, GX=True,
                                                                         GW=not cap, GB=bias, IN=x_ty)


def main(argv):
    full = "--all" in argv  # every combination (slow: a minute or two)
    n, most = 0, 0
    for fn, sig, constants in [*ce_specs(full), *binary_specs(full), *linear_specs(full)]:
        try:
            most = max(most, compile_one(fn, sig, constants))
        except Exception as e:
            raise SystemExit(f"{fn.__name__} {constants}: {e}")
        n += 1
    print(f"compiled {n} kernels for sm_90, at most {most} bytes of shared memory a block")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
