"""The register tile of kernels/igemm_u8s8.py as LLVM IR: ``tile``, a Numba intrinsic, emits one
MR x (8 * nb) block of int32 accumulators kept in registers, for the instruction set of the
compile target (kernels/isa.py):

- AVX-512 VNNI: ``vpdpbusd`` on 16-lane zmm blocks (an 8-lane ymm block for an odd width);
- AVX-VNNI: the VEX ``vpdpbusd`` on 8-lane ymm blocks, two blocks a pass over K;
- AVX2: ``vpmaddubsw`` + ``vpmaddwd`` on 8-lane ymm blocks, two a pass (``emit_avx2``: same
  packing, same int32 lanes, exact by the byte bound it states).

The reduction streams *segments*: runs of ``4 * k4`` bytes of the A operand at arbitrary
offsets, against a B operand packed as ``[k/4][N][4]`` read strictly in order (igemm_u8s8.py
has the packing, the drivers and the exactness argument). Nothing here runs: these functions
build IR when Numba compiles a caller of ``tile``.
"""
from typing import NamedTuple

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from intsr.kernels.isa import TILE as ISA

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


class TileLoop(NamedTuple):
    """What one tile's loop nest reads and writes, as LLVM values (``rows`` a Python int):
    out[o_off + r*ldo + c] = sum over segments s and 4-byte steps q < k4 of
    a[a_off + r*lda + segs[s] + 4q + t] * b[(s*k4 + q)*ldb + 4c + t], for r < rows (with
    ``k4`` a pointer, segment s has k4[s] steps and B's rows run on: b[(k4[0] + ... +
    k4[s-1] + q) * ldb + 4c + t])."""
    builder: ir.IRBuilder
    rows: int      # accumulator rows, a compile-time constant
    nseg: ir.Value  # number of segments (i64)
    segs: ir.Value  # segment offsets (i64*)
    a: ir.Value     # A operand (i8*, read as uint8)
    a_off: ir.Value  # offset of row 0 in A (i64)
    lda: ir.Value   # A stride between rows (i64)
    k4: ir.Value    # 4-byte steps per segment (i64), or each segment's own (i64*)
    b: ir.Value     # packed B operand (i8*, int8)
    ldb: ir.Value   # bytes of B per 4-byte step (i64)
    out: ir.Value   # output (i32*)
    o_off: ir.Value  # offset of row 0 in out (i64)
    ldo: ir.Value   # out stride between rows (i64)
    shifts: ir.Value = None  # per segment: left shift of the accumulators before it (i64*)


def zmm_blocks(nb):
    """(column offset, lanes) of each register block of an 8 * nb wide tile: 16-lane zmm blocks
    and, for an odd nb, one 8-lane ymm block, so 8-channel layers (pruned) are not padded."""
    blocks = [(16 * i, 16) for i in range(nb // 2)]
    if nb % 2:
        blocks.append((16 * len(blocks), 8))
    return blocks


def emit_vnni(loop, blocks):
    """The VNNI tile: rows x blocks of int32 accumulators, one ``vpdpbusd`` per (row, block)
    and 4-byte step of K (16-lane zmm blocks of AVX-512 VNNI, or 8-lane ymm blocks: the VEX
    form of AVX-VNNI). ``vpdpbusd`` adds its four u8 x s8 products in int32: exact for any
    bytes."""
    builder = loop.builder
    vty = {16: _V16, 8: _V8}
    fns = {n: cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vty[n], [vty[n]] * 3),
        f"llvm.x86.avx512.vpdpbusd.{32 * n}") for n in (16, 8)}

    def madd(acc, word_vecs, bvec, n):
        bcast = builder.shuffle_vector(word_vecs[0], ir.Constant(_V16, ir.Undefined),
                                       ir.Constant(vty[n], None))
        return builder.call(fns[n], [acc, bcast, bvec])

    emit_loops(loop, blocks, vty, lambda word: [word], madd)


def emit_avx2(loop, blocks, split):
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
    vectors, the broadcasts and constants); ``tile`` runs a wider tile as several passes over
    K."""
    builder = loop.builder
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

    emit_loops(loop, blocks, {8: _V8}, parts, madd)


def emit_loops(loop, blocks, vty, parts, madd):
    """The loop nest shared by the tiles: accumulators in registers, segments of K, each
    4-byte step loading the B vectors once and broadcasting one A word per row (``parts``
    may split the word; ``madd(acc, [word vectors], b vector, lanes)`` is the ISA's step)."""
    builder = loop.builder
    acc = [[cgutils.alloca_once_value(builder, ir.Constant(vty[n], None)) for _, n in blocks]
           for _ in range(loop.rows)]
    bpos = cgutils.alloca_once_value(builder, ir.Constant(_I64, 0))  # bytes of B read
    with cgutils.for_range(builder, loop.nseg) as seg_loop:
        seg = builder.load(builder.gep(loop.segs, [seg_loop.index]))
        if loop.shifts is not None:  # Horner: acc * 2**shift before the segment's products
            sh = builder.load(builder.gep(loop.shifts, [seg_loop.index]))
            with builder.if_then(builder.icmp_signed("!=", sh, ir.Constant(_I64, 0))):
                one = builder.insert_element(ir.Constant(_V16, ir.Undefined),
                                             builder.trunc(sh, _I32), ir.Constant(_I32, 0))
                splat = {n: builder.shuffle_vector(one, ir.Constant(_V16, ir.Undefined),
                                                   ir.Constant(vty[n], None)) for _, n in blocks}
                for r in range(loop.rows):
                    for c, (_, n) in enumerate(blocks):
                        builder.store(builder.shl(builder.load(acc[r][c]), splat[n]), acc[r][c])
        base = builder.add(loop.a_off, seg)
        k4 = loop.k4
        if isinstance(k4.type, ir.PointerType):  # each segment's own step count
            k4 = builder.load(builder.gep(k4, [seg_loop.index]))
        with cgutils.for_range(builder, k4) as q_loop:
            q4 = builder.mul(q_loop.index, ir.Constant(_I64, 4))
            bp = builder.load(bpos)
            bvecs = []
            for c0, n in blocks:
                p = builder.gep(loop.b, [builder.add(bp, ir.Constant(_I64, 4 * c0))])
                bvecs.append(builder.load(builder.bitcast(p, vty[n].as_pointer()), align=1))
            for r in range(loop.rows):
                off = builder.add(builder.add(base, q4),
                                  builder.mul(loop.lda, ir.Constant(_I64, r)))
                p = builder.bitcast(builder.gep(loop.a, [off]), _I32.as_pointer())
                vecs = [builder.insert_element(ir.Constant(_V16, ir.Undefined), w,
                                               ir.Constant(_I32, 0))
                        for w in parts(builder.load(p, align=1))]
                for c, (_, n) in enumerate(blocks):
                    builder.store(madd(builder.load(acc[r][c]), vecs, bvecs[c], n), acc[r][c])
            builder.store(builder.add(bp, loop.ldb), bpos)
    for r in range(loop.rows):
        row = builder.add(loop.o_off, builder.mul(loop.ldo, ir.Constant(_I64, r)))
        for c, (c0, n) in enumerate(blocks):
            p = builder.gep(loop.out, [builder.add(row, ir.Constant(_I64, c0))])
            builder.store(builder.load(acc[r][c]), builder.bitcast(p, vty[n].as_pointer()),
                          align=1)


@intrinsic
def tile(typingctx, a, a_off, lda, segs, k4, b, ldb, out, o_off, ldo, mr, nb, split):
    """out[o_off + r*ldo + c] = sum_s sum_q sum_t a[a_off + r*lda + segs[s] + 4q + t]
                                              * b[(s*k4 + q)*ldb + 4c + t]
    for r < mr, c < 8*nb, s < len(segs), q < k4, t < 4 (a uint8, b int8, out int32; ``mr``
    a compile-time constant, ``nb`` in 1..8). ``split``: whether an A byte may be 128 or more
    (the AVX2 tile then takes bytes apart; VNNI ignores it). ``k4``: steps per segment, or
    an int64 array of each segment's (runs of channels of different lengths: the grouped
    conv's). The instructions are those of ``ISA``, the compile target's. Each width is its
    own unrolled tile: a literal ``nb`` compiles one, a run-time ``nb`` all eight behind one
    switch. Stores, does not accumulate."""
    if not isinstance(mr, types.IntegerLiteral) or not isinstance(nb, types.Integer):
        return None
    sig = types.void(a, a_off, lda, segs, k4, b, ldb, out, o_off, ldo, mr, nb, split)
    return sig, _codegen(mr.literal_value, False)


@intrinsic
def tile_shifted(typingctx, a, a_off, lda, segs, shifts, k4, b, ldb, out, o_off, ldo, mr, nb,
                 split):
    """``tile`` with the accumulators multiplied by ``2**shifts[s]`` (int64, >= 0) before
    segment s's products: Horner's scheme for a reduction whose parts have different
    power-of-two scales, coarsest first (igemm_u8s8.conv3x3_grouped). The caller bounds the
    result below 2**31 (the left shifts wrap otherwise)."""
    if not isinstance(mr, types.IntegerLiteral) or not isinstance(nb, types.Integer):
        return None
    sig = types.void(a, a_off, lda, segs, shifts, k4, b, ldb, out, o_off, ldo, mr, nb, split)
    return sig, _codegen(mr.literal_value, True)


def _codegen(n_rows, shifted):
    def codegen(context, builder, signature, args):
        args, sargs = list(args), list(signature.args)
        shifts_ptr = None
        if shifted:  # the shifts array: the one argument tile does not have
            shifts_ptr = context.make_array(sargs[4])(context, builder, args[4]).data
            del args[4], sargs[4]
        (_, a_off_v, lda_v, _, k4_v, _, ldb_v, _, o_off_v, ldo_v, _, nb_v, split_v) = args
        arr = [context.make_array(sargs[i])(context, builder, args[i]) for i in (0, 3, 5, 7)]
        a_ptr, segs_ptr, b_ptr, o_ptr = (x.data for x in arr)
        if isinstance(sargs[4], types.Array):  # each segment's own step count
            k4_v = context.make_array(sargs[4])(context, builder, k4_v).data
        i8p = ir.IntType(8).as_pointer()
        a_ptr = builder.bitcast(a_ptr, i8p)
        b_ptr = builder.bitcast(b_ptr, i8p)
        nseg = builder.extract_value(arr[1].shape, 0)
        loop = TileLoop(builder=builder, rows=n_rows, nseg=nseg, segs=segs_ptr, a=a_ptr,
                        a_off=a_off_v, lda=lda_v, k4=k4_v, b=b_ptr, ldb=ldb_v, out=o_ptr,
                        o_off=o_off_v, ldo=ldo_v, shifts=shifts_ptr)

        def emit(width):
            if ISA == "vnni":
                emit_vnni(loop, zmm_blocks(width))
                return
            # ymm (16 registers): 8-lane blocks, two a pass over K
            flag = builder.icmp_unsigned("!=", split_v, ir.Constant(split_v.type, 0))
            for g in range(0, width, 2):
                pair = [(8 * i, 8) for i in range(g, min(g + 2, width))]
                if ISA == "avxvnni":  # the VEX vpdpbusd
                    emit_vnni(loop, pair)
                    continue
                with builder.if_else(flag) as (whole_bytes, low_bytes):
                    with whole_bytes:
                        emit_avx2(loop, pair, True)
                    with low_bytes:
                        emit_avx2(loop, pair, False)

        if isinstance(sargs[11], types.IntegerLiteral):
            emit(sargs[11].literal_value)
            return context.get_dummy_value()
        # Run-time width: one unrolled tile per width behind a switch (anything else: width 1);
        # a tile taller than MR only for the narrow widths (igemm_u8s8._tile_any calls it for
        # no other).
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

    return codegen
