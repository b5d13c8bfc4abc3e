"""The three convolution kernels of a step, and the one place that chooses how they run.

``PATH`` is the register tile of kernels/igemm_u8s8.py (implicit GEMM) that the target Numba
compiles for can run (kernels/isa.py): ``"vnni"`` (AVX-512 VNNI), ``"avxvnni"`` (AVX-VNNI on
ymm) or ``"avx2"``; else, or with ``INTSR_NO_VNNI`` set, ``"portable"`` (kernels/gemm_x8s8.py).
All compute the same integers; each public kernel below has a plain int64 reference under it.

Names follow the operand types (CMSIS-NN style): ``conv3x3_u8s8`` takes uint8 activations
(the image, or post-ReLU values, which are never negative: their int8 bytes read as uint8 are
the same numbers) and int8 weights; ``agrad3x3_s8s8`` an int8 gradient and int8 weights;
``wgrad3x3_u8s8`` uint8 activations and an int8 gradient.
"""
import os

import numpy as np
from numba import njit

from intsr.kernels import gemm_x8s8, igemm_u8s8
from intsr.kernels.isa import TILE
from intsr.kernels.requant import max_abs_s32, no_gate

PATH = TILE or "portable"
_TILE_MAX_N = 64  # output channels of one register tile


def kernels_cached():
    """Whether the on-disk cache already holds compiled kernels (else the first call compiles
    them, for about a minute). Numba keeps the cache beside the package, or in the user's cache
    folder when the package folder is read-only. Reads a private attribute of Numba: any doubt
    answers True, so the worst case is a missing notice, never a failure."""
    from intsr.kernels.requant import requant_s32
    try:
        return os.path.exists(requant_s32._cache._cache_file._index_path)
    except AttributeError:
        return True


def tile_fits(n):
    """Whether the register tile computes a product with ``n`` output columns here."""
    return PATH != "portable" and n <= _TILE_MAX_N


def conv3x3_u8s8(x, w):
    """x (H, W, C_in) 8-bit, w (3, 3, C_in, C_out) int8 -> (H, W, C_out) int32, exact.

    Accepts int8 x too (the activation gradient passes its int8 gradient through here)."""
    if tile_fits(w.shape[3]):
        return igemm_u8s8.conv3x3(x, w)
    return gemm_x8s8.conv3x3_portable(x, w)


def conv3x3_u8s8_max(x, w, mode, gate=None):
    """conv3x3_u8s8 and Eq. 11's maximum of its gated output, (out, max |gated(out)|) with
    kernels/requant.py's gate ``mode`` (``gate`` (H*W, C_out) for GATE_MASK). The tiles take
    the maximum as each output row is finished, in cache; the portable path by max_abs_s32."""
    if tile_fits(w.shape[3]):
        return igemm_u8s8.conv3x3(x, w, mode, gate)
    out = gemm_x8s8.conv3x3_portable(x, w)
    flat = out.reshape(-1, out.shape[2])
    return out, int(max_abs_s32(flat, no_gate(flat.shape) if gate is None else gate, mode))


@njit(cache=True)
def _agrad_weights(w, kept_in, kept_out, out):
    # one pass instead of NumPy's two gathers, a flip and a transposing copy (once per layer
    # and step: at 128 px its NumPy form was about a twentieth of a pruned layer's product)
    for dy in range(3):
        for dx in range(3):
            for o in range(kept_out.size):
                for i in range(kept_in.size):
                    out[dy, dx, o, i] = w[2 - dy, 2 - dx, kept_in[i], kept_out[o]]


def agrad_weights(w, kept_in, kept_out):
    """Weights of the activation gradient: the forward weights restricted to the kept channels,
    flipped in space and transposed, HWIO (3, 3, n_out_kept, n_in_kept)."""
    out = np.empty((3, 3, kept_out.size, kept_in.size), w.dtype)
    _agrad_weights(w, np.asarray(kept_in, np.int64), np.asarray(kept_out, np.int64), out)
    return out


def agrad3x3_s8s8(g, w, kept_in, kept_out):
    """Activation gradient for the kept input channels (Eq. 6, 9): (H, W, n_out_kept) int8
    gradient -> (H, W, n_in_kept) int32, the correlation of g with the flipped, transposed
    weights (no col2im). Headroom as the forward conv: at most 576 products of 2**14."""
    return conv3x3_u8s8(g, agrad_weights(w, kept_in, kept_out))


def wgrad3x3_u8s8(x, g):
    """Weight gradient of a 3x3 conv from its input x (H, W, C_in) 8-bit and the kept output
    gradient g (H, W, n_kept) int8 -> (9*C_in, n_kept) int64, exact; rows (dy*3 + dx)*C_in + c."""
    if tile_fits(g.shape[2]):
        return igemm_u8s8.wgrad3x3(x, g)
    return gemm_x8s8.wgrad3x3_portable(x, g)


def conv3x3_ref(x, w):
    """Plain loops over taps in int64: the reference for conv3x3_u8s8 and agrad3x3_s8s8."""
    h, wd, cin = x.shape
    p = np.zeros((h + 2, wd + 2, cin), np.int64)
    p[1:-1, 1:-1] = x
    out = np.zeros((h, wd, w.shape[3]), np.int64)
    for dy in range(3):
        for dx in range(3):
            out += p[dy:dy + h, dx:dx + wd] @ w[dy, dx].astype(np.int64)
    return out


def wgrad3x3_ref(x, g):
    """Plain loops over taps in int64: the reference for wgrad3x3_u8s8."""
    h, wd, cin = x.shape
    p = np.zeros((h + 2, wd + 2, cin), np.int64)
    p[1:-1, 1:-1] = x
    gf = g.reshape(h * wd, -1).astype(np.int64)
    return np.concatenate([p[dy:dy + h, dx:dx + wd].reshape(h * wd, cin).T @ gf
                           for dy in range(3) for dx in range(3)])
