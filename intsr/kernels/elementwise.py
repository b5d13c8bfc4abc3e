"""Element-wise integer kernels around the network: the residual add, the L1 loss gradient and
the final conversion to pixels. Each has a NumPy reference below it.
"""
import numpy as np
from numba import njit, prange

from intsr.kernels.fixedpoint import saturate, shift_round


@njit(cache=True, nogil=True, parallel=True)
def residual_add_u8s32(inp, acc, sh_inp, sh_acc, out):
    """out = (inp << sh_inp) + (acc << sh_acc) in int64: the uint8 image plus the network's
    int32 (int64 with 16-bit operands) output at one common exponent, exact. Headroom: the
    caller keeps sh_inp <= 54 and |acc| < 2**(62 - sh_acc) (sh_acc <= 31 for int32), so both
    terms are below 2**62 in magnitude and their sum cannot wrap."""
    rows, c = inp.shape
    for r in prange(rows):
        for j in range(c):
            out[r, j] = (np.int64(inp[r, j]) << sh_inp) + (np.int64(acc[r, j]) << sh_acc)


@njit(cache=True, nogil=True, parallel=True)
def l1_grad_s64(out, target, sh_t, grad):
    """grad = sign(out - (target << sh_t)) as int8 (the L1 gradient, exact) for int64 out and
    uint8 target; returns sum |out - (target << sh_t)| in int64 (the loss numerator)."""
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


@njit(cache=True, nogil=True, parallel=True)
def pixels_s64(v, shift, out):
    """out = saturate(shift_round(v, shift, nearest), 0, 255) as uint8 for int64 v, shift <= 0:
    the network's output, rounded half up to 8-bit pixels."""
    rows, c = v.shape
    for r in prange(rows):
        for j in range(c):
            out[r, j] = saturate(shift_round(v[r, j], shift, True), 0, 255)


def residual_add_u8s32_ref(inp, acc, sh_inp, sh_acc):
    return (inp.astype(np.int64) << sh_inp) + (acc.astype(np.int64) << sh_acc)


def l1_grad_s64_ref(out, target, sh_t):
    d = out - (target.astype(np.int64) << sh_t)
    return int(np.abs(d).sum()), np.sign(d).astype(np.int8)


def pixels_s64_ref(v, shift):
    n = -shift
    return np.clip((v + ((1 << (n - 1)) if n else 0)) >> n, 0, 255).astype(np.uint8)
