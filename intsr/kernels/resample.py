"""Integer resampling: Pillow-compatible bicubic upsampling and the Eq. 1 degradation.

Bicubic taps are derived once per (size, scale) with exact rationals (fractions.Fraction), then
rounded the way Pillow rounds them (22 fractional bits, half away from zero), so the integer
upsampler reproduces ``Image.resize(..., BICUBIC)`` for uint8 images without any float value.
"""
from fractions import Fraction
from functools import lru_cache

import numpy as np
from numba import njit, prange

from intsr.kernels.fixedpoint import saturate, shift_round

# Pillow's Resample.c: PRECISION_BITS = 32 - 8 - 2 for 8-bit images.
BICUBIC_BITS = 22
_A = Fraction(-1, 2)  # Pillow's bicubic uses a = -0.5 (PyTorch uses -0.75: not interchangeable)
_SUPPORT = 2


def _cubic(x):
    x = abs(x)
    if x < 1:
        return ((_A + 2) * x - (_A + 3)) * x * x + 1
    if x < 2:
        return (((x - 5) * x + 8) * x - 4) * _A
    return Fraction(0)


@lru_cache(maxsize=64)
def bicubic_coeffs(in_size, out_size):
    """Exact normalised taps of Pillow's bicubic for one axis: (starts, taps), taps a list of
    Fraction lists, one per output pixel (Pillow's precompute_coeffs, in exact arithmetic)."""
    if in_size < 1 or out_size < 1:
        raise ValueError("resample sizes must be positive")
    scale = Fraction(in_size, out_size)
    filterscale = max(scale, Fraction(1))
    support = _SUPPORT * filterscale
    starts, taps = [], []
    for xx in range(out_size):
        center = (xx + Fraction(1, 2)) * scale
        xmin = max(int(center - support + Fraction(1, 2)), 0)  # int() truncates like C's cast
        xmax = min(int(center + support + Fraction(1, 2)), in_size) - xmin
        w = [_cubic((x + xmin - center + Fraction(1, 2)) / filterscale) for x in range(xmax)]
        total = sum(w)
        starts.append(xmin)
        taps.append([t / total for t in w] if total != 0 else w)
    return tuple(starts), tuple(tuple(t) for t in taps)


@lru_cache(maxsize=64)
def bicubic_table(in_size, out_size):
    """Integer tap table for one axis: (starts int64[out], taps int32[out, width]).

    Each tap is rounded half away from zero to BICUBIC_BITS fractional bits, as Pillow does."""
    starts, taps = bicubic_coeffs(in_size, out_size)
    width = max(len(t) for t in taps)
    table = np.zeros((out_size, width), np.int32)
    one = 1 << BICUBIC_BITS
    for i, row in enumerate(taps):
        for j, t in enumerate(row):
            mag = int(abs(t) * one + Fraction(1, 2))
            table[i, j] = mag if t >= 0 else -mag
    return np.asarray(starts, np.int64), table


@njit(cache=True, parallel=True)
def _resample_rows_u8(src, starts, taps, out):
    # src (H, W, C) uint8 -> out (H, W_out, C) uint8 along axis 1.
    # Headroom: |sum| <= 255 * sum|tap|; sum|tap| <= 1.25 * 2**22 for bicubic, so < 2**31.
    for y in prange(src.shape[0]):
        for x in range(out.shape[1]):
            s0 = starts[x]
            for c in range(src.shape[2]):
                acc = np.int32(0)
                for j in range(taps.shape[1]):
                    t = taps[x, j]
                    if t != 0:
                        acc += np.int32(src[y, s0 + j, c]) * t
                out[y, x, c] = saturate(shift_round(np.int64(acc), -BICUBIC_BITS, True), 0, 255)


def bicubic_upsample_u8(img, scale):
    """Upsample an (H, W, C) uint8 image by an integer factor with Pillow's BICUBIC, integer only.

    Horizontal pass first, then vertical, each rounded and clipped to uint8 like Pillow."""
    h, w, c = img.shape
    starts_x, taps_x = bicubic_table(w, w * scale)
    starts_y, taps_y = bicubic_table(h, h * scale)
    tmp = np.empty((h, w * scale, c), np.uint8)
    _resample_rows_u8(np.ascontiguousarray(img), starts_x, taps_x, tmp)
    out_t = np.empty((w * scale, h * scale, c), np.uint8)
    _resample_rows_u8(np.ascontiguousarray(tmp.transpose(1, 0, 2)), starts_y, taps_y, out_t)
    return np.ascontiguousarray(out_t.transpose(1, 0, 2))


@njit(cache=True)
def _reflect(i, n):
    # scipy.ndimage 'reflect' (d c b a | a b c d), periodic with period 2n for any offset.
    period = 2 * n
    i = i % period
    return i if i < n else period - 1 - i


@njit(cache=True, parallel=True)
def _degrade_u8(img, k, kbits, scale, out):
    # Headroom: |acc| <= 255 * sum|k|, and kernel_to_fixed caps sum|k| at (2**31 - 1) // 255.
    h, w, c = img.shape
    kh, kw = k.shape
    oy0, ox0 = kh // 2, kw // 2  # scipy's default origin: the tap at k.shape // 2 is centred
    off = scale // 2
    for oy in prange(out.shape[0]):
        y = off + oy * scale
        for ox in range(out.shape[1]):
            x = off + ox * scale
            for ch in range(c):
                acc = np.int32(0)
                for i in range(kh):
                    yy = _reflect(y + i - oy0, h)
                    for j in range(kw):
                        acc += k[i, j] * np.int32(img[yy, _reflect(x + j - ox0, w), ch])
                out[oy, ox, ch] = saturate(shift_round(np.int64(acc), -kbits, True), 0, 255)


def degrade_u8(img, k_fixed, kbits, scale):
    """Eq. 1 on integers: 'same' correlation of an (H, W, C) uint8 image with fixed-point taps
    (``kbits`` fractional bits; see floatpath.convert.kernel_to_fixed), reflect padding, keeping
    pixels s//2, s//2 + s, ... only (the others are never computed). Rounded half up, clipped
    to uint8: the son of the input image."""
    h, w, c = img.shape
    off = scale // 2
    out = np.empty(((h - off + scale - 1) // scale, (w - off + scale - 1) // scale, c), np.uint8)
    _degrade_u8(np.ascontiguousarray(img), np.ascontiguousarray(k_fixed, np.int32), kbits, scale,
                out)
    return out


def degrade_u8_ref(img, k_fixed, kbits, scale):
    """Plain reference of degrade_u8: every tap of every kept pixel, in Python int64."""
    h, w, c = img.shape
    kh, kw = k_fixed.shape
    off = scale // 2

    def reflect(i, n):
        i %= 2 * n
        return i if i < n else 2 * n - 1 - i
    ys, xs = range(off, h, scale), range(off, w, scale)
    out = np.empty((len(ys), len(xs), c), np.uint8)
    for oy, y in enumerate(ys):
        for ox, x in enumerate(xs):
            for ch in range(c):
                acc = sum(int(k_fixed[i, j]) * int(img[reflect(y + i - kh // 2, h),
                                                       reflect(x + j - kw // 2, w), ch])
                          for i in range(kh) for j in range(kw))
                out[oy, ox, ch] = min(255, max(0, (acc + (1 << (kbits - 1))) >> kbits))
    return out
