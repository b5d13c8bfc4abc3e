"""Conv forward: 8-bit x int8 GEMM into int32 accumulators, on im2col rows.

Headroom: one output sums K = 9 * C_in <= 576 products. With int8 activations a product is at
most (-128) * (-128) = 2**14, so |acc| <= 576 * 2**14 < 2**24; with uint8 image input (C_in = 3,
K = 27) |acc| <= 27 * 255 * 128 < 2**20. Both far inside int32: no split, no widening needed.
"""
import numpy as np
from numba import njit, prange

from intsr.kernels import igemm_u8s8
from intsr.kernels.im2col import bands


@njit(cache=True, parallel=True)
def gemm_s32(a, bt, out):
    """out[M, N] (int32) = a[M, K] (int8 or uint8) @ bt[N, K].T (int8), exact.

    Both operands are contiguous along K, so each output is one dot product: LLVM turns the
    widening multiply-add reduction into vpmaddwd / vpdpwssd (16-bit pairs into int32), which
    beats a register-tiled outer-product loop here."""
    m, k = a.shape
    n = bt.shape[0]
    for i in prange(m):
        for j in range(n):
            s = np.int32(0)
            for kk in range(k):
                s += np.int32(a[i, kk]) * np.int32(bt[j, kk])
            out[i, j] = s


def gemm_s32_ref(a, bt):
    return (a.astype(np.int64) @ bt.astype(np.int64).T).astype(np.int32)


def conv3x3_s32(x, w):
    """x (H, W, C_in) int8/uint8, w (3, 3, C_in, C_out) int8 -> int32 (H, W, C_out), exact.

    The VNNI implicit GEMM where the CPU has it, else im2col bands and gemm_s32."""
    if igemm_u8s8.AVAILABLE and w.shape[3] <= 64:
        return igemm_u8s8.conv3x3(x, w)
    return conv3x3_s32_portable(x, w)


def conv3x3_s32_portable(x, w):
    h, wd, _ = x.shape
    cout = w.shape[3]
    out = np.empty((h * wd, cout), np.int32)
    wt = np.ascontiguousarray(w.reshape(-1, cout).T)
    for y0, cols in bands(x):
        gemm_s32(cols, wt, out[y0 * wd:y0 * wd + cols.shape[0]])
    return out.reshape(h, wd, cout)


def conv3x3_s32_ref(x, w):
    """Plain loops over taps in int64: the reference for conv3x3_s32."""
    h, wd, cin = x.shape
    p = np.zeros((h + 2, wd + 2, cin), np.int64)
    p[1:-1, 1:-1] = x
    out = np.zeros((h, wd, w.shape[3]), np.int64)
    for dy in range(3):
        for dx in range(3):
            out += p[dy:dy + h, dx:dx + wd] @ w[dy, dx].astype(np.int64)
    return out
