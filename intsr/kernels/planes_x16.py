"""16-bit operands on the 8-bit kernels, exactly: each 16-bit tensor is split into byte planes
that the u8 x s8 kernels accept, and the partial products are added in int64 with their shifts.
No new inner loop: the 8-bit kernel is an argument, the one kernels/dispatch.py chose (a
register tile or the portable path), so every path that computes the 8-bit kernels bit-exactly
computes these too. Only dispatch.py calls this module; it runs the one common case of the
mixed profiles, 16-bit data against 8-bit weights, as both planes in one pass of the tile
instead where the tile fits (igemm_u8s8.conv3x3_x16: no int32 partial arrays, one int64 write).

Data operands (activations, gradients; the kernels take uint8 or int8 here):
  uint16 x = 256 * (x >> 8) + (x & 255)          both planes uint8
  int16  x = 256 * (x >> 8) + (x & 255)          high plane int8 (arithmetic shift), low uint8
Weights and the weight kernel's gradient operand (the kernels take int8 only):
  int16 w = 256 * (w >> 8) + ((w & 255) - 128) + 128
the low plane shifted into int8, and the constant 128 added back as 128 * (x (*) ones):
box_sum_x8, the 3x3 box sum of the channel sum of x (for the weight gradient tap_sums_x8, the
per-tap sums of x), broadcast over the output channels: C adds a pixel instead of a conv.

8-bit data against 16-bit weights over at most W16_NARROW_MAX input channels (the first
layer's 3, where the x2 profile keeps 16-bit weights) stays in int32: both weight planes' int32
outputs are combined in place with the box sum taken on the fly (combine_w16_s32), instead of
three passes over an int64 output (at 272 px on one thread: 38 ms -> a few, in an SR pass).

Headroom: every partial is exact in the 8-bit kernel's own accumulator (int32 conv: at most
576 products of < 2**15 each, below 2**25; int64 weight gradient). Conv partials are shifted by
at most 8 + 8 (< 2**41) and at most six are added: below 2**44. Weight-gradient partials: at
most 256 x 256 training pixels (online.TRAIN_MAX) of products < 2**15 are below 2**31, shifted
by at most 16 and summed six times: below 2**50. All int64, no wrap.
"""
import numpy as np
from numba import njit, prange


@njit(cache=True, nogil=True, parallel=True)
def add_shifted_s64(out, part, shift, first):
    """out (rows, C) int64 (+)= part << shift, in one pass, for an int32 or int64 part of
    shape (rows, C) or (rows, 1) (broadcast over C); ``first`` writes instead of adding.
    Headroom: the module docstring's bounds (every shifted partial and sum below 2**50)."""
    rows, c = out.shape
    bcast = part.shape[1] == 1
    for r in prange(rows):
        for j in range(c):
            v = np.int64(part[r, 0] if bcast else part[r, j]) << shift
            out[r, j] = v if first else out[r, j] + v


@njit(cache=True, nogil=True, inline="always")
def _box3(x, y, xx):
    # the sum of x over the 3x3 window at (y, xx) and all channels, zero padding, int64
    h, w, c = x.shape
    s = np.int64(0)
    for dy in range(-1, 2):
        if 0 <= y + dy < h:
            for dx in range(-1, 2):
                if 0 <= xx + dx < w:
                    for k in range(c):
                        s += np.int64(x[y + dy, xx + dx, k])
    return s


@njit(cache=True, nogil=True, parallel=True)
def box_sum_x8(x, out):
    """out (H*W, 1) int64 = x (*) an all-ones 3x3 filter with one output channel (zero
    padding): the sum of x over each 3x3 window and all channels. |sum| < 9 * 64 * 2**8."""
    h, w, _ = x.shape
    for y in prange(h):
        for xx in range(w):
            out[y * w + xx, 0] = _box3(x, y, xx)


@njit(cache=True, nogil=True, parallel=True)
def tap_sums_x8(x, out):
    """out (9*C, 1) int64, row (dy*3 + dx)*C + c = sum over output pixels of the zero-padded
    x at the tap's offset: the weight gradient of x against an all-ones one-channel gradient.
    |sum| < 2**16 pixels * 2**8."""
    h, w, c = x.shape
    for t in prange(9 * c):
        tap, k = t // c, t % c
        dy, dx = tap // 3 - 1, tap % 3 - 1
        s = np.int64(0)
        for y in range(max(0, -dy), min(h, h - dy)):
            for xx in range(max(0, -dx), min(w, w - dx)):
                s += np.int64(x[y + dy, xx + dx, k])
        out[t, 0] = s


W16_NARROW_MAX = 28  # input channels: 9 * 28 * 255 * (2**15 + 2**8) < 2**31 (below)


@njit(cache=True, nogil=True, parallel=True)
def combine_w16_s32(hi, lo, x):
    """hi (H, W, N) int32 = hi * 2**8 + lo + 2**7 * box(x), in place: the conv of 8-bit x
    (H, W, C <= W16_NARROW_MAX) with int16 w = 2**8 (w >> 8) + ((w & 255) - 128) + 128, from
    hi = x (*) (w >> 8) and lo = x (*) ((w & 255) - 128) (int8 planes), and box(x) the 3x3
    box sum over all channels (zero padding), the 128 term. Headroom: |x| <= 255 and 9 C taps,
    so |hi| 2**8 <= 9 C 255 2**15, |lo| and |box| 2**7 <= 9 C 255 2**7: every partial sum is
    below 9 * 28 * 255 * (2**15 + 2**8) < 2**31 (int64 in registers regardless)."""
    h, w, _ = x.shape
    n = hi.shape[2]
    for y in prange(h):
        for xx in range(w):
            box = _box3(x, y, xx) << 7
            for j in range(n):
                hi[y, xx, j] = (np.int64(hi[y, xx, j]) << 8) + lo[y, xx, j] + box


def conv3x3_w16_narrow(x, w, conv8):
    """x (H, W, C_in <= W16_NARROW_MAX) uint8/int8, w (3, 3, C_in, C_out) int16 -> (H, W, C_out)
    int32, exact, from ``conv8`` on the two weight planes and one combining pass."""
    if x.itemsize != 1 or w.dtype != np.int16 or x.shape[2] > W16_NARROW_MAX:
        raise ValueError("8-bit data, int16 weights, at most W16_NARROW_MAX input channels")
    (hi_w, _), (lo_w, _) = _int8_planes(w)[0]
    hi = np.ascontiguousarray(conv8(x, hi_w))
    combine_w16_s32(hi, np.ascontiguousarray(conv8(x, lo_w)), np.ascontiguousarray(x))
    return hi


def add_shifted_s64_ref(out, part, shift, first):
    v = part.astype(np.int64) << shift
    return np.broadcast_to(v, out.shape).copy() if first else out + v


def _data_planes(x):
    """[(8-bit plane, shift)] of an activation or gradient."""
    if x.itemsize == 1:
        return [(x, 0)]
    hi = (x >> 8).astype(np.uint8 if x.dtype == np.uint16 else np.int8)
    return [(hi, 8), ((x & 255).astype(np.uint8), 0)]


def _int8_planes(w):
    """[(int8 plane, shift)] of an int8 / int16 operand, and whether the +128 term is owed."""
    if w.dtype == np.int8:
        return [(w, 0)], False
    return [((w >> 8).astype(np.int8), 8), (((w & 255) - 128).astype(np.int8), 0)], True


def conv3x3_x16(x, w, conv8):
    """x (H, W, C_in) uint8/int8/uint16/int16, w (3, 3, C_in, C_out) int8/int16, at least one
    16-bit -> (H, W, C_out) int64, exact, from ``conv8(x8, w8)``, the 8-bit conv (int32) on
    each pair of byte planes."""
    h, wd = x.shape[:2]
    out = np.empty((h * wd, w.shape[3]), np.int64)
    first = True
    planes, owed = _int8_planes(w)
    for xp, xs in _data_planes(x):
        for wp, ws in planes:
            add_shifted_s64(out, conv8(xp, wp).reshape(h * wd, -1), xs + ws, first)
            first = False
        if owed:
            box = np.empty((h * wd, 1), np.int64)
            box_sum_x8(xp, box)
            add_shifted_s64(out, box, xs + 7, False)
    return out.reshape(h, wd, -1)


def wgrad3x3_x16(x, g, wgrad8):
    """Weight gradient for uint8/uint16 activations and int8/int16 gradients, at least one
    16-bit -> (9*C_in, n_kept) int64, exact, from ``wgrad8(x8, g8)``, the 8-bit weight
    gradient (int64) on each pair of byte planes."""
    out = np.empty((9 * x.shape[2], g.shape[2]), np.int64)
    first = True
    planes, owed = _int8_planes(g)
    for xp, xs in _data_planes(x):
        for gp, gs in planes:
            add_shifted_s64(out, wgrad8(xp, gp), xs + gs, first)
            first = False
        if owed:
            taps = np.empty((9 * x.shape[2], 1), np.int64)
            tap_sums_x8(xp, taps)
            add_shifted_s64(out, taps, xs + 7, False)
    return out
