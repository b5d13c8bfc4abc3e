"""SGD into integer weights: Eq. 15 (32-bit masters) and Eq. 12-13 (standard 8-bit weights).

The learning rate is an integer multiplier and shift, ``lr = mult * 2**-shift`` (the mean-L1
1/N factor is folded into it at the boundary). Weights are HWIO flattened to (9*C_in, C_out);
the gradient has one column per kept output channel (Eq. 6: masked columns are not touched).
"""
import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def sgd_update(w, grad, kept, g_shift, lr_mult, lr_shift, nearest, lo, hi, out):
    """out[:, kept[j]] = w[:, kept[j]] - round(sat(round(grad[:, j] * 2**g_shift)) * lr_mult
    * 2**-lr_shift); other columns copied. out is int64 and not saturated (the caller re-scales
    32-bit masters or saturates 8-bit weights).

    Line 1 of Eq. 15 / Eq. 12 is the rescale ``sat(round(grad * 2**g_shift))`` into [lo, hi];
    line 2 is the product with the learning rate. Headroom: |rescaled| <= 2**31 and
    lr_mult < 2**16, so the product is below 2**47 in int64."""
    k, n = w.shape
    nk = kept.shape[0]
    if g_shift < 0:
        gn = min(-g_shift, 62)
        ghalf = (np.int64(1) << (gn - 1)) if nearest else np.int64(0)
    else:
        gn = 0
        ghalf = np.int64(0)
    lhalf = (np.int64(1) << (lr_shift - 1)) if (nearest and lr_shift > 0) else np.int64(0)
    for r in prange(k):
        for c in range(n):
            out[r, c] = w[r, c]
        for j in range(nk):
            g = np.int64(grad[r, j])
            if g_shift >= 0:
                g = g << min(g_shift, 32)
            else:
                g = (g + ghalf) >> gn
            g = hi if g > hi else (lo if g < lo else g)
            upd = (g * lr_mult + lhalf) >> lr_shift
            out[r, kept[j]] = np.int64(w[r, kept[j]]) - upd


def sgd_update_ref(w, grad, kept, g_shift, lr_mult, lr_shift, nearest, lo, hi):
    out = w.astype(np.int64).copy()
    g = grad.astype(np.int64)
    if g_shift >= 0:
        g = g << min(g_shift, 32)
    else:
        n = min(-g_shift, 62)
        g = (g + ((1 << (n - 1)) if nearest else 0)) >> n
    g = np.clip(g, lo, hi)
    half = (1 << (lr_shift - 1)) if (nearest and lr_shift > 0) else 0
    out[:, kept] -= (g * lr_mult + half) >> lr_shift
    return out
