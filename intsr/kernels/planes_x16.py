"""16-bit operands on the 8-bit kernels, exactly: each 16-bit tensor is split into byte planes
that the u8 x s8 kernels of dispatch.py accept, and the partial products are added in int64
with their shifts. No new inner loop: the same tiles (VNNI or portable) compute every product,
so every path that computes the 8-bit kernels bit-exactly computes these too.

Data operands (activations, gradients; the kernels take uint8 or int8 here):
  uint16 x = 256 * (x >> 8) + (x & 255)          both planes uint8
  int16  x = 256 * (x >> 8) + (x & 255)          high plane int8 (arithmetic shift), low uint8
Weights and the weight kernel's gradient operand (the kernels take int8 only):
  int16 w = 256 * (w >> 8) + ((w & 255) - 128) + 128
the low plane shifted into int8, and the constant 128 added back as 128 * (x (*) ones): one more
call with a single all-ones output channel (a 3x3 box sum), broadcast over the channels.

Headroom: every partial is exact in the 8-bit kernel's own accumulator (int32 conv: at most
576 products of < 2**15 each, below 2**25; int64 weight gradient). Conv partials are shifted by
at most 8 + 8 (< 2**41) and at most six are added: below 2**44. Weight-gradient partials: at
most 256 x 256 training pixels (online.TRAIN_MAX) of products < 2**15 are below 2**31, shifted
by at most 16 and summed six times: below 2**50. All int64, no wrap.
"""
import numpy as np

from intsr.kernels.dispatch import agrad_weights, conv3x3_u8s8, wgrad3x3_u8s8


def _data_planes(x):
    """[(8-bit plane, shift)] of an activation or gradient."""
    if x.itemsize == 1:
        return [(x, 0)]
    hi = (x >> 8).astype(np.uint8 if x.dtype == np.uint16 else np.int8)
    return [(hi, 8), ((x & 255).astype(np.uint8), 0)]


def _int8_planes(w, ones_shape):
    """[(int8 plane, shift)] of an int8 / int16 operand; the last plane of an int16 one is an
    all-ones array of ``ones_shape`` (the +128 term)."""
    if w.dtype == np.int8:
        return [(w, 0)]
    return [((w >> 8).astype(np.int8), 8), (((w & 255) - 128).astype(np.int8), 0),
            (np.ones(ones_shape, np.int8), 7)]


def conv3x3_x16(x, w):
    """x (H, W, C_in) uint8/int8/uint16/int16, w (3, 3, C_in, C_out) int8/int16 -> (H, W, C_out)
    exact: int32 (conv3x3_u8s8 itself) when both are 8-bit, else int64."""
    if x.itemsize == 1 and w.dtype == np.int8:
        return conv3x3_u8s8(x, w)
    out = np.zeros(x.shape[:2] + (w.shape[3],), np.int64)
    for xp, xs in _data_planes(x):
        for wp, ws in _int8_planes(w, w.shape[:3] + (1,)):
            out += conv3x3_u8s8(xp, wp).astype(np.int64) << np.int64(xs + ws)
    return out


def agrad3x3_x16(g, w, kept_in, kept_out):
    """dispatch.agrad3x3_s8s8 for int8/int16 gradients and weights: int32 or int64, exact."""
    return conv3x3_x16(g, agrad_weights(w, kept_in, kept_out))


def wgrad3x3_x16(x, g):
    """dispatch.wgrad3x3_u8s8 for uint8/uint16 activations and int8/int16 gradients ->
    (9*C_in, n_kept) int64, exact."""
    if x.itemsize == 1 and g.dtype == np.int8:
        return wgrad3x3_u8s8(x, g)
    out = np.zeros((9 * x.shape[2], g.shape[2]), np.int64)
    for xp, xs in _data_planes(x):
        for gp, gs in _int8_planes(g, g.shape[:2] + (1,)):
            out += wgrad3x3_u8s8(xp, np.ascontiguousarray(gp)) << np.int64(xs + gs)
    return out
