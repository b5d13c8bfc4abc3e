"""im2col for 3x3, stride 1, zero padding 1, on HWC (channels-last) integer images.

Layout: row ``y*W + x`` holds the 3x3 neighbourhood of pixel (y, x), column ``(dy*3 + dx)*C + c``.
Channels-last keeps each tap's C values contiguous, so a row is nine memcpy-sized runs and the
GEMM's inner loop walks contiguous memory. There is no col2im: the activation gradient is a
correlation of the output gradient with the flipped, transposed weights (backward.py), which
reuses im2col and needs no scatter-add (no write races between threads, no extra buffer).
"""
import numpy as np
from numba import njit, prange

# Bytes of im2col rows materialised at once: images are processed in bands of output rows so
# the 9x copy stays bounded (4 MiB) whatever the image size.
BAND_BYTES = 1 << 22


@njit(cache=True, nogil=True, parallel=True)
def im2col_3x3(x, y0, out):
    """x (H, W, C) int8/uint8 -> out (R*W, 9*C): the rows of output rows y0 .. y0+R-1, with
    R = out.shape[0] // W; pure copies, no arithmetic."""
    h, w, c = x.shape
    for r in prange(out.shape[0] // w):
        y = y0 + r
        for xx in range(w):
            row = r * w + xx
            for dy in range(3):
                yy = y + dy - 1
                for dx in range(3):
                    xs = xx + dx - 1
                    base = (dy * 3 + dx) * c
                    if yy < 0 or yy >= h or xs < 0 or xs >= w:
                        for ch in range(c):
                            out[row, base + ch] = 0
                    else:
                        for ch in range(c):
                            out[row, base + ch] = x[yy, xs, ch]


def im2col_3x3_ref(x):
    """Plain NumPy reference of im2col_3x3 (all rows)."""
    h, w, c = x.shape
    p = np.zeros((h + 2, w + 2, c), x.dtype)
    p[1:-1, 1:-1] = x
    cols = [p[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)]
    return np.concatenate(cols, axis=2).reshape(h * w, 9 * c)


def bands(x):
    """(y0, im2col rows of the band) over an (H, W, C) image, at most BAND_BYTES per band."""
    h, w, c = x.shape
    rows = max(1, BAND_BYTES // (w * 9 * c * x.itemsize))
    x = np.ascontiguousarray(x)
    for y0 in range(0, h, rows):
        out = np.empty((min(rows, h - y0) * w, 9 * c), x.dtype)
        im2col_3x3(x, y0, out)
        yield y0, out


def im2col(x):
    """All im2col rows of an image at once (tests and small images)."""
    h, w, c = x.shape
    out = np.empty((h * w, 9 * c), x.dtype)
    im2col_3x3(np.ascontiguousarray(x), 0, out)
    return out
