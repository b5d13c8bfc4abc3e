"""Masked backward kernels (Eq. 6, Section V-A): weight gradient and activation gradient.

Pruned output channels are not computed at all: callers pass only the kept channels of the
output gradient, so the weight gradient has one column per kept filter and the activation
gradient is produced only for the kept channels of the layer below (Eq. 9's two terms).
"""
import numpy as np
from numba import njit, prange

from intsr.kernels import igemm_u8s8
from intsr.kernels.conv import conv3x3_s32
from intsr.kernels.im2col import bands

# Rows summed in one int32 accumulator. Products are at most 2**14 (int8 x int8: -128 * -128)
# or 255 * 128 = 32640 (uint8 image x int8), so 2**16 rows sum to at most 2**30 or
# 2,139,095,040 < 2**31 - 1. Chunk totals are added in int64 (2**62 / 2**31: over 2**31 chunks).
WGRAD_CHUNK = 1 << 16


@njit(cache=True, inline="always")
def _dot4(a0, a1, a2, a3, b0, b1, b2, b3):
    # Each product of an 8-bit activation and an int8 gradient fits int16 exactly
    # (|(-128) * (-128)| = 2**14, 255 * (-128) = -32640), so the multiplies are 16-bit lanes;
    # the four products are summed in int32 (two of them could already overflow int16).
    return (np.int32(np.int16(a0 * b0)) + np.int32(np.int16(a1 * b1))
            + np.int32(np.int16(a2 * b2)) + np.int32(np.int16(a3 * b3)))


@njit(cache=True, parallel=True)
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


def wgrad_s64(cols, g):
    """Weight gradient ``cols^T @ g``: cols (M, K) int8/uint8 im2col rows of the layer input,
    g (M, n_kept) int8 output gradient of the kept channels -> (K, n_kept) int64, exact.

    Rows are split into chunks of at most WGRAD_CHUNK (and at least 8 chunks, for threads); each
    chunk accumulates in int32, four rows at a time (16-bit products, see _dot4), and
    chunks are summed in int64. Integer addition is associative, so
    the result is the same for any thread count."""
    m = cols.shape[0]
    nchunks = max(8, -(-m // WGRAD_CHUNK))
    partial = np.empty((nchunks, cols.shape[1], g.shape[1]), np.int64)
    _wgrad_chunks(cols, g.astype(np.int16), nchunks, partial)
    return partial.sum(axis=0)


def wgrad3x3_s64(x, g):
    """Weight gradient of a 3x3 conv from its input x (H, W, C_in) int8/uint8 and the kept
    output gradient g (H, W, n_kept) int8 -> (9*C_in, n_kept) int64, exact: the VNNI implicit
    GEMM where the CPU has it, else im2col bands through wgrad_s64."""
    if igemm_u8s8.AVAILABLE and g.shape[2] <= 64:
        return igemm_u8s8.wgrad3x3(x, g)
    return wgrad3x3_s64_portable(x, g)


def wgrad3x3_s64_portable(x, g):
    w = x.shape[1]
    gflat = g.reshape(-1, g.shape[2])
    return sum(wgrad_s64(cols, gflat[y0 * w:y0 * w + cols.shape[0]]) for y0, cols in bands(x))


def wgrad_s64_ref(cols, g):
    return cols.astype(np.int64).T @ g.astype(np.int64)


def agrad_weights(w, kept_in, kept_out):
    """Weights of the activation gradient: the forward weights restricted to the kept channels,
    flipped in space and transposed, HWIO (3, 3, n_out_kept, n_in_kept)."""
    sub = w[:, :, kept_in][:, :, :, kept_out]
    return np.ascontiguousarray(sub[::-1, ::-1].transpose(0, 1, 3, 2))


def agrad_s32(g, w, kept_in, kept_out):
    """Activation gradient for the kept input channels: (H, W, n_out_kept) int8 gradient ->
    (H, W, n_in_kept) int32, the correlation of g with flipped transposed weights. Headroom as
    the forward conv: at most 576 products of 2**14."""
    return conv3x3_s32(g, agrad_weights(w, kept_in, kept_out))
