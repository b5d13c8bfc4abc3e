"""Portable kernels (any CPU): 8-bit x int8 GEMMs on im2col rows for the 3x3 convolution, its
activation gradient and its weight gradient. ``x8`` is int8 or uint8; products are widened
before they are summed, so both read the same way.

Headroom of the convolution: one output sums K = 9 * C_in <= 576 products. A product is at
most (-128) * (-128) = 2**14 (int8 x int8) or 255 * 128 = 32,640 (uint8 x int8), so
|acc| <= 576 * 32,640 < 2**25: int32 without any split. The weight gradient sums one product
per pixel: see ``fixedpoint.WGRAD_CHUNK`` for its int32 chunks and int64 totals.
"""
import numpy as np
from numba import njit, prange

from intsr.kernels.fixedpoint import WGRAD_CHUNK
from intsr.kernels.im2col import bands


@njit(cache=True, nogil=True, parallel=True)
def gemm_x8s8(a, bt, out):
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


def gemm_x8s8_ref(a, bt):
    return (a.astype(np.int64) @ bt.astype(np.int64).T).astype(np.int32)


def conv3x3_portable(x, w):
    """x (H, W, C_in) int8/uint8, w (3, 3, C_in, C_out) int8 -> int32 (H, W, C_out), exact:
    im2col bands and gemm_x8s8."""
    h, wd, _ = x.shape
    cout = w.shape[3]
    out = np.empty((h * wd, cout), np.int32)
    wt = np.ascontiguousarray(w.reshape(-1, cout).T)
    for y0, cols in bands(x):
        gemm_x8s8(cols, wt, out[y0 * wd:y0 * wd + cols.shape[0]])
    return out.reshape(h, wd, cout)


@njit(cache=True, inline="always")
def _dot4(a0, a1, a2, a3, b0, b1, b2, b3):
    # Each product of an 8-bit activation and an int8 gradient fits int16 exactly
    # (|(-128) * (-128)| = 2**14, 255 * (-128) = -32640), so the multiplies are 16-bit lanes;
    # the four products are summed in int32 (two of them could already overflow int16).
    return (np.int32(np.int16(a0 * b0)) + np.int32(np.int16(a1 * b1))
            + np.int32(np.int16(a2 * b2)) + np.int32(np.int16(a3 * b3)))


@njit(cache=True, nogil=True, parallel=True)
def _wgrad_chunks(cols, g, nchunks, partial):
    m, k = cols.shape
    nk = g.shape[1]
    per = ((m + nchunks - 1) // nchunks + 3) // 4 * 4  # whole groups of four rows
    for ch in prange(nchunks):
        acc = np.zeros((k, nk), np.int32)
        start, end = ch * per, min(m, (ch + 1) * per)
        end4 = start + max(0, end - start) // 4 * 4
        for i in range(start, end4, 4):
            for kk in range(k):
                c0, c1 = np.int16(cols[i, kk]), np.int16(cols[i + 1, kk])
                c2, c3 = np.int16(cols[i + 2, kk]), np.int16(cols[i + 3, kk])
                for j in range(nk):
                    acc[kk, j] += _dot4(c0, c1, c2, c3, g[i, j], g[i + 1, j], g[i + 2, j],
                                        g[i + 3, j])
        for i in range(end4, end):
            for kk in range(k):
                c = np.int32(cols[i, kk])
                for j in range(nk):
                    acc[kk, j] += c * np.int32(g[i, j])
        for kk in range(k):
            for j in range(nk):
                partial[ch, kk, j] = acc[kk, j]


def wgrad_x8s8(cols, g):
    """Weight gradient ``cols^T @ g``: cols (M, K) int8/uint8 im2col rows of the layer input,
    g (M, n_kept) int8 output gradient of the kept channels -> (K, n_kept) int64, exact.

    Rows are split into chunks of at most WGRAD_CHUNK (and at least 8 chunks, for threads); each
    chunk accumulates in int32, four rows at a time (16-bit products, see _dot4), and chunks
    are summed in int64. Integer addition is associative, so the result is the same for any
    thread count."""
    m = cols.shape[0]
    nchunks = max(8, -(-m // WGRAD_CHUNK))
    partial = np.empty((nchunks, cols.shape[1], g.shape[1]), np.int64)
    _wgrad_chunks(cols, g.astype(np.int16), nchunks, partial)
    return partial.sum(axis=0)


def wgrad_x8s8_ref(cols, g):
    return cols.astype(np.int64).T @ g.astype(np.int64)


def wgrad3x3_portable(x, g):
    """Weight gradient of a 3x3 conv, x (H, W, C_in) int8/uint8 and g (H, W, n_kept) int8 ->
    (9*C_in, n_kept) int64, exact: im2col bands through wgrad_x8s8."""
    w = x.shape[1]
    gflat = g.reshape(-1, g.shape[2])
    return sum(wgrad_x8s8(cols, gflat[y0 * w:y0 * w + cols.shape[0]]) for y0, cols in bands(x))
