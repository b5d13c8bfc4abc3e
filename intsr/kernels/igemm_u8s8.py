"""Implicit GEMM for 3x3 convolutions on AVX-512 VNNI or AVX2: uint8 x int8 -> int32, no
im2col.

``vpdpbusd`` multiplies 64 unsigned bytes by 64 signed bytes and adds each group of four
products into one of 16 int32 lanes (8 for its 256-bit form). The micro-kernel (``tile``, its
LLVM IR emitted by kernels/igemm_emit.py) keeps an MR x (8 * nb) block of int32 accumulators in
registers and streams the reduction dimension
as *segments*: runs of ``4 * k4`` bytes of the A operand at arbitrary offsets, against a B
operand packed as ``[k/4][N][4]`` that is read strictly in order. A 3x3 convolution is then
nine segments (one per tap, C_in bytes each) of a zero-padded channels-last image: im2col is
fused away. The weight gradient is the same kernel with pixels as the reduction: A is the
padded layer input in channels-first order (copied in 16 x 16 byte blocks, transpose_u8), one
segment per image row.

Exactness: a u8 x s8 product is at most 255 * 128 = 32,640 in magnitude and every partial sum
is a partial sum of the exact result, so a dot product of at most 2**16 products cannot wrap
int32 (32,640 * 2**16 < 2**31 - 1); callers keep their reductions below that (576 products per
conv output; weight gradients in chunks of at most WGRAD_CHUNK pixels). Signed int8 operands
on the A side are shifted into uint8 by flipping the sign bit (v + 128) and the constant
``128 * sum(B column)`` is subtracted afterwards, exactly; the zero padding is shifted too, so
the correction is the same for every output.

On an AVX2-only target (kernels/isa.py) the same tile emits ``vpmaddubsw`` + ``vpmaddwd``
instead (``igemm_emit.emit_avx2``: same packing, same int32 lanes, exact by the byte bound it
states);
with AVX-VNNI but no AVX-512 it emits the VEX ``vpdpbusd`` on 8-lane ymm blocks.
Chosen by kernels/dispatch.py where the target has either; the portable kernels in
gemm_x8s8.py compute the same integers everywhere else. The conv drivers also take Eq. 11's
maximum row by row (``_row_max``) and run 16-bit data as two byte planes in one pass
(``conv3x3_x16``).
"""
import numpy as np
from numba import njit, prange

from intsr.kernels.fixedpoint import WGRAD_CHUNK
from intsr.kernels.igemm_emit import MR, MR_NARROW, NB_NARROW, tile, tile_shifted
from intsr.kernels.isa import TILE as ISA
from intsr.kernels.planes_x16 import W16_NARROW_MAX
from intsr.kernels.requant import GATE_CHANNELS, GATE_MASK, GATE_NO_MAX, GATE_RELU
from intsr.kernels.transpose_u8 import transpose4x16_u8, transpose16_u8


@njit(cache=True, inline="always")
def _tile_any(a, a_off, lda, segs, k4, b, ldb, out, o_off, ldo, mr, nb, split, shifts):
    # mr <= MR_NARROW rows as MR_NARROW-row tiles where the width allows, else MR-row tiles; a
    # tail of fewer rows (image width not a multiple of MR) goes row by row. A non-empty
    # ``shifts`` takes the Horner tile (tile_shifted: conv3x3_grouped).
    r = 0
    if MR_NARROW > MR and nb <= NB_NARROW and mr == MR_NARROW:
        if shifts.size:
            tile_shifted(a, a_off, lda, segs, shifts, k4, b, ldb, out, o_off, ldo, MR_NARROW,
                         nb, split)
        else:
            tile(a, a_off, lda, segs, k4, b, ldb, out, o_off, ldo, MR_NARROW, nb, split)
        r = mr
    while mr - r >= MR:
        if shifts.size:
            tile_shifted(a, a_off + r * lda, lda, segs, shifts, k4, b, ldb, out,
                         o_off + r * ldo, ldo, MR, nb, split)
        else:
            tile(a, a_off + r * lda, lda, segs, k4, b, ldb, out, o_off + r * ldo, ldo, MR, nb,
                 split)
        r += MR
    while r < mr:
        if shifts.size:
            tile_shifted(a, a_off + r * lda, lda, segs, shifts, k4, b, ldb, out,
                         o_off + r * ldo, ldo, 1, nb, split)
        else:
            tile(a, a_off + r * lda, lda, segs, k4, b, ldb, out, o_off + r * ldo, ldo, 1, nb,
                 split)
        r += 1


def _ceil(n, m):
    return -(-n // m) * m


@njit(cache=True, nogil=True)
def _pack_w(w, c4, b, wsum):
    # w (3, 3, C, N) int8 -> the B operand as ``vpdpbusd`` reads it, b (9*C4/4, Np, 4) with Np =
    # N rounded up to 8: b[k // 4, j, k % 4] = w[tap, c, j] for reduction index k = tap*C4 + c,
    # zero for c >= C and j >= N; and wsum[j] = 128 * the column's sum, the sign shift's
    # correction (|wsum| <= 128 * 576 * 128 < 2**24). One pass, every byte of b written:
    # _pack_w_runs with one run of all C4 channels.
    _pack_w_runs(w, np.zeros(1, np.int64), np.full(1, c4, np.int64), b, wsum)


# The kernels take flat views made by the caller: Numba's in-kernel reshape checks sizes
# through float64 arithmetic, and no float may appear in the online path.
@njit(cache=True, inline="always")
def _row_max(out, y, gate, mode, width, n):
    # Eq. 11's maximum of output row y while it is in cache: max(acc, 0) for the forward ReLU
    # (GATE_RELU), max |acc| where gate > 0 for the backward one (GATE_MASK), max |acc|
    # (GATE_NONE). Shaped
    # for LLVM's vectorizer, which left the earlier form (one max over a loop nest over pixels
    # and channels) scalar: the ungated row is one flat loop; the gate, a column prefix of the
    # stored activation, needs the nest, so it keeps one maximum per channel (an element-wise
    # inner loop) and reduces them at the end. Measured at 128 px (AMD Zen 5, 2 threads): the
    # maximum's cost in a 64-channel forward conv 95 -> 13-37 us, in a pruned 32-channel
    # activation gradient 66 -> 45-58 us (the gate's reads from memory remain).
    if mode != GATE_MASK:
        return _flat_max(out[y], mode)
    best = np.zeros(n, np.int64)
    for xx in range(width):
        r = y * width + xx
        for j in range(n):
            a = np.int64(out[y, xx, j])
            best[j] = max(best[j], abs(a) if gate[r, j] > 0 else np.int64(0))
    m = np.int64(0)
    for j in range(n):
        m = max(m, best[j])
    return m


@njit(cache=True, nogil=True)
def _flat_max(row, mode):
    # max(v, 0) over a C-contiguous block (GATE_RELU), else max |v|: one flat loop, vectorized.
    # ravel of a C-contiguous array is a view with no size check (unlike reshape, above).
    o = row.ravel()
    m = np.int64(0)
    if mode == GATE_RELU:
        for k in range(o.size):
            m = max(m, np.int64(o[k]))
    else:
        for k in range(o.size):
            m = max(m, abs(np.int64(o[k])))
    return m


@njit(cache=True, nogil=True, parallel=True)
def _conv_rows(a, width, c4, segs, k4, bf, npad, corr, shifted, split, out, o, mode, gate,
               rowmax, shifts, spread):
    # a: the (H+2, W+2, C4) uint8 padded input, flat; out (H, W, N <= npad) int32 and o its flat
    # view; the result is reduced by corr[n] (the sign shift's constant, or zeros). One output
    # row per task. When N is not a multiple of 8 the register tiles store a row's npad-wide
    # results in a private buffer, copied out without the padding columns, so the caller
    # still gets a contiguous (H, W, N) array. With a ``mode`` other than GATE_NO_MAX,
    # rowmax[y] is the row's gated maximum (_row_max; gate (H*W, N) for GATE_MASK); with
    # GATE_CHANNELS rowmax[y*N + j] is channel j's ReLU maximum in the row. ``spread``: the
    # private row holds _conv_spread's q, each output the sum of three of its columns.
    h, n = out.shape[0], out.shape[2]
    for y in prange(h):
        if n == npad:
            for x0 in range(0, width, MR_NARROW):
                _tile_any(a, (y * (width + 2) + x0) * c4, c4, segs, k4, bf, npad * 4, o,
                          (y * width + x0) * npad, npad, min(MR_NARROW, width - x0), npad // 8,
                          split, shifts)
            if shifted:
                for xx in range(width):
                    for j in range(n):
                        out[y, xx, j] -= corr[j]
        else:
            row = np.empty(width * npad, np.int32)
            for x0 in range(0, width, MR_NARROW):
                _tile_any(a, (y * (width + 2) + x0) * c4, c4, segs, k4, bf, npad * 4, row,
                          x0 * npad, npad, min(MR_NARROW, width - x0), npad // 8, split, shifts)
            if spread:
                if shifted:
                    for xx in range(width):
                        for j in range(npad):
                            row[xx * npad + j] -= corr[j]
                _spread_row(row, npad, out[y])
            else:
                for xx in range(width):
                    for j in range(n):
                        out[y, xx, j] = row[xx * npad + j] - corr[j]
        if mode == GATE_CHANNELS:
            _row_channel_max(out, y, width, n, rowmax[y * n:(y + 1) * n])
        elif mode != GATE_NO_MAX:
            rowmax[y] = _row_max(out, y, gate, mode, width, n)


@njit(cache=True, nogil=True, inline="always")
def _spread_row(q, npad, row):
    # output row (W, N) from _conv_spread's q row (W * npad): output (x, o) takes column dx N + o
    # of pixel x - dx + 1, the pixels beyond the row left out (the zero padding)
    wd, n = row.shape
    for x in range(wd):
        p = x * npad
        for o in range(n):
            v = q[p + n + o]
            if x > 0:
                v += q[p - npad + o]
            if x < wd - 1:
                v += q[p + npad + 2 * n + o]
            row[x, o] = v


@njit(cache=True, nogil=True)
def _row_channel_max(out, y, width, n, best):
    # max(acc, 0) of each channel of output row y while it is in cache (GATE_CHANNELS); the
    # inner loop runs along the channels, element-wise, so it vectorizes
    o = out[y].ravel()
    for j in range(n):
        best[j] = 0
    for xx in range(width):
        for j in range(n):
            best[j] = max(best[j], np.int64(o[xx * n + j]))


def _maxima(out, rowmax, mode):
    """What a conv with ``mode`` returns beside ``out``: nothing, Eq. 11's maximum, or (for
    GATE_CHANNELS) each channel's ReLU maximum, int64 (N,)."""
    if mode == GATE_NO_MAX:
        return out
    if mode == GATE_CHANNELS:
        return out, rowmax.reshape(out.shape[0], out.shape[2]).max(0)
    return out, int(rowmax.max())


@njit(cache=True, nogil=True, parallel=True)
def _pad_x8(x, flip, xp, chw):
    # x (H, W, C) viewed as uint8 -> xp (H+2, W2, C4) (HWC) or (C4, H+2, W2) (CHW, ``chw``),
    # W2 >= W + 2: xp[1 + y, 1 + x, c] = x[y, x, c] ^ flip, the border ``flip`` (a zero after
    # the sign shift), channels C..C4 zero. Every byte of xp is written here, in parallel, so
    # the caller allocates it uninitialised (no serial memset of the whole buffer first).
    # Rows outer: reads stream, and in CHW a row's writes touch one cache line per plane.
    h, w, c = x.shape
    hp = h + 2
    if chw:
        c4, w2 = xp.shape[0], xp.shape[2]
    else:
        w2, c4 = xp.shape[1], xp.shape[2]
    for i in prange(hp):
        py = np.int64(i)  # prange's index may be unsigned: compared with a signed int, Numba
        # would go through float64
        for ch in range(c4):
            edge = flip if ch < c else np.uint8(0)
            if py == 0 or py == hp - 1 or ch >= c:
                for px in range(w2):
                    if chw:
                        xp[ch, py, px] = edge
                    else:
                        xp[py, px, ch] = edge
            elif chw:  # an inner row: its two borders (and W2's extra columns)
                xp[ch, py, 0] = edge
                for px in range(w + 1, w2):
                    xp[ch, py, px] = edge
            else:
                xp[py, 0, ch] = edge
                for px in range(w + 1, w2):
                    xp[py, px, ch] = edge
        if 0 < py < hp - 1:
            y = py - 1
            if chw:  # a transpose: 16 x 16 byte blocks in registers, then the tails
                wb, cb = w - w % 16, c - c % 16
                plane = xp.shape[1] * w2
                for x0 in range(0, wb, 16):
                    for c0 in range(0, cb, 16):
                        transpose16_u8(x, (y * w + x0) * c + c0, c, xp,
                                       c0 * plane + py * w2 + 1 + x0, plane, flip)
                for xx in range(w):
                    for ch in range(cb if xx < wb else 0, c):
                        xp[ch, py, 1 + xx] = x[y, xx, ch] ^ flip
            elif c == c4:  # one contiguous run of W * C bytes on both sides: a flat loop
                src, dst = x[y].ravel(), xp[py, 1:w + 1].ravel()
                for k in range(w * c):
                    dst[k] = src[k] ^ flip
            else:
                for xx in range(w):
                    for ch in range(c):
                        xp[py, 1 + xx, ch] = x[y, xx, ch] ^ flip


def _pad_u8(x, c4):
    """(H, W, C) int8/uint8 -> (H+2, W+2, C4) uint8 with a zero border and zero extra channels;
    int8 input is shifted by +128 (sign bit flipped), border included. Returns (xp, shifted)."""
    h, w, c = x.shape
    shifted = x.dtype == np.int8
    xp = np.empty((h + 2, w + 2, c4), np.uint8)
    _pad_x8(np.ascontiguousarray(x).view(np.uint8), np.uint8(128 if shifted else 0), xp, False)
    return xp, shifted


def _split(x, shifted):
    """Whether the A operand (x, +128 if ``shifted``) may hold a byte of 128 or more: the AVX2
    tile then splits bytes (its exactness bound, _avx2_emit). Post-ReLU int8 activations never
    do, which keeps most of a step on the faster form."""
    return ISA == "avx2" and (shifted or (x.size > 0 and int(x.max()) >= 128))


_NO_GATE = np.zeros((1, 1), np.uint8)
_NO_SHIFTS = np.zeros(0, np.int64)  # _tile_any's plain tile
SPREAD_MAX_N = 5  # convs with at most this many outputs take _conv_spread (3 N <= 16 columns)


def _packed(w, c4):
    """(3, 3, C_in, N) int8 -> the B operand of the tile (C_in padded to c4, _pack_w) and its
    column sums times 128 (the sign-shift correction), int64."""
    b = np.empty((9 * c4 // 4, _ceil(w.shape[3], 8), 4), np.int8)
    wsum = np.empty(b.shape[1], np.int64)
    _pack_w(w, c4, b, wsum)
    return b, wsum[:w.shape[3]]


def _tap_segments(wd, c4):
    """Offsets of the nine 3x3 taps in a (H+2, W+2, C4) padded image: the conv's segments."""
    return np.array([(dy * (wd + 2) + dx) * c4 for dy in range(3) for dx in range(3)], np.int64)


def conv3x3(x, w, mode=GATE_NO_MAX, gate=None):
    """x (H, W, C_in) int8/uint8, w (3, 3, C_in, C_out) int8 -> (H, W, C_out) int32, exact.

    With a requant gate ``mode`` (kernels/requant.py: GATE_NONE, GATE_RELU, or GATE_MASK by
    ``gate``, an (H*W, C_out) array) returns (out, max |gated(out)|) instead: Eq. 11's maximum,
    taken row by row as the tile finishes it, so no separate pass reads the int32 output
    again."""
    xp, shifted = _pad_u8(x, _ceil(x.shape[2], 4))
    return _conv_padded(xp, w, mode, gate, shifted, _split(x, shifted))


def padded_shape(h, wd, c):
    """The (H+2, W+2, C4) shape of conv3x3's zero-padded input (C4: C rounded up to 4)."""
    return h + 2, wd + 2, _ceil(c, 4)


def conv3x3_padded(xp, w, mode=GATE_NO_MAX, gate=None):
    """conv3x3 of an input already in its zero-padded layout: xp (H+2, W+2, C4) uint8 of
    ``padded_shape`` with a zero border and zero channels C_in..C4, w (3, 3, C_in, C_out)
    int8. The same integers as conv3x3 of the interior."""
    if xp.shape[2] != _ceil(w.shape[2], 4):
        raise ValueError("the padded input's channels do not match the weights")
    return _conv_padded(xp, w, mode, gate, False, _split(xp, False))


def _conv_padded(xp, w, mode, gate, shifted, split):
    wd, c4 = xp.shape[1] - 2, xp.shape[2]
    n = w.shape[3]
    if n > 64:
        raise ValueError("at most 64 output channels (one register tile wide)")
    if n <= SPREAD_MAX_N:
        return _conv_spread(xp, w, np.zeros(1, np.int64), np.array([c4], np.int64), c4 // 4,
                            _NO_SHIFTS, shifted, split, mode, gate)
    b, wsum = _packed(w, c4)
    segs = _tap_segments(wd, c4)
    corr = wsum if shifted else np.zeros(n, np.int64)
    return _rows_pass(xp, segs, c4 // 4, b, n, corr, shifted, split, mode, gate, _NO_SHIFTS)


def _conv_spread(xp, w, starts, lens, k4, shifts, shifted, split, mode, gate):
    """A conv with few outputs (N <= SPREAD_MAX_N: the last layer's 3) with its three
    horizontal taps spread over the tile's columns: B columns (dx, o), so the tile takes three
    segments a pixel (the rows dy of its own column) instead of nine, 3 N columns (rounded up
    to 8; 16, a zmm block, for the last layer's 3) instead of N rounded up to 8:
    q[y, x, dx N + o] is what the pixels above, at and below (y, x) give output o of pixel
    (y, x - dx + 1), and each output adds its three from q's row (_conv_rows, ``spread``),
    zero beyond the image (the padding): two thirds of the products at N = 3. For runs of
    channels (conv3x3_grouped: ``starts``, ``lens``, the steps ``shifts`` before each run;
    ``k4`` an array) the three segments of each run in turn.
    Exact: a q is a partial sum of an output's products, so every sum stays within the conv's
    own bound; with ``shifted`` each q column loses its own 128 * column sum."""
    wd, c4, n = xp.shape[1] - 2, xp.shape[2], w.shape[3]
    b = np.empty((3 * int(lens.sum()) // 4, _ceil(3 * n, 8), 4), np.int8)
    wsum = np.empty(b.shape[1], np.int64)
    _pack_w_runs(w, starts, lens, b, wsum, True)
    rows = np.array([(dy * (wd + 2) + 1) * c4 for dy in range(3)], np.int64)
    segs, shifts = _run_segments(rows, starts, shifts)
    corr = wsum if shifted else np.zeros(b.shape[1], np.int64)
    return _rows_pass(xp, segs, k4 if np.ndim(k4) == 0 else np.repeat(k4, 3), b, n, corr,
                      shifted, split, mode, gate, shifts, True)


def _rows_pass(xp, segs, k4, b, n, corr, shifted, split, mode, gate, shifts, spread=False):
    """_conv_rows over a padded xp (H+2, W+2, C4) into a new (H, W, N) int32 output, and what
    ``mode`` asks beside it (_maxima); ``spread``: B's columns are _conv_spread's."""
    h, wd = xp.shape[0] - 2, xp.shape[1] - 2
    out = np.empty((h, wd, n), np.int32)
    rowmax = np.zeros(h * n if mode == GATE_CHANNELS else h, np.int64)
    _conv_rows(xp.reshape(-1), wd, xp.shape[2], segs, k4, b.reshape(-1), b.shape[1], corr,
               shifted, split, out, out.reshape(-1), mode, _NO_GATE if gate is None else gate,
               rowmax, shifts, spread)
    return _maxima(out, rowmax, mode)


@njit(cache=True, nogil=True)
def _pack_w_runs(w, starts, lens, b, wsum, spread=False):
    # w (3, 3, C, N) int8 -> the B operand of the runs of channels in the order given, run r
    # being lens[r] channels from starts[r]: b (K / 4, Np, 4), zero for channels >= C (the
    # padding to C4); wsum[j] = 128 * column j's sum. The reduction index k counts through run,
    # tap (dy, dx), channel and column j is output j (zero for j >= N); ``spread``
    # (_conv_spread): k counts through run, row dy, channel and column j is dx * N + o (zero
    # for j >= 3 N).
    cin, n, npad = w.shape[2], w.shape[3], b.shape[1]
    ncol = 3 * n if spread else n
    for j in range(npad):
        wsum[j] = 0
    k = 0
    for r in range(starts.size):
        for p in range(3 if spread else 9):
            for ch in range(starts[r], starts[r] + lens[r]):
                for j in range(npad):
                    v = np.int8(0)
                    if ch < cin and j < ncol:
                        v = w[p, j // n, ch, j % n] if spread else w[p // 3, p % 3, ch, j]
                    b[k >> 2, j, k & 3] = v
                    wsum[j] += 128 * np.int64(v)
                k += 1


def _run_segments(offsets, starts, run_steps):
    """The segments of runs of channels, each run's ``offsets`` (its taps or rows) from its
    first channel, and the tile's shifts: each run's step before its first segment (none
    when ``run_steps`` is empty: the plain tile)."""
    segs = (starts[:, None] + offsets[None, :]).ravel()
    if not run_steps.size:
        return segs, run_steps
    shifts = np.zeros(segs.size, np.int64)
    shifts[::offsets.size] = run_steps
    return segs, shifts


def _runs(order, gsize, steps):
    """The groups in ``order`` as runs of adjacent channels (order[g+1] == order[g] + 1 with
    no step between them: one scale, one segment per tap): (first channel, channels, step
    before the run) of each."""
    starts, lens, run_steps = [], [], []
    for g, step in zip(order, steps, strict=True):
        if lens and step == 0 and starts[-1] + lens[-1] == g * gsize:
            lens[-1] += gsize
        else:
            starts.append(g * gsize)
            lens.append(gsize)
            run_steps.append(step)
    return (np.array(starts, np.int64), np.array(lens, np.int64),
            np.array(run_steps, np.int64))


def conv3x3_w16(x, w, mode=GATE_NO_MAX):
    """x (H, W, C) uint8 with C <= planes_x16.W16_NARROW_MAX, w (3, 3, C, N) int16 -> (H, W, N)
    int32, exact, in one pass of the Horner tile: w = 2**8 hi + lo + 2**7 with hi = w >> 8 and
    lo = (w & 255) - 128 both int8, so x (*) w = ((x (*) hi) * 2 + x (*) 1) * 2**7 + x (*) lo,
    three groups of the nine taps over the same padded x (B: hi, ones, lo; the accumulators
    shifted by 1, then 7, between them). Headroom as planes_x16.combine_w16_s32's: every
    partial sum is a partial sum of 2**8 |x (*) hi| + 2**7 x (*) 1 + |x (*) lo| <= 9 C 255
    (2**15 + 2**8) < 2**31 at C <= 28. ``mode`` as conv3x3 (the image's first conv, 16-bit
    weights: one tile pass instead of two plane convs and a combining pass)."""
    wd, c, n = x.shape[1], x.shape[2], w.shape[3]
    if x.dtype != np.uint8 or w.dtype != np.int16 or c > W16_NARROW_MAX or n > 64:
        raise ValueError("conv3x3_w16: uint8 data, int16 weights, at most 28 inputs, 64 outputs")
    c4 = _ceil(c, 4)
    xp, _ = _pad_u8(x, c4)
    rows = 9 * c4 // 4
    b = np.empty((3 * rows, _ceil(n, 8), 4), np.int8)
    wsum = np.empty(b.shape[1], np.int64)
    planes = ((w >> 8).astype(np.int8), np.ones(w.shape, np.int8),
              ((w & 255) - 128).astype(np.int8))
    for i, plane in enumerate(planes):
        _pack_w(plane, c4, b[i * rows:(i + 1) * rows], wsum)
    segs = np.tile(_tap_segments(wd, c4), 3)
    shifts = np.zeros(27, np.int64)
    shifts[9], shifts[18] = 1, 7
    return _rows_pass(xp, segs, c4 // 4, b, n, np.zeros(n, np.int64), False, _split(x, False),
                      mode, None, shifts)


def grouped_headroom(c, steps):
    """Whether conv3x3_grouped's Horner sum over C input channels fits int32: every product
    is at most 255 * 128 in magnitude, 9 * C of them, the coarsest group's scaled by
    2**sum(steps) at most."""
    return 9 * c * 255 * 128 << int(np.sum(steps)) < 1 << 31


def conv3x3_grouped(xp, w, order, gsize, steps, mode=GATE_NO_MAX):
    """A conv whose input channels come in groups of ``gsize`` with their own power-of-two
    scales (model: the SR pass's per-group Eq. 11): xp (H+2, W+2, C) uint8, zero-padded
    (requant.requant_relu_pad_u8_grouped writes it), w (3, 3, C, N) int8; group order[g] =
    channels order[g]*gsize.. is 2**steps[g] times finer than group order[g-1] (steps[0] = 0:
    coarsest first). Returns the (H, W, N) int32 sum over g of conv(group order[g]) *
    2**(steps[g+1] + ... + steps[-1]): exact in the finest group's scale, accumulated as
    Horner's scheme in the register tile (tile_shifted; the groups are segments, so nothing
    is permuted and they cost no more products than one conv). Groups that follow each other
    in ``order`` and in the channels with no step between them are one run (_runs): one
    segment per tap for the run, not per group (at 4 channels a group, 144 one-step segments
    a pixel would cost 5 % of the conv against the plain tile's nine; measured in
    docs/performance.md). ValueError unless grouped_headroom. ``mode``: as conv3x3 (GATE_RELU
    gives Eq. 11's maximum too)."""
    c, wd, n = xp.shape[2], xp.shape[1] - 2, w.shape[3]
    if n > 64 or c % gsize or gsize % 4 or len(steps) != c // gsize or len(order) != len(steps):
        raise ValueError("conv3x3_grouped: at most 64 outputs, whole groups of 4k channels")
    if not grouped_headroom(c, steps):
        raise ValueError("conv3x3_grouped: the groups' scales are too far apart for int32")
    starts, lens, run_steps = _runs(np.asarray(order, np.int64), gsize, steps)
    if n <= SPREAD_MAX_N:
        return _conv_spread(xp, w, starts, lens, lens // 4, run_steps, False, _split(xp, False),
                            mode, None)
    b = np.empty((9 * c // 4, _ceil(n, 8), 4), np.int8)
    _pack_w_runs(w, starts, lens, b, np.empty(b.shape[1], np.int64))
    segs, shifts = _run_segments(_tap_segments(wd, c), starts, run_steps)
    return _rows_pass(xp, segs, np.repeat(lens // 4, 9), b, n, np.zeros(n, np.int64), False,
                      _split(xp, False), mode, None, shifts)


@njit(cache=True, nogil=True, parallel=True)
def _conv_rows_x16(a_hi, a_lo, width, c4, segs, k4, bf, npad, corr_hi, corr_lo, split_hi,
                   split_lo, out, mode, gate, rowmax):
    # _conv_rows for a 16-bit A as two byte planes: per output row, both planes' tiles into
    # private int32 rows (each exact, as _conv_rows's), combined once into the int64 output
    # as (hi - corr_hi) * 2**8 + (lo - corr_lo) while the rows are in cache.
    # |hi| < 576 * 255 * 128 < 2**25, so the sum stays below 2**34 (int64 in registers); an
    # int32 ``out`` only where the caller bounded the result below 2**31 (fits_s32_x16).
    h, n = out.shape[0], out.shape[2]
    for y in prange(h):
        hi = np.empty(width * npad, np.int32)
        lo = np.empty(width * npad, np.int32)
        corr = np.empty(n, np.int64)
        for x0 in range(0, width, MR_NARROW):
            off, rows = (y * (width + 2) + x0) * c4, min(MR_NARROW, width - x0)
            _tile_any(a_hi, off, c4, segs, k4, bf, npad * 4, hi, x0 * npad, npad, rows,
                      npad // 8, split_hi, _NO_SHIFTS)
            _tile_any(a_lo, off, c4, segs, k4, bf, npad * 4, lo, x0 * npad, npad, rows,
                      npad // 8, split_lo, _NO_SHIFTS)
        # flat row views and the constants folded once per column: the combine vectorizes
        # (3-D indexing of out left it scalar: 41 -> 36 ms for a 272 px, 64 -> 64 conv on one
        # thread, AMD Zen 4)
        orow = out[y].ravel()
        for j in range(n):
            corr[j] = (corr_hi[j] << 8) + corr_lo[j]
        for xx in range(width):
            for j in range(n):
                k = xx * npad + j
                orow[xx * n + j] = (np.int64(hi[k]) << 8) + lo[k] - corr[j]
        if mode != GATE_NO_MAX:
            rowmax[y] = _row_max(out, y, gate, mode, width, n)


def fits_s32_x16(x, w):
    """Whether conv3x3_x16's result fits int32 for any x of its dtype: every column's sum of
    |w| times the dtype's largest magnitude (65535 uint16, 32768 int16) below 2**31. Trained
    64 -> 64 layers sum to about 8,000-16,000 (below 32,768); an adversarial 576 x 127 does not."""
    big = 65535 if x.dtype == np.uint16 else 32768
    return int(np.abs(w.astype(np.int64)).reshape(-1, w.shape[3]).sum(0).max(initial=0)) * big \
        < 1 << 31


def conv3x3_x16(x, w, mode=GATE_NO_MAX, gate=None):
    """conv3x3 for a 16-bit x (uint16, or int16 whose high byte is signed) and int8 w ->
    (H, W, C_out), exact, from its two byte planes in one pass (with ``mode``: and the
    maximum, as conv3x3): int32 where fits_s32_x16 (half the output's memory traffic: 34 ->
    29 ms for a 272 px, 64 -> 64 conv on one thread, AMD Zen 4), else int64."""
    h, wd, c = x.shape
    n = w.shape[3]
    if n > 64:
        raise ValueError("at most 64 output channels (one register tile wide)")
    c4 = _ceil(c, 4)
    hi, lo = (x >> 8).astype(np.int8 if x.dtype == np.int16 else np.uint8), \
        (x & 255).astype(np.uint8)
    (hp, hs), (lp, _) = _pad_u8(hi, c4), _pad_u8(lo, c4)
    b, wsum = _packed(w, c4)
    segs = _tap_segments(wd, c4)
    zero = np.zeros(n, np.int64)
    out = np.empty((h, wd, n), np.int32 if fits_s32_x16(x, w) else np.int64)
    rowmax = np.zeros(h, np.int64)
    _conv_rows_x16(hp.reshape(-1), lp.reshape(-1), wd, c4, segs, c4 // 4, b.reshape(-1),
                   b.shape[1], wsum if hs else zero, zero, _split(hi, hs), _split(lo, False),
                   out, mode, _NO_GATE if gate is None else gate, rowmax)
    return out if mode == GATE_NO_MAX else (out, int(rowmax.max()))


@njit(cache=True, nogil=True, parallel=True)
def _wgrad_tasks(a, c4, hp, wp2, segs, rows, bf, k4, npad, nchunks, split, o):
    # a: the (C4, H+2, Wp+2) uint8 padded input, flat; bf: (H, Wp/4, Np, 4) int8, flat;
    # o: (chunks, 9*C4, Np) int32 partial sums, flat.
    h = hp - 2
    plane = hp * wp2
    row_bytes = k4 * npad * 4
    mr = MR_NARROW if c4 % MR_NARROW == 0 else MR  # channel groups of the tile's height
    tiles = c4 // mr
    for task in prange(nchunks * 9 * tiles):
        ch, rest = task // (9 * tiles), task % (9 * tiles)
        tap, ci = rest // tiles, rest % tiles * mr
        y0 = ch * rows
        y1 = min(h, y0 + rows)
        _tile_any(a, ci * plane + (tap // 3) * wp2 + tap % 3, plane, segs[y0:y1], k4,
                  bf[y0 * row_bytes:], npad * 4, o, ((ch * 9 + tap) * c4 + ci) * npad, npad,
                  mr, npad // 8, split, _NO_SHIFTS)


@njit(cache=True, nogil=True, parallel=True)
def _pack_grad(g, b):
    # g (H, W, N) int8 -> b (H, Wp/4, Np, 4): b[y, x // 4, n, x % 4] = g[y, x, n], zero for
    # x >= W and n >= N; every byte written (b is allocated uninitialised). Full groups of
    # 4 pixels x 16 channels move in registers (transpose4x16_u8), the rest byte by byte.
    h, w, n = g.shape
    quads, npad = b.shape[1], b.shape[2]
    wq, nb = w - w % 4, n - n % 16
    for y in prange(h):
        for q in range(wq // 4):
            for j0 in range(0, nb, 16):
                transpose4x16_u8(g, (y * w + 4 * q) * n + j0, n, b,
                                 ((y * quads + q) * npad + j0) * 4)
        for xx in range(w):
            for j in range(nb if xx < wq else 0, n):
                b[y, xx >> 2, j, xx & 3] = g[y, xx, j]
            for j in range(n, npad):
                b[y, xx >> 2, j, xx & 3] = 0
        for xx in range(w, 4 * quads):
            for j in range(npad):
                b[y, xx >> 2, j, xx & 3] = 0


def wgrad3x3(x, g):
    """Weight gradient of a 3x3 conv: x (H, W, C_in) int8/uint8 layer input, g (H, W, N) int8
    output gradient (N <= 64 kept channels) -> (9*C_in, N) int64, rows (dy*3 + dx)*C_in + c,
    exact. Pixels are summed in int32 in chunks of at most WGRAD_CHUNK, then in int64."""
    h, wd, c = x.shape
    n = g.shape[2]
    if n > 64:
        raise ValueError("at most 64 output channels (one register tile wide)")
    c4, wp = _ceil(c, 4), _ceil(wd, 4)
    shifted = x.dtype == np.int8
    xp = np.empty((c4, h + 2, wp + 2), np.uint8)
    _pad_x8(np.ascontiguousarray(x).view(np.uint8), np.uint8(128 if shifted else 0), xp, True)
    b = np.empty((h, wp // 4, _ceil(n, 8), 4), np.int8)
    _pack_grad(np.ascontiguousarray(g), b)
    rows = max(1, WGRAD_CHUNK // wp)
    nchunks = -(-h // rows)
    segs = np.arange(h, dtype=np.int64) * (wp + 2)
    partial = np.empty((nchunks, 9 * c4, b.shape[2]), np.int32)
    _wgrad_tasks(xp.reshape(-1), c4, h + 2, wp + 2, segs, rows, b.reshape(-1), wp // 4,
                 b.shape[2], nchunks, _split(x, shifted), partial.reshape(-1))
    dw = (partial[0].astype(np.int64) if nchunks == 1 else partial.sum(axis=0, dtype=np.int64))
    dw = dw.reshape(9, c4, -1)[:, :c, :n].reshape(9 * c, n)
    if shifted:
        dw -= 128 * g.reshape(-1, n).sum(axis=0, dtype=np.int64)
    return dw
