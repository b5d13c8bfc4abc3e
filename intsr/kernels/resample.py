"""Integer resampling: Pillow-compatible bicubic upsampling and the Eq. 1 degradation, on a
sampling grid.

The grid says which HR pixels an LR pixel is (Eq. 1's "downsampled by s"): ``"centre"`` keeps
pixels ``s//2, s//2 + s, ...`` (this project's convention since session 1), ``"corner"`` keeps
``0, s, 2s, ...`` (MZSR, ZSSR and KernelGAN: ``correlate(HR, k)[::s, ::s]``). The bicubic
upsampler follows the grid: on the centre grid it is Pillow's ``Image.resize(BICUBIC)``, on the
corner grid the same filter sampled ``s//2`` output pixels later. Either way the upsampled LR
pixel lands at the same place relative to the HR pixel Eq. 1 kept (for even s, Pillow's half
an HR pixel before it), so the network input has the geometry the weights were trained on
and one set of weights serves both grids.

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
GRIDS = ("centre", "corner")


def grid_offset(grid, scale):
    """Index of the first HR pixel Eq. 1 keeps on ``grid``."""
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}, not {grid!r}")
    return scale // 2 if grid == "centre" else 0


def _cubic(x):
    x = abs(x)
    if x < 1:
        return ((_A + 2) * x - (_A + 3)) * x * x + 1
    if x < 2:
        return (((x - 5) * x + 8) * x - 4) * _A
    return Fraction(0)


@lru_cache(maxsize=64)
def bicubic_coeffs(in_size, out_size, shift=0):
    """Exact normalised taps of Pillow's bicubic for one axis: (starts, taps), taps a list of
    Fraction lists, one per output pixel (Pillow's precompute_coeffs, in exact arithmetic);
    ``shift`` samples output pixel xx where Pillow samples xx + shift (0: Pillow itself)."""
    if in_size < 1 or out_size < 1:
        raise ValueError("resample sizes must be positive")
    scale = Fraction(in_size, out_size)
    filterscale = max(scale, Fraction(1))
    # Positions in units of 1 / (2 out_size), so each row's window is found in integers:
    # centre = (xx + shift + 1/2) in / out, support = _SUPPORT filterscale; floor division
    # stands for C's truncating cast, which differs only below 0 (a start there is clamped to
    # 0, an end there leaves no taps either way).
    den = 2 * out_size
    support = 2 * _SUPPORT * max(in_size, out_size)
    # A row's taps depend only on where its window starts relative to the centre and on its
    # width, so they repeat with the scale's period (every row inside the borders of an
    # integer upscale is one of `scale` rows): each is derived once in exact rationals (row by
    # row, a 1080p frame's two axes took 0.2 s, every run).
    starts, taps, rows = [], [], {}
    for xx in range(out_size):
        center = (2 * (xx + shift) + 1) * in_size
        xmin = max((center - support + out_size) // den, 0)
        xmax = min((center + support + out_size) // den, in_size) - xmin
        key = (xmin * den - center, xmax)
        if key not in rows:
            off = Fraction(key[0], den) + Fraction(1, 2)
            w = [_cubic((x + off) / filterscale) for x in range(xmax)]
            total = sum(w)
            rows[key] = tuple(t / total for t in w) if total != 0 else tuple(w)
        starts.append(xmin)
        taps.append(rows[key])
    return tuple(starts), tuple(taps)


@lru_cache(maxsize=64)
def bicubic_table(in_size, out_size, shift=0):
    """Integer tap table for one axis: (starts int64[out], taps int32[out, width]).

    Each tap is rounded half away from zero to BICUBIC_BITS fractional bits, as Pillow does."""
    starts, taps = bicubic_coeffs(in_size, out_size, shift)
    width = max(len(t) for t in taps)
    table = np.zeros((out_size, width), np.int32)
    one = 1 << BICUBIC_BITS
    # bicubic_coeffs repeats one tuple for equal rows: round each once, found by identity
    # (hashing a row of Fractions costs more than the table); `taps` keeps every row alive
    rounded = {}
    for i, row in enumerate(taps):
        if id(row) not in rounded:
            mags = [int(abs(t) * one + Fraction(1, 2)) for t in row]
            rounded[id(row)] = [m if t >= 0 else -m for m, t in zip(mags, row, strict=True)]
        table[i, :len(row)] = rounded[id(row)]
    return np.asarray(starts, np.int64), table


@njit(cache=True, nogil=True, parallel=True)
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


@njit(cache=True, nogil=True, parallel=True)
def _resample_cols_u8(src, starts, taps, out):
    # src (H, W * C) uint8 -> out (H_out, W * C) uint8 along axis 0: output row y is the taps of
    # row y applied to src rows starts[y]..; the same integers as _resample_rows_u8 along the
    # other axis (an exact int32 sum in any order, same headroom), whole rows at a time so
    # the pass reads rows in place instead of a transposed copy (1080p x2: the two transposes
    # cost more than both passes).
    n = src.shape[1]
    for i in prange(out.shape[0]):
        y = np.int64(i)
        s0 = starts[y]
        acc = np.zeros(n, np.int32)
        for j in range(taps.shape[1]):
            t = taps[y, j]
            if t != 0:
                for k in range(n):
                    acc[k] += np.int32(src[s0 + j, k]) * t
        for k in range(n):
            out[y, k] = saturate(shift_round(np.int64(acc[k]), -BICUBIC_BITS, True), 0, 255)


def bicubic_shift(scale, grid):
    """Output pixels by which the upsampler's samples move on ``grid`` (0 on the centre grid)."""
    return scale // 2 - grid_offset(grid, scale)


def bicubic_upsample_u8(img, scale, grid="centre"):
    """Upsample an (H, W, C) uint8 image by an integer factor with Pillow's BICUBIC, integer
    only, on ``grid`` (see the module docstring).

    Horizontal pass first, then vertical, each rounded and clipped to uint8 like Pillow."""
    h, w, c = img.shape
    shift = bicubic_shift(scale, grid)
    starts_x, taps_x = bicubic_table(w, w * scale, shift)
    starts_y, taps_y = bicubic_table(h, h * scale, shift)
    tmp = np.empty((h, w * scale, c), np.uint8)
    _resample_rows_u8(np.ascontiguousarray(img), starts_x, taps_x, tmp)
    out = np.empty((h * scale, w * scale, c), np.uint8)
    _resample_cols_u8(tmp.reshape(h, -1), starts_y, taps_y, out.reshape(h * scale, -1))
    return out


@njit(cache=True, nogil=True)
def _reflect(i, n):
    # scipy.ndimage 'reflect' (d c b a | a b c d), periodic with period 2n for any offset.
    period = 2 * n
    i = i % period
    return i if i < n else period - 1 - i


@njit(cache=True, nogil=True, parallel=True)
def _degrade_u8(img, k, kbits, scale, off, out):
    # Headroom: |acc| <= 255 * sum|k|, and kernel_to_fixed caps sum|k| at (2**31 - 1) // 255.
    h, w, c = img.shape
    kh, kw = k.shape
    oy0, ox0 = kh // 2, kw // 2  # scipy's default origin: the tap at k.shape // 2 is centred
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


def degrade_u8(img, k_fixed, kbits, scale, grid="centre"):
    """Eq. 1 on integers: 'same' correlation of an (H, W, C) uint8 image with fixed-point taps
    (``kbits`` fractional bits; see floatpath.convert.kernel_to_fixed), reflect padding, keeping
    the pixels of ``grid`` only (the others are never computed). Rounded half up, clipped to
    uint8: the son of the input image."""
    h, w, c = img.shape
    off = grid_offset(grid, scale)
    out = np.empty(((h - off + scale - 1) // scale, (w - off + scale - 1) // scale, c), np.uint8)
    _degrade_u8(np.ascontiguousarray(img), np.ascontiguousarray(k_fixed, np.int32), kbits, scale,
                off, out)
    return out


def degrade_u8_ref(img, k_fixed, kbits, scale, grid="centre"):
    """Plain reference of degrade_u8: every tap of every kept pixel, in Python int64."""
    h, w, c = img.shape
    kh, kw = k_fixed.shape
    off = grid_offset(grid, scale)

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
