"""The front door of the three convolutions of a step, and the one place that chooses how they
run: ``conv3x3``, ``agrad3x3`` (the activation gradient) and ``wgrad3x3`` (the weight gradient),
for 8- and 16-bit operands alike, the first two with Eq. 11's maximum of their gated output on
request. Nothing else in intsr calls the kernels behind it.

``PATH`` is the register tile of kernels/igemm_u8s8.py (implicit GEMM; its IR in
igemm_emit.py) that the target Numba compiles for can run (kernels/isa.py): ``"vnni"``
(AVX-512 VNNI), ``"avxvnni"`` (AVX-VNNI on ymm) or ``"avx2"``; else, or with ``INTSR_NO_VNNI``
set, ``"portable"`` (kernels/gemm_x8s8.py). A product whose output is wider than one tile
(``tile_fits``) runs portable too. 16-bit operands run as byte planes (kernels/planes_x16.py) on
the 8-bit kernel chosen here, except 16-bit data against 8-bit weights, which a tile runs as
both planes in one pass (igemm_u8s8.conv3x3_x16), and the image against 16-bit weights, three
weight planes in one Horner pass (igemm_u8s8.conv3x3_w16). All paths compute the same
integers; each kernel has a plain int64 reference below.

The 8-bit kernels keep names that follow the operand types (CMSIS-NN style): ``conv3x3_u8s8``
takes uint8 activations (the image, or post-ReLU values, which are never negative: their int8
bytes read as uint8 are the same numbers) or the int8 gradient, and int8 weights;
``wgrad3x3_u8s8`` uint8 activations and an int8 gradient.
"""
import os

import numpy as np
from numba import njit

from intsr.kernels import gemm_x8s8, igemm_u8s8, planes_x16
from intsr.kernels.isa import TILE
from intsr.kernels.requant import (
    GATE_CHANNELS,
    GATE_NO_MAX,
    channel_max_relu_s32,
    max_abs_s32,
    no_gate,
)

PATH = TILE or "portable"
_TILE_MAX_N = 64  # output channels of one register tile


def kernels_cached(blind=False):
    """Whether the on-disk cache already holds compiled kernels (else the first call compiles
    them, for about a minute). Numba keeps the cache beside the package, or in the user's cache
    folder when the package folder is read-only. ``blind``: also the one signature only blind
    mode's estimator runs (requant_s32 storing uint8: its unsigned activations; about a second
    to compile). Reads private attributes of Numba: any doubt answers True, so the worst case
    is a missing notice, never a failure."""
    from numba import typeof

    from intsr.kernels.requant import GATE_RELU, requant_s32
    try:
        cache_file = requant_s32._cache._cache_file
        if not os.path.exists(cache_file._index_path):
            return False
        if not blind:
            return True
        acc = np.zeros((2, 2), np.int32)  # 2 x 2: the gate is a broadcast ('A') view, as in use
        sig = tuple(typeof(v) for v in (acc, no_gate(acc.shape), GATE_RELU, 0, True, 0, 255,
                                        np.zeros((2, 2), np.uint8)))
        return any(key[0] == sig for key in cache_file._load_index())
    except Exception:  # noqa: BLE001 - a notice is never worth a failure
        return True


def tile_fits(n):
    """Whether the register tile computes a product with ``n`` output columns here."""
    return PATH != "portable" and n <= _TILE_MAX_N


def conv3x3(x, w, mode=GATE_NO_MAX, gate=None):
    """x (H, W, C_in) uint8/int8/uint16/int16, w (3, 3, C_in, C_out) int8/int16 -> (H, W, C_out),
    exact: int32 when both are 8-bit or 8-bit data meets int16 weights over at most
    planes_x16.W16_NARROW_MAX input channels, else int64.

    With a requant gate ``mode`` (kernels/requant.py: GATE_NONE, GATE_RELU, or GATE_MASK by
    ``gate``, an (H*W, C_out) array) returns (out, max |gated(out)|): Eq. 11's maximum, which
    the tiles take as each output row is finished, in cache, and the portable 8-bit path by
    max_abs_s32; None where 16-bit operands run as separate byte-plane calls (the
    requantization then takes it). GATE_CHANNELS: (out, each channel's ReLU maximum, int64)
    on every path (the tiles row by row in cache). GATE_NO_MAX: the conv alone."""
    n = w.shape[3]
    if x.dtype == np.uint8 and w.dtype == np.int16 and x.shape[2] <= planes_x16.W16_NARROW_MAX \
            and tile_fits(n):
        # the image's conv with 16-bit weights: three weight planes in one Horner tile pass
        return igemm_u8s8.conv3x3_w16(x, w, mode)
    if mode == GATE_CHANNELS and not (x.itemsize == 1 and w.dtype == np.int8 and tile_fits(n)):
        return _with_channel_max(conv3x3(x, w))
    if x.itemsize == 1 and w.dtype == np.int8:
        if tile_fits(n):
            return igemm_u8s8.conv3x3(x, w, mode, gate)
        out = gemm_x8s8.conv3x3_portable(x, w)
        if mode == GATE_NO_MAX:
            return out
        flat = out.reshape(-1, n)
        return out, int(max_abs_s32(flat, no_gate(flat.shape) if gate is None else gate, mode))
    if w.dtype == np.int8 and tile_fits(n):
        # 16-bit data, 8-bit weights: both planes in one tile pass
        return igemm_u8s8.conv3x3_x16(x, w, mode, gate)
    if x.itemsize == 1 and w.dtype == np.int16 and x.shape[2] <= planes_x16.W16_NARROW_MAX:
        out = planes_x16.conv3x3_w16_narrow(x, w, conv3x3_u8s8)  # exact in int32
        return out if mode == GATE_NO_MAX else (out, None)
    out = planes_x16.conv3x3_x16(x, w, conv3x3_u8s8)
    return out if mode == GATE_NO_MAX else (out, None)


def takes_padded(w):
    """Whether conv3x3 of the weights ``w`` can read its input from a buffer already
    zero-padded (conv3x3_padded): 8-bit weights on the register tile."""
    return w.dtype == np.int8 and tile_fits(w.shape[3])


def padded_shape(h, w, c):
    """The shape of conv3x3_padded's input for an (H, W, C) image: (H+2, W+2, C rounded up
    to 4), uint8."""
    return igemm_u8s8.padded_shape(h, w, c)


def conv3x3_padded(xp, w, mode=GATE_NO_MAX, gate=None):
    """conv3x3 of an input already zero-padded (``padded_shape``, uint8, never negative; the
    SR pass's requant.requant_relu_pad_u8 writes it), where takes_padded(w): the same integers,
    without the copy into the padded layout."""
    return igemm_u8s8.conv3x3_padded(xp, w, mode, gate)


def conv3x3_grouped(xp, w, order, gsize, steps, mode=GATE_NO_MAX):
    """conv3x3_padded of an input whose channel groups have their own power-of-two scales
    (igemm_u8s8.conv3x3_grouped states the layout and the result): on the tile one Horner
    pass, elsewhere one portable conv per group, combined by the same shifts; the same
    integers."""
    n = w.shape[3]
    if tile_fits(n):
        return igemm_u8s8.conv3x3_grouped(xp, w, order, gsize, steps, mode)
    out = _grouped(xp, w, order, gsize, steps, gemm_x8s8.conv3x3_portable)
    if mode == GATE_NO_MAX:
        return out
    if mode == GATE_CHANNELS:
        return _with_channel_max(out)
    flat = out.reshape(-1, n)
    return out, int(max_abs_s32(flat, no_gate(flat.shape), mode))


def _with_channel_max(out):
    """(out, each channel's ReLU maximum): GATE_CHANNELS where a path does not take it as it
    goes (the portable kernels, byte planes)."""
    m = np.empty(out.shape[-1], np.int64)
    channel_max_relu_s32(out.reshape(-1, out.shape[-1]), m)
    return out, m


def _grouped(xp, w, order, gsize, steps, conv):
    if not igemm_u8s8.grouped_headroom(xp.shape[2], steps):
        raise ValueError("conv3x3_grouped: the groups' scales are too far apart for int32")
    x = xp[1:-1, 1:-1]
    out = None
    for g, step in zip(order, steps, strict=True):
        part = slice(g * gsize, (g + 1) * gsize)
        y = conv(np.ascontiguousarray(x[..., part]), np.ascontiguousarray(w[:, :, part]))
        out = y if out is None else (out << step) + y
    return out


def conv3x3_u8s8(x, w):
    """conv3x3 of 8-bit operands: x (H, W, C_in) uint8 or int8, w (3, 3, C_in, C_out) int8 ->
    (H, W, C_out) int32, exact."""
    if tile_fits(w.shape[3]):
        return igemm_u8s8.conv3x3(x, w)
    return gemm_x8s8.conv3x3_portable(x, w)


@njit(cache=True, nogil=True)
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


def agrad3x3(g, w, kept_in, kept_out, mode=GATE_NO_MAX, gate=None):
    """Activation gradient for the kept input channels (Eq. 6, 9): (H, W, n_out_kept) int8/int16
    gradient, w (3, 3, C_in, C_out) int8/int16 -> (H, W, n_in_kept), the correlation of g with
    the flipped, transposed weights (no col2im), int32 or int64 as conv3x3 (with ``mode``: and
    the maximum, as conv3x3). Headroom as the forward conv: at most 576 products of 2**14."""
    return conv3x3(g, agrad_weights(w, kept_in, kept_out), mode, gate)


def wgrad3x3(x, g):
    """Weight gradient of a 3x3 conv from its input x (H, W, C_in) uint8/int8/uint16 and the
    kept output gradient g (H, W, n_kept) int8/int16 -> (9*C_in, n_kept) int64, exact; rows
    (dy*3 + dx)*C_in + c."""
    if x.itemsize == 1 and g.dtype == np.int8:
        return wgrad3x3_u8s8(x, g)
    return planes_x16.wgrad3x3_x16(x, g, wgrad3x3_u8s8)


def wgrad3x3_u8s8(x, g):
    """wgrad3x3 of 8-bit operands: x (H, W, C_in) uint8 or int8, g (H, W, n_kept) int8 ->
    (9*C_in, n_kept) int64, exact."""
    if tile_fits(g.shape[2]):
        return igemm_u8s8.wgrad3x3(x, g)
    return gemm_x8s8.wgrad3x3_portable(x, g)


def conv3x3_ref(x, w):
    """Plain loops over taps in int64: the reference for conv3x3 and agrad3x3."""
    h, wd, cin = x.shape
    p = np.zeros((h + 2, wd + 2, cin), np.int64)
    p[1:-1, 1:-1] = x
    out = np.zeros((h, wd, w.shape[3]), np.int64)
    for dy in range(3):
        for dx in range(3):
            out += p[dy:dy + h, dx:dx + wd] @ w[dy, dx].astype(np.int64)
    return out


def conv3x3_grouped_ref(xp, w, order, gsize, steps):
    """The reference for conv3x3_grouped: conv3x3_ref per group, int64, Horner by shifts."""
    return _grouped(xp, w, order, gsize, steps, conv3x3_ref)


def wgrad3x3_ref(x, g):
    """Plain loops over taps in int64: the reference for wgrad3x3."""
    h, wd, cin = x.shape
    p = np.zeros((h + 2, wd + 2, cin), np.int64)
    p[1:-1, 1:-1] = x
    gf = g.reshape(h * wd, -1).astype(np.int64)
    return np.concatenate([p[dy:dy + h, dx:dx + wd].reshape(h * wd, cin).T @ gf
                           for dy in range(3) for dx in range(3)])
