"""Float reference of the project's one degradation convention (Eq. 1) and of the bicubic
upsampler. The offline trainer uses these so that training data and the device agree.

Eq. 1 convention: ``I_LR = (I_HR * k) downsampled by s`` where ``*`` is a 'same' correlation with
reflect padding (scipy.ndimage 'reflect': d c b a | a b c d) and the subsampling keeps the
pixels of a sampling grid along each axis: ``s//2, s//2 + s, ...`` ("centre", the default) or
``0, s, 2s, ...`` ("corner", MZSR's; see intsr.kernels.resample).
"""
import numpy as np

from intsr.kernels.resample import bicubic_coeffs, bicubic_shift, grid_offset


def degrade(img, kernel, scale, grid="centre"):
    """Eq. 1 in float64: correlate each channel with ``kernel`` (reflect), keep ``off::s`` with
    ``off`` the grid's first pixel.

    ``img`` is (H, W) or (H, W, C) float; the result has ``ceil((H - off) / s)`` rows."""
    # imported here: the device imports this module for the resizers' kernels (realdeg) and
    # never runs Eq. 1 in float; scipy.ndimage costs every `intsr` run 0.1-0.2 s to import
    from scipy import ndimage

    img = np.asarray(img, np.float64)
    k = np.asarray(kernel, np.float64)
    off = grid_offset(grid, scale)
    if img.ndim == 2:
        return ndimage.correlate(img, k, mode="reflect")[off::scale, off::scale]
    return np.stack([ndimage.correlate(img[..., c], k, mode="reflect")[off::scale, off::scale]
                     for c in range(img.shape[2])], axis=-1)


def lr_image(hr, kernel, scale, grid="centre"):
    """Eq. 1 to 8-bit pixels, the one way test and training LR images are made: ``degrade`` of
    ``hr`` (uint8, or float in [0, 1]), rounded half up and clipped to uint8 like the output of
    a real camera."""
    hr = np.asarray(hr)
    x = hr / 255.0 if hr.dtype == np.uint8 else hr
    return np.clip(np.floor(degrade(x, kernel, scale, grid) * 255 + 0.5), 0,
                   255).astype(np.uint8)


def _axis_matrix(in_size, out_size, shift):
    starts, taps = bicubic_coeffs(in_size, out_size, shift)
    m = np.zeros((out_size, in_size))
    for i, (s0, row) in enumerate(zip(starts, taps, strict=True)):
        m[i, s0:s0 + len(row)] = [float(t) for t in row]
    return m


def bicubic_upsample(img, scale, clip=True, grid="centre"):
    """Pillow-compatible bicubic upsampling (a = -0.5) of an (H, W[, C]) float image in [0, 1],
    on ``grid`` like intsr.kernels.resample.bicubic_upsample_u8.

    Horizontal pass then vertical, each clipped to [0, 1] like Pillow's 8-bit path (without its
    rounding to 1/255)."""
    img = np.asarray(img, np.float64)
    h, w = img.shape[:2]
    shift = bicubic_shift(scale, grid)
    mx = _axis_matrix(w, w * scale, shift)
    my = _axis_matrix(h, h * scale, shift)
    tmp = np.einsum("ow,hw...->ho...", mx, img)
    if clip:
        tmp = np.clip(tmp, 0.0, 1.0)
    out = np.einsum("oh,h...->o...", my, tmp)
    return np.clip(out, 0.0, 1.0) if clip else out
