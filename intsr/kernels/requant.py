"""Requantization of int32 accumulators to 8-bit tensors (Eq. 10-11 on integers), with the
ReLU forward / backward gates fused in.

``requant_s32`` multiplies an accumulator by ``2**shift`` and rounds as
``fixedpoint.shift_round`` states (floor, or round half up), then ``fixedpoint.saturate`` clips
to [-128, 127] (int8) or [0, 255] (uint8 post-ReLU store). ``requant_relu_pad_u8`` is its
ReLU-forward form for a pass that keeps no activation (the SR pass): the same bytes, written
into the next convolution's zero-padded input. ``max_abs_s32`` gives the maximum
that Eq. 11's scale ``ceil(log2 max|x|)`` is computed from. Gating modes:
  GATE_NONE  plain requantization;
  GATE_RELU  ReLU forward: negative accumulators become 0 (before the scale is chosen);
  GATE_MASK  ReLU backward: zero where the forward activation ``gate`` was not positive.
The convolutions that take Eq. 11's maximum as they go (kernels/dispatch.py) take one of these
modes, GATE_CHANNELS (the ReLU maximum of each output channel: the SR pass's Eq. 11 per channel
group), or GATE_NO_MAX: no maximum, the convolution alone.
"""
import numpy as np
from numba import njit, prange

from intsr.kernels.fixedpoint import saturate, shift_round

GATE_NONE, GATE_RELU, GATE_MASK = 0, 1, 2
GATE_NO_MAX = -1  # the convolutions' "no gate, no maximum" (never a requantization mode)
GATE_CHANNELS = 3  # the convolutions' ReLU maximum per output channel (Eq. 11 per group)


def no_gate(shape):
    """The gate argument of GATE_NONE / GATE_RELU calls: kernels read gate[r, j] only in
    GATE_MASK mode, so a broadcast view of one zero (no memory) stands in."""
    return np.broadcast_to(np.zeros((1, 1), np.int8), shape)


@njit(cache=True, inline="always")
def _gated(a, g, mode):
    if mode == GATE_RELU and a < 0:
        return 0
    if mode == GATE_MASK and g <= 0:
        return 0
    return a


@njit(cache=True, nogil=True, parallel=True)
def max_abs_s32(acc, gate, mode):
    """max |gated(acc)| over a 2-D (rows, C) int32 array, as int64.

    One branch-free loop per gate mode, so that LLVM vectorizes it. Threads own rows; the
    per-row maxima are combined after the loop (no shared reduction)."""
    rows, c = acc.shape
    per_row = np.zeros(rows, np.int64)
    for r in prange(rows):
        m = np.int64(0)
        if mode == GATE_RELU:  # ReLU forward: negatives count as 0, so the max of the values
            for j in range(c):
                m = max(m, np.int64(acc[r, j]))
        elif mode == GATE_MASK:  # ReLU backward: only where the forward activation was positive
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


@njit(cache=True, nogil=True, parallel=True)
def requant_s32(acc, gate, mode, shift, nearest, lo, hi, out):
    """out = saturate(shift_round(gated(acc), shift, nearest), lo, hi); acc 2-D int32 (int64
    for 16-bit operands); out int8 with [lo, hi] = [-128, 127], or uint8 with [0, 255] for
    post-ReLU activations (int16 / uint16 with their ranges at 16 bits, intsr.precision).

    Headroom: a left shift is only requested when max|acc| < 2**bits, so the int64 result
    stays below 2**(2 * bits) <= 2**32."""
    rows, c = acc.shape
    for r in prange(rows):
        for j in range(c):
            v = shift_round(np.int64(_gated(acc[r, j], gate[r, j], mode)), shift, nearest)
            out[r, j] = saturate(v, lo, hi)


@njit(cache=True, inline="always")
def _zero_border(xp, py):
    # the zero padding of row py of xp (H + 2, W + 2, C4): the whole row if it is the first or
    # the last (True: nothing else to write), else its first and last pixels
    hp, wp, c4 = xp.shape
    if py == 0 or py == hp - 1:
        for px in range(wp):
            for ch in range(c4):
                xp[py, px, ch] = 0
        return True
    for ch in range(c4):
        xp[py, 0, ch] = 0
        xp[py, wp - 1, ch] = 0
    return False


@njit(cache=True, nogil=True, parallel=True)
def requant_relu_pad_u8(acc, width, shift, nearest, hi, xp):
    """The ReLU forward requantization of requant_s32 (GATE_RELU, lo 0) written straight into
    the next convolution's input buffer: acc (H * W, C) int32 with W = ``width``, xp
    (H + 2, W + 2, C4) uint8, C4 >= C; xp[1 + y, 1 + x, c] = saturate(shift_round(max(acc, 0),
    shift, nearest), 0, hi) and every other byte (the one-pixel border, channels C..C4) zero:
    the zero-padded layout igemm_u8s8 reads, so no padding pass copies the activations again.
    Values are never negative, so the bytes are those requant_s32 stores as int8 or uint8.
    Rows of xp are independent (threads own them); every byte is written, so the caller
    allocates xp uninitialised."""
    c = acc.shape[1]
    hp, c4 = xp.shape[0], xp.shape[2]
    for i in prange(hp):
        py = np.int64(i)  # prange's index may be unsigned: a signed compare keeps to integers
        if _zero_border(xp, py):
            continue
        base = (py - 1) * width
        for px in range(width):
            r = base + px
            for j in range(c):
                a = np.int64(acc[r, j])
                v = shift_round(a if a > 0 else np.int64(0), shift, nearest)
                xp[py, 1 + px, j] = saturate(v, 0, hi)
            for ch in range(c, c4):
                xp[py, 1 + px, ch] = 0


def requant_relu_pad_u8_grouped(acc, width, shift, nearest, hi, xp):
    """requant_relu_pad_u8 with a shift per channel (the SR pass's per-group Eq. 11 scales,
    igemm_u8s8.conv3x3_grouped): xp[1 + y, 1 + x, j] = saturate(shift_round(max(acc[y * width
    + x, j], 0), shift[j], nearest), 0, hi), every other byte zero. The rounding is taken
    apart per channel as ((a << lsh) + add) >> rsh, which is shift_round's for either sign of
    the shift, so the inner loop has no branch (LLVM vectorizes it with variable shifts), in
    uint32 (16 lanes a register, not int64's 8): a post-ReLU int32 is below 2**31, every
    shift is in -31..31 (ValueError else; Eq. 11's are within -24..8), so a + add < 2**31 +
    2**30, and before a left shift a is first clipped to lim = (hi >> lsh) + 1, which
    saturates all the same and keeps lim << lsh <= 2 * hi."""
    c = shift.size
    if np.any(np.abs(shift) > 31):
        raise ValueError("requant_relu_pad_u8_grouped: shifts beyond 31 bits")
    lsh = np.where(shift > 0, shift, 0).astype(np.uint32)
    rsh = np.where(shift < 0, -shift, 0).astype(np.uint32)
    lim = np.where(shift > 0, (hi >> lsh) + 1, (1 << 31) - 1).astype(np.uint32)
    add = np.zeros(c, np.uint32)
    if nearest:
        add[shift < 0] = np.uint32(1) << (rsh[shift < 0] - np.uint32(1))
    _requant_pad_rows(acc, width, lsh, rsh, add, lim, np.uint32(hi), xp, not lsh.any())


@njit(cache=True, nogil=True, parallel=True)
def _requant_pad_rows(acc, width, lsh, rsh, add, lim, hi, xp, right):
    c = lsh.size
    hp, c4 = xp.shape[0], xp.shape[2]
    for i in prange(hp):
        py = np.int64(i)
        if _zero_border(xp, py):
            continue
        base = (py - 1) * width
        for px in range(width):
            r = base + px
            if right:  # no left shift anywhere (the usual case): two operations fewer
                for j in range(c):
                    a = np.uint32(max(acc[r, j], 0))
                    xp[py, 1 + px, j] = min((a + add[j]) >> rsh[j], hi)
            else:
                for j in range(c):
                    a = min(np.uint32(max(acc[r, j], 0)), lim[j])
                    xp[py, 1 + px, j] = min(((a << lsh[j]) + add[j]) >> rsh[j], hi)
            for ch in range(c, c4):
                xp[py, 1 + px, ch] = 0


@njit(cache=True, nogil=True, parallel=True)
def channel_max_relu_s32(acc, out):
    """out[j] = max(0, max over rows of acc[:, j]) for a 2-D (rows, C) int32 accumulator: the
    per-channel maxima the SR pass's per-group Eq. 11 scales are taken from. Threads own
    blocks of rows; their maxima are combined after the loop (no shared reduction)."""
    rows, c = acc.shape
    nblk = (rows + 255) // 256
    part = np.zeros((nblk, c), np.int64)
    for b in prange(nblk):
        for r in range(b * 256, min(rows, b * 256 + 256)):
            for j in range(c):
                part[b, j] = max(part[b, j], np.int64(acc[r, j]))
    for j in range(c):
        out[j] = 0
    for b in range(nblk):
        for j in range(c):
            out[j] = max(out[j], part[b, j])


def requant_relu_pad_u8_ref(acc, width, shift, nearest, hi, c4):
    out = requant_s32_ref(acc, None, GATE_RELU, shift, nearest, 0, hi).astype(np.uint8)
    h = acc.shape[0] // width
    xp = np.zeros((h + 2, width + 2, c4), np.uint8)
    xp[1:h + 1, 1:width + 1, :acc.shape[1]] = out.reshape(h, width, -1)
    return xp


def requant_s32_ref(acc, gate, mode, shift, nearest, lo=-128, hi=127):
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


def max_abs_s32_ref(acc, gate, mode):
    a = acc.astype(np.int64)
    if mode == GATE_RELU:
        a = np.maximum(a, 0)
    elif mode == GATE_MASK:
        a = np.where(gate > 0, a, 0)
    return int(np.abs(a).max()) if a.size else 0
