"""SGD into integer weights: Eq. 15 (32-bit masters) and Eq. 12-13 (standard 8-bit weights).

The learning rate is an integer multiplier and shift, ``lr = mult * 2**-shift`` (the mean-L1
1/N factor is folded into it at the boundary). Weights are HWIO flattened to (9*C_in, C_out);
the gradient has one column per kept output channel (Eq. 6: masked columns are not touched).
"""
import numpy as np
from numba import njit, prange

from intsr.kernels.fixedpoint import saturate, shift_round


@njit(cache=True, nogil=True, parallel=True)
def sgd_update_s32(w, grad, kept, g_shift, lr_mult, lr_shift, nearest, lo, hi, out):
    """out[:, kept[j]] = w[:, kept[j]] - shift_round(saturate(shift_round(grad[:, j],
    g_shift), lo, hi) * lr_mult, -lr_shift); other columns copied. ``w`` and ``grad`` are int32
    (32-bit masters) or int8 (the standard mode's weights); out is int64 and not saturated (the
    caller re-scales 32-bit masters or saturates 8-bit weights).

    Line 1 of Eq. 15 / Eq. 12 is the rescale of the gradient to the weight's scale, saturated
    to [lo, hi]; line 2 is the product with the learning rate. Headroom: a left shift beyond 32
    bits saturates every non-zero gradient anyway, so it is capped at 32 (|grad| < 2**31 stays
    below 2**63); |rescaled| <= 2**31 and lr_mult < 2**16 keep the product below 2**47."""
    k, n = w.shape
    nk = kept.shape[0]
    g_shift = min(g_shift, 32)
    for r in prange(k):
        for c in range(n):
            out[r, c] = w[r, c]
        for j in range(nk):
            g = saturate(shift_round(np.int64(grad[r, j]), g_shift, nearest), lo, hi)
            out[r, kept[j]] = np.int64(w[r, kept[j]]) - shift_round(g * lr_mult, -lr_shift,
                                                                     nearest)


def sgd_update_s32_ref(w, grad, kept, g_shift, lr_mult, lr_shift, nearest, lo, hi):
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
