"""Element-wise integer kernels: requantization with fused ReLU forward/backward, residual add,
L1 loss gradient, and the final conversion to pixels.

Requantization multiplies an int32 accumulator by ``2**shift`` (shift < 0 in practice) and
rounds either by floor (arithmetic right shift) or to nearest (add half, then shift: round half
up), then saturates to [-128, 127] (int8) or [0, 255] (uint8 post-ReLU store). Gating modes:
  GATE_NONE  plain requantization;
  GATE_RELU  ReLU forward: negative accumulators become 0 (before the scale is chosen);
  GATE_MASK  ReLU backward: zero where the forward activation ``gate`` was not positive.
"""
import numpy as np
from numba import njit, prange

GATE_NONE, GATE_RELU, GATE_MASK = 0, 1, 2


@njit(cache=True, inline="always")
def _gated(a, g, mode):
    if mode == 1 and a < 0:
        return 0
    if mode == 2 and g <= 0:
        return 0
    return a


@njit(cache=True, parallel=True)
def max_abs_gated(acc, gate, mode):
    """max |gated(acc)| over a 2-D (rows, C) int32/int64 array, as int64.

    One branch-free loop per gate mode, so that LLVM vectorizes it. Threads own rows; the
    per-row maxima are combined after the loop (no shared reduction)."""
    rows, c = acc.shape
    per_row = np.zeros(rows, np.int64)
    for r in prange(rows):
        m = np.int64(0)
        if mode == 1:  # ReLU forward: negatives count as 0, so the max of the values
            for j in range(c):
                m = max(m, np.int64(acc[r, j]))
        elif mode == 2:  # ReLU backward: only where the forward activation was positive
            for j in range(c):
                a = np.int64(acc[r, j]) if gate[r, j] > 0 else np.int64(0)
                m = max(m, abs(a))
        else:
            for j in range(c):
                m = max(m, abs(np.int64(acc[r, j])))
        per_row[r] = m
    best = np.int64(0)
    for r in range(rows):
        best = max(best, per_row[r])
    return best


@njit(cache=True, parallel=True)
def gather_channels(x, idx, out):
    """out[..., j] = x[..., idx[j]] for (rows, C) 8-bit x: the kept channels, contiguous."""
    rows = x.shape[0]
    for r in prange(rows):
        for j in range(idx.shape[0]):
            out[r, j] = x[r, idx[j]]


@njit(cache=True, parallel=True)
def requant_8bit(acc, gate, mode, shift, nearest, lo, hi, out):
    """out = clip(round(gated(acc) * 2**shift), lo, hi); acc 2-D int32/int64; out int8 with
    [lo, hi] = [-128, 127], or uint8 with [0, 255] for post-ReLU activations.

    Headroom: a left shift is only requested when max|acc| < 2**8, so the int64 product stays
    below 2**16; right shifts are capped at 62 bits."""
    rows, c = acc.shape
    if shift >= 0:
        for r in prange(rows):
            for j in range(c):
                v = np.int64(_gated(acc[r, j], gate[r, j], mode)) << shift
                out[r, j] = hi if v > hi else (lo if v < lo else v)
    else:
        n = min(-shift, 62)
        half = (np.int64(1) << (n - 1)) if nearest else np.int64(0)
        for r in prange(rows):
            for j in range(c):
                v = (np.int64(_gated(acc[r, j], gate[r, j], mode)) + half) >> n
                out[r, j] = hi if v > hi else (lo if v < lo else v)


def requant_8bit_ref(acc, gate, mode, shift, nearest, lo=-128, hi=127):
    a = acc.astype(np.int64)
    if mode == GATE_RELU:
        a = np.where(a < 0, 0, a)
    elif mode == GATE_MASK:
        a = np.where(gate <= 0, 0, a)
    if shift >= 0:
        v = a << shift
    else:
        n = min(-shift, 62)
        v = (a + ((1 << (n - 1)) if nearest else 0)) >> n
    return np.clip(v, lo, hi).astype(np.int8 if lo < 0 else np.uint8)


@njit(cache=True, parallel=True)
def residual_add(inp, acc, sh_inp, sh_acc, out):
    """out = (inp << sh_inp) + (acc << sh_acc) in int64: the image plus the network's output at
    one common exponent, exact. Headroom: the caller keeps both shifted operands below 2**60."""
    rows, c = inp.shape
    for r in prange(rows):
        for j in range(c):
            out[r, j] = (np.int64(inp[r, j]) << sh_inp) + (np.int64(acc[r, j]) << sh_acc)


@njit(cache=True, parallel=True)
def l1_grad(out, target, sh_t, grad):
    """grad = sign(out - (target << sh_t)) as int8 (the L1 gradient, exact); returns
    sum |out - (target << sh_t)| in int64 (the loss numerator)."""
    rows, c = out.shape
    per_row = np.zeros(rows, np.int64)
    for r in prange(rows):
        s = np.int64(0)
        for j in range(c):
            d = out[r, j] - (np.int64(target[r, j]) << sh_t)
            grad[r, j] = 1 if d > 0 else (-1 if d < 0 else 0)
            s += d if d > 0 else -d
        per_row[r] = s
    total = np.int64(0)
    for r in range(rows):
        total += per_row[r]
    return total


@njit(cache=True, parallel=True)
def to_u8(v, shift, out):
    """out = clip(round_half_up(v * 2**shift), 0, 255) for int64 v; shift <= 0."""
    rows, c = v.shape
    n = -shift
    half = (np.int64(1) << (n - 1)) if n > 0 else np.int64(0)
    for r in prange(rows):
        for j in range(c):
            p = (v[r, j] + half) >> n
            out[r, j] = 0 if p < 0 else (255 if p > 255 else p)
