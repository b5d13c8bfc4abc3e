"""Conv forward: 8-bit x int8 GEMM into int32 accumulators, on im2col rows.

Headroom: one output sums K = 9 * C_in <= 576 products. With int8 activations a product is at
most (-128) * (-128) = 2**14, so |acc| <= 576 * 2**14 < 2**24; with uint8 image input (C_in = 3,
K = 27) |acc| <= 27 * 255 * 128 < 2**20. Both far inside int32: no split, no widening needed.
"""
import numpy as np
from numba import njit, prange

from intsr.kernels.im2col import im2col


@njit(cache=True, inline="always")
def _dot4(a0, a1, a2, a3, b0, b1, b2, b3):
    # Each product of an 8-bit activation and an int8 weight fits int16 exactly
    # (|(-128) * (-128)| = 2**14, 255 * (-128) = -32640), so the multiplies are 16-bit lanes;
    # the four products are summed in int32 (two of them could already overflow int16).
    return (np.int32(np.int16(a0 * b0)) + np.int32(np.int16(a1 * b1))
            + np.int32(np.int16(a2 * b2)) + np.int32(np.int16(a3 * b3)))


@njit(cache=True, parallel=True)
def gemm_s32(a, b, out):
    """out[M, N] (int32) = a[M, K] (int8 or uint8) @ b[K, N] (int16 holding int8 values).

    Register tiling: two rows of ``a`` share each loaded row of ``b``, and four k at a time
    are summed before touching the accumulators (a quarter of the accumulator traffic)."""
    m, k = a.shape
    n = b.shape[1]
    k4 = k - k % 4
    for ib in prange((m + 1) // 2):
        i = 2 * ib
        i1 = min(i + 1, m - 1)  # odd M: the last pair computes its row twice
        acc0 = np.zeros(n, np.int32)
        acc1 = np.zeros(n, np.int32)
        for kk in range(0, k4, 4):
            x0, x1 = np.int16(a[i, kk]), np.int16(a[i, kk + 1])
            x2, x3 = np.int16(a[i, kk + 2]), np.int16(a[i, kk + 3])
            y0, y1 = np.int16(a[i1, kk]), np.int16(a[i1, kk + 1])
            y2, y3 = np.int16(a[i1, kk + 2]), np.int16(a[i1, kk + 3])
            for j in range(n):
                b0, b1, b2, b3 = b[kk, j], b[kk + 1, j], b[kk + 2, j], b[kk + 3, j]
                acc0[j] += _dot4(x0, x1, x2, x3, b0, b1, b2, b3)
                acc1[j] += _dot4(y0, y1, y2, y3, b0, b1, b2, b3)
        for kk in range(k4, k):
            x0, y0 = np.int32(a[i, kk]), np.int32(a[i1, kk])
            for j in range(n):
                acc0[j] += x0 * np.int32(b[kk, j])
                acc1[j] += y0 * np.int32(b[kk, j])
        for j in range(n):
            out[i, j] = acc0[j]
            out[i1, j] = acc1[j]


def gemm_s32_ref(a, b):
    return (a.astype(np.int64) @ b.astype(np.int64)).astype(np.int32)


def conv3x3_s32(x, w):
    """x (H, W, C_in) int8/uint8, w (3, 3, C_in, C_out) int8 -> int32 (H, W, C_out), exact."""
    h, wd, _ = x.shape
    cout = w.shape[3]
    out = np.empty((h * wd, cout), np.int32)
    gemm_s32(im2col(x), w.reshape(-1, cout).astype(np.int16), out)
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
