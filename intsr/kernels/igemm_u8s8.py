"""Implicit GEMM for 3x3 convolutions on AVX-512 VNNI or AVX2: uint8 x int8 -> int32, no
im2col.

``vpdpbusd`` multiplies 64 unsigned bytes by 64 signed bytes and adds each group of four
products into one of 16 int32 lanes (8 for its 256-bit form). The micro-kernel ``_tile`` keeps
an MR x (8 * nb) block of int32 accumulators in registers and streams the reduction dimension
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
instead (``_avx2_emit``: same packing, same int32 lanes, exact by the byte bound it states);
with AVX-VNNI but no AVX-512 it emits the VEX ``vpdpbusd`` on 8-lane ymm blocks.
Chosen by kernels/dispatch.py where the target has either; the portable kernels in
gemm_x8s8.py compute the same integers everywhere else. The conv drivers also take Eq. 11's
maximum row by row (``_row_max``) and run 16-bit data as two byte planes in one pass
(``conv3x3_x16``).
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from intsr.kernels.fixedpoint import WGRAD_CHUNK
from intsr.kernels.isa import TILE as ISA
from intsr.kernels.transpose_u8 import transpose4x16_u8, transpose16_u8

MR = 4  # rows of the register tile: 4 x 4 accumulators + 4 B vectors + 1 broadcast < 32 zmm
# Narrow products (a pruned layer's kept channels, N <= 32: at most two zmm blocks) would load
# one broadcast per two vpdpbusd at MR rows; on zmm (32 registers) they take twice the rows
# instead, 8 x 2 accumulators, so the loads per vpdpbusd stay those of the full-width tile.
# The ymm tiles (AVX2, AVX-VNNI: 16 registers) have no room for it.
MR_NARROW = 2 * MR if ISA == "vnni" else MR
NB_NARROW = 4  # widths (in 8-lane units) that take the MR_NARROW-row tile

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V16 = ir.VectorType(_I32, 16)
_V8 = ir.VectorType(_I32, 8)


def _blocks(nb):
    """(column offset, lanes) of each register block of an 8 * nb wide tile: 16-lane zmm blocks
    and, for an odd nb, one 8-lane ymm block, so 8-channel layers (pruned) are not padded."""
    blocks = [(16 * i, 16) for i in range(nb // 2)]
    if nb % 2:
        blocks.append((16 * len(blocks), 8))
    return blocks


def _vnni_emit(builder, rows, nseg, segs_ptr, a_ptr, b_ptr, o_ptr, a_off, lda, k4, ldb, o_off,
               ldo, blocks):
    """The AVX-512 VNNI tile: rows x blocks of int32 accumulators (16-lane zmm blocks, an
    8-lane ymm for an odd width), one ``vpdpbusd`` per (row, block) and 4-byte step of K.
    ``vpdpbusd`` adds its four u8 x s8 products in int32: exact for any bytes."""
    vty = {16: _V16, 8: _V8}
    fns = {n: cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vty[n], [vty[n]] * 3),
        f"llvm.x86.avx512.vpdpbusd.{32 * n}") for n in (16, 8)}

    def madd(acc, word_vecs, bvec, n):
        bcast = builder.shuffle_vector(word_vecs[0], ir.Constant(_V16, ir.Undefined),
                                       ir.Constant(vty[n], None))
        return builder.call(fns[n], [acc, bcast, bvec])

    _emit_loops(builder, rows, blocks, vty, nseg, segs_ptr, a_ptr, b_ptr, o_ptr, a_off, lda,
                k4, ldb, o_off, ldo, lambda word: [word], madd)


def _avx2_emit(builder, rows, nseg, segs_ptr, a_ptr, b_ptr, o_ptr, a_off, lda, k4, ldb, o_off,
               ldo, blocks, split):
    """The AVX2 tile: ``vpmaddubsw`` multiplies 32 u8 x s8 byte pairs and adds each pair into
    an int16 lane, *saturating*; ``vpmaddwd`` by ones adds lane pairs into int32, so one
    int32 lane gets the same four products as a ``vpdpbusd`` lane (same B packing).

    Exactness: a pair sum is at most 2 * 127 * 128 = 32,512 < 2**15 when every A byte is
    below 128 (post-ReLU int8 activations), so nothing saturates. With ``split`` (A bytes up
    to 255: the image, sign-shifted gradients, the low byte planes of 16-bit operands) each
    byte is taken apart as a = (a & 127) + 128 * (a >> 7): the low part's pair sums obey the
    bound above, the high bit's are at most 2 * 128, and ``vpmaddwd`` weighs them by 1 and
    128 into int32 (|sum| <= 4 * 255 * 128, as vpdpbusd's). Accumulation in int32 as VNNI's.
    ``blocks``: at most two 8-lane ymm blocks (16 ymm registers: 4 x 2 accumulators, two B
    vectors, the broadcasts and constants); _tile runs a wider tile as several passes over K."""
    v32i8, v16i16 = ir.VectorType(ir.IntType(8), 32), ir.VectorType(ir.IntType(16), 16)
    ub = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16i16, [v32i8] * 2),
                                        "llvm.x86.avx2.pmadd.ub.sw")
    wd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8, [v16i16] * 2),
                                        "llvm.x86.avx2.pmadd.wd")
    ones = ir.Constant(v16i16, [1] * 16)
    c128 = ir.Constant(v16i16, [128] * 16)

    def parts(word):
        if not split:
            return [word]
        return [builder.and_(word, ir.Constant(_I32, 0x7F7F7F7F)),
                builder.and_(builder.lshr(word, ir.Constant(_I32, 7)),
                             ir.Constant(_I32, 0x01010101))]

    def madd(acc, word_vecs, bvec, n):
        b8 = builder.bitcast(bvec, v32i8)
        # one word (no split: weight 1) or its two parts (weights 1 and 128)
        for vec, weight in zip(word_vecs, (ones, c128), strict=False):
            bcast = builder.shuffle_vector(vec, ir.Constant(_V16, ir.Undefined),
                                           ir.Constant(_V8, None))
            pairs = builder.call(ub, [builder.bitcast(bcast, v32i8), b8])
            acc = builder.add(acc, builder.call(wd, [pairs, weight]))
        return acc

    _emit_loops(builder, rows, blocks, {8: _V8}, nseg, segs_ptr, a_ptr, b_ptr, o_ptr, a_off,
                lda, k4, ldb, o_off, ldo, parts, madd)


def _emit_loops(builder, rows, blocks, vty, nseg, segs_ptr, a_ptr, b_ptr, o_ptr, a_off, lda,
                k4, ldb, o_off, ldo, parts, madd):
    """The loop nest shared by the tiles: accumulators in registers, segments of K, each
    4-byte step loading the B vectors once and broadcasting one A word per row (``parts``
    may split the word; ``madd(acc, [word vectors], b vector, lanes)`` is the ISA's step)."""
    acc = [[cgutils.alloca_once_value(builder, ir.Constant(vty[n], None)) for _, n in blocks]
           for _ in range(rows)]
    bpos = cgutils.alloca_once_value(builder, ir.Constant(_I64, 0))  # bytes of B read
    with cgutils.for_range(builder, nseg) as seg_loop:
        seg = builder.load(builder.gep(segs_ptr, [seg_loop.index]))
        base = builder.add(a_off, seg)
        with cgutils.for_range(builder, k4) as q_loop:
            q4 = builder.mul(q_loop.index, ir.Constant(_I64, 4))
            bp = builder.load(bpos)
            bvecs = []
            for c0, n in blocks:
                p = builder.gep(b_ptr, [builder.add(bp, ir.Constant(_I64, 4 * c0))])
                bvecs.append(builder.load(builder.bitcast(p, vty[n].as_pointer()), align=1))
            for r in range(rows):
                off = builder.add(builder.add(base, q4), builder.mul(lda, ir.Constant(_I64, r)))
                p = builder.bitcast(builder.gep(a_ptr, [off]), _I32.as_pointer())
                vecs = [builder.insert_element(ir.Constant(_V16, ir.Undefined), w,
                                               ir.Constant(_I32, 0))
                        for w in parts(builder.load(p, align=1))]
                for c, (_, n) in enumerate(blocks):
                    builder.store(madd(builder.load(acc[r][c]), vecs, bvecs[c], n), acc[r][c])
            builder.store(builder.add(bp, ldb), bpos)
    for r in range(rows):
        row = builder.add(o_off, builder.mul(ldo, ir.Constant(_I64, r)))
        for c, (c0, n) in enumerate(blocks):
            p = builder.gep(o_ptr, [builder.add(row, ir.Constant(_I64, c0))])
            builder.store(builder.load(acc[r][c]), builder.bitcast(p, vty[n].as_pointer()),
                          align=1)


@intrinsic
def _tile(typingctx, a, a_off, lda, segs, k4, b, ldb, out, o_off, ldo, mr, nb, split):
    """out[o_off + r*ldo + c] = sum_s sum_q sum_t a[a_off + r*lda + segs[s] + 4q + t]
                                              * b[(s*k4 + q)*ldb + 4c + t]
    for r < mr, c < 8*nb, s < len(segs), q < k4, t < 4 (a uint8, b int8, out int32; ``mr``
    a compile-time constant, ``nb`` in 1..8). ``split``: whether an A byte may be 128 or more
    (the AVX2 tile then takes bytes apart; VNNI ignores it). The instructions are those of
    ``ISA``, the compile target's. Each width is its own unrolled tile: a literal ``nb``
    compiles one, a run-time ``nb`` all eight behind one switch. Stores, does not
    accumulate."""
    if not isinstance(mr, types.IntegerLiteral) or not isinstance(nb, types.Integer):
        return None
    n_rows = mr.literal_value
    sig = types.void(a, a_off, lda, segs, k4, b, ldb, out, o_off, ldo, mr, nb, split)

    def codegen(context, builder, signature, args):
        (a_v, a_off_v, lda_v, segs_v, k4_v, b_v, ldb_v, out_v, o_off_v, ldo_v, _, nb_v,
         split_v) = args
        arr = [context.make_array(signature.args[i])(context, builder, args[i])
               for i in (0, 3, 5, 7)]
        a_ptr, segs_ptr, b_ptr, o_ptr = (x.data for x in arr)
        i8p = ir.IntType(8).as_pointer()
        a_ptr = builder.bitcast(a_ptr, i8p)
        b_ptr = builder.bitcast(b_ptr, i8p)
        nseg = builder.extract_value(arr[1].shape, 0)

        def emit(width):
            loop = (builder, n_rows, nseg, segs_ptr, a_ptr, b_ptr, o_ptr, a_off_v, lda_v, k4_v,
                    ldb_v, o_off_v, ldo_v)
            if ISA == "vnni":
                _vnni_emit(*loop, _blocks(width))
                return
            # ymm (16 registers): 8-lane blocks, two a pass over K
            flag = builder.icmp_unsigned("!=", split_v, ir.Constant(split_v.type, 0))
            for g in range(0, width, 2):
                pair = [(8 * i, 8) for i in range(g, min(g + 2, width))]
                if ISA == "avxvnni":  # the VEX vpdpbusd
                    _vnni_emit(*loop, pair)
                    continue
                with builder.if_else(flag) as (whole_bytes, low_bytes):
                    with whole_bytes:
                        _avx2_emit(*loop, pair, True)
                    with low_bytes:
                        _avx2_emit(*loop, pair, False)

        if isinstance(signature.args[11], types.IntegerLiteral):
            emit(signature.args[11].literal_value)
            return context.get_dummy_value()
        # Run-time width: one unrolled tile per width behind a switch (anything else: width 1);
        # a tile taller than MR only for the narrow widths (_tile_any calls it for no other).
        end = builder.append_basic_block("tile_end")
        widths = range(1, 9) if n_rows <= MR else range(1, NB_NARROW + 1)
        cases = {w: builder.append_basic_block(f"tile_nb{w}") for w in widths}
        switch = builder.switch(nb_v, cases[1])
        for w, block in cases.items():
            if w != 1:
                switch.add_case(ir.Constant(nb_v.type, w), block)
            builder.position_at_end(block)
            emit(w)
            builder.branch(end)
        builder.position_at_end(end)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, inline="always")
def _tile_any(a, a_off, lda, segs, k4, b, ldb, out, o_off, ldo, mr, nb, split):
    # mr <= MR_NARROW rows as MR_NARROW-row tiles where the width allows, else MR-row tiles; a
    # tail of fewer rows (image width not a multiple of MR) goes row by row.
    r = 0
    if MR_NARROW > MR and nb <= NB_NARROW and mr == MR_NARROW:
        _tile(a, a_off, lda, segs, k4, b, ldb, out, o_off, ldo, MR_NARROW, nb, split)
        r = mr
    while mr - r >= MR:
        _tile(a, a_off + r * lda, lda, segs, k4, b, ldb, out, o_off + r * ldo, ldo, MR, nb,
              split)
        r += MR
    while r < mr:
        _tile(a, a_off + r * lda, lda, segs, k4, b, ldb, out, o_off + r * ldo, ldo, 1, nb,
              split)
        r += 1


def _ceil(n, m):
    return -(-n // m) * m


@njit(cache=True)
def _pack_w(w, c4, b, wsum):
    # w (3, 3, C, N) int8 -> the B operand as ``vpdpbusd`` reads it, b (9*C4/4, Np, 4) with Np =
    # N rounded up to 8: b[k // 4, j, k % 4] = w[tap, c, j] for reduction index k = tap*C4 + c,
    # zero for c >= C and j >= N; and wsum[j] = 128 * the column's sum, the sign shift's
    # correction (|wsum| <= 128 * 576 * 128 < 2**24). One pass, every byte of b written.
    cin, n = w.shape[2], w.shape[3]
    npad = b.shape[1]
    for j in range(npad):
        wsum[j] = 0
    for tap in range(9):
        dy, dx = tap // 3, tap % 3
        for c in range(c4):
            k = tap * c4 + c
            for j in range(npad):
                v = w[dy, dx, c, j] if c < cin and j < n else np.int8(0)
                b[k >> 2, j, k & 3] = v
                wsum[j] += 128 * np.int64(v)


# The kernels take flat views made by the caller: Numba's in-kernel reshape checks sizes
# through float64 arithmetic, and no float may appear in the online path.
@njit(cache=True, inline="always")
def _row_max(out, y, gate, mode, width, n):
    # Eq. 11's maximum of output row y while it is in cache: max(acc, 0) for the forward ReLU
    # (mode 1), max |acc| where gate > 0 for the backward one (mode 2), max |acc| (0). Shaped
    # for LLVM's vectorizer, which left the earlier form (one max over a loop nest over pixels
    # and channels) scalar: the ungated row is one flat loop; the gate, a column prefix of the
    # stored activation, needs the nest, so it keeps one maximum per channel (an element-wise
    # inner loop) and reduces them at the end. Measured at 128 px (AMD Zen 5, 2 threads): the
    # maximum's cost in a 64-channel forward conv 95 -> 13-37 us, in a pruned 32-channel
    # activation gradient 66 -> 45-58 us (the gate's reads from memory remain).
    if mode != 2:
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


@njit(cache=True)
def _flat_max(row, mode):
    # max(v, 0) over a C-contiguous block (mode 1), else max |v|: one flat loop, vectorized.
    # ravel of a C-contiguous array is a view with no size check (unlike reshape, above).
    o = row.ravel()
    m = np.int64(0)
    if mode == 1:
        for k in range(o.size):
            m = max(m, np.int64(o[k]))
    else:
        for k in range(o.size):
            m = max(m, abs(np.int64(o[k])))
    return m


@njit(cache=True, parallel=True)
def _conv_rows(a, width, c4, segs, k4, bf, npad, corr, shifted, split, out, o, mode, gate,
               rowmax):
    # a: the (H+2, W+2, C4) uint8 padded input, flat; out (H, W, N <= npad) int32 and o its flat
    # view; the result is reduced by corr[n] (the sign shift's constant, or zeros). One output
    # row per task. When N is not a multiple of 8 the register tiles store a row's npad-wide
    # results in a private buffer, copied out without the padding columns, so the caller
    # still gets a contiguous (H, W, N) array. With ``mode`` >= 0, rowmax[y] is the row's
    # gated maximum (_row_max; gate (H*W, N) for mode 2).
    h, n = out.shape[0], out.shape[2]
    for y in prange(h):
        if n == npad:
            for x0 in range(0, width, MR_NARROW):
                _tile_any(a, (y * (width + 2) + x0) * c4, c4, segs, k4, bf, npad * 4, o,
                          (y * width + x0) * npad, npad, min(MR_NARROW, width - x0), npad // 8,
                          split)
            if shifted:
                for xx in range(width):
                    for j in range(n):
                        out[y, xx, j] -= corr[j]
        else:
            row = np.empty(width * npad, np.int32)
            for x0 in range(0, width, MR_NARROW):
                _tile_any(a, (y * (width + 2) + x0) * c4, c4, segs, k4, bf, npad * 4, row,
                          x0 * npad, npad, min(MR_NARROW, width - x0), npad // 8, split)
            for xx in range(width):
                for j in range(n):
                    out[y, xx, j] = row[xx * npad + j] - corr[j]
        if mode >= 0:
            rowmax[y] = _row_max(out, y, gate, mode, width, n)


@njit(cache=True, parallel=True)
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


def conv3x3(x, w, mode=-1, gate=None):
    """x (H, W, C_in) int8/uint8, w (3, 3, C_in, C_out) int8 -> (H, W, C_out) int32, exact.

    With a requant gate ``mode`` (kernels/requant.py: 0 none, 1 ReLU, 2 mask by ``gate``, an
    (H*W, C_out) array) returns (out, max |gated(out)|) instead: Eq. 11's maximum, taken row by
    row as the tile finishes it, so no separate pass reads the int32 output again."""
    h, wd, c = x.shape
    n = w.shape[3]
    if n > 64:
        raise ValueError("at most 64 output channels (one register tile wide)")
    c4 = _ceil(c, 4)
    xp, shifted = _pad_u8(x, c4)
    b, wsum = _packed(w, c4)
    segs = _tap_segments(wd, c4)
    corr = wsum if shifted else np.zeros(n, np.int64)
    out = np.empty((h, wd, n), np.int32)
    rowmax = np.zeros(h, np.int64)
    _conv_rows(xp.reshape(-1), wd, c4, segs, c4 // 4, b.reshape(-1), b.shape[1], corr, shifted,
               _split(x, shifted), out, out.reshape(-1), mode, _NO_GATE if gate is None else gate,
               rowmax)
    return out if mode < 0 else (out, int(rowmax.max()))


@njit(cache=True, parallel=True)
def _conv_rows_x16(a_hi, a_lo, width, c4, segs, k4, bf, npad, corr_hi, corr_lo, split_hi,
                   split_lo, out, mode, gate, rowmax):
    # _conv_rows for a 16-bit A as two byte planes: per output row, both planes' tiles into
    # private int32 rows (each exact, as _conv_rows's), combined once into the int64 output
    # as (hi - corr_hi) * 2**8 + (lo - corr_lo) while the rows are in cache.
    # |hi| < 576 * 255 * 128 < 2**25, so the sum stays below 2**34.
    h, n = out.shape[0], out.shape[2]
    for y in prange(h):
        hi = np.empty(width * npad, np.int32)
        lo = np.empty(width * npad, np.int32)
        for x0 in range(0, width, MR_NARROW):
            off, rows = (y * (width + 2) + x0) * c4, min(MR_NARROW, width - x0)
            _tile_any(a_hi, off, c4, segs, k4, bf, npad * 4, hi, x0 * npad, npad, rows,
                      npad // 8, split_hi)
            _tile_any(a_lo, off, c4, segs, k4, bf, npad * 4, lo, x0 * npad, npad, rows,
                      npad // 8, split_lo)
        for xx in range(width):
            for j in range(n):
                k = xx * npad + j
                out[y, xx, j] = ((np.int64(hi[k]) - corr_hi[j]) << 8) + (lo[k] - corr_lo[j])
        if mode >= 0:
            rowmax[y] = _row_max(out, y, gate, mode, width, n)


def conv3x3_x16(x, w, mode=-1, gate=None):
    """conv3x3 for a 16-bit x (uint16, or int16 whose high byte is signed) and int8 w ->
    (H, W, C_out) int64, exact, from its two byte planes in one pass (with ``mode``: and the
    maximum, as conv3x3)."""
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
    out = np.empty((h, wd, n), np.int64)
    rowmax = np.zeros(h, np.int64)
    _conv_rows_x16(hp.reshape(-1), lp.reshape(-1), wd, c4, segs, c4 // 4, b.reshape(-1),
                   b.shape[1], wsum if hs else zero, zero, _split(hi, hs), _split(lo, False),
                   out, mode, _NO_GATE if gate is None else gate, rowmax)
    return out if mode < 0 else (out, int(rowmax.max()))


@njit(cache=True, parallel=True)
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
                  mr, npad // 8, split)


@njit(cache=True, parallel=True)
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
