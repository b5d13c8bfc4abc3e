"""Byte-block transposes in registers, for the two operand copies of the weight gradient's tile
(kernels/igemm_u8s8.py): the layer input to channels-first (``transpose16_u8``, in
``_pad_x8``) and the output gradient to ``[y][x/4][N][4]`` (``transpose4x16_u8``, in
``_pack_grad``).

Written as loops, a byte transpose stays scalar in LLVM (about 0.6 cycles a byte here: 230 us
for a 128 x 128 x 64 activation, a tenth of a 128 px step over the seven middle layers).
These load 16-byte rows, interleave them (``shufflevector`` of two rows: their first or last
eight lanes, alternately) and store 16-byte rows. Four rounds of interleaving rows i and
i + 8 transpose a 16 x 16 block; two rounds over four rows (bytes, then byte pairs) give the
4-byte groups of a 4 x 16 block. Only ``shufflevector``, ``xor``, loads and stores: no target
intrinsic, so every target lowers them (``punpckl*`` / ``punpckh*`` on x86 from SSE2 on,
``zip1`` / ``zip2`` on Arm), and no arithmetic: the bytes move, unchanged but for the
sign-bit flip the caller may ask for. Offsets are in elements of C-contiguous 8-bit arrays,
which the caller keeps in bounds (nothing is checked here).
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_I32, _I64, _I8, _I16 = ir.IntType(32), ir.IntType(64), ir.IntType(8), ir.IntType(16)
_V16B = ir.VectorType(_I8, 16)  # 16 bytes; as 8 x i16 for the pair interleave
_V8H = ir.VectorType(_I16, 8)


def _interleave(lanes):
    """Masks of the interleave of a (lanes 0..n-1) and b (n..2n-1): a0 b0 a1 b1 ... of the first
    halves, and of the last halves."""
    half = lanes // 2
    mask = ir.VectorType(_I32, lanes)
    return [ir.Constant(mask, [h + k // 2 + lanes * (k % 2) for k in range(lanes)])
            for h in (0, half)]


_BYTES, _PAIRS = _interleave(16), _interleave(8)


def _bytes_array(arr):
    return isinstance(arr, types.Array) and arr.dtype in (types.uint8, types.int8) and \
        arr.layout == "C"


def _codegen_parts(context, builder, signature, args):
    """(byte pointers of the two arrays, int64 offsets/strides) of a transpose's arguments."""
    ptrs = [builder.bitcast(context.make_array(signature.args[i])(context, builder, args[i]).data,
                            _I8.as_pointer()) for i in (0, 3)]
    ints = [context.cast(builder, args[i], signature.args[i], types.int64)
            for i in range(len(args)) if i not in (0, 3)]
    return ptrs, ints


def _row(builder, base, off, stride, i):
    p = builder.gep(base, [builder.add(off, builder.mul(stride, ir.Constant(_I64, i)))])
    return builder.bitcast(p, _V16B.as_pointer())


@intrinsic
def transpose16_u8(typingctx, src, s_off, s_stride, dst, d_off, d_stride, flip):
    """dst.flat[d_off + j * d_stride + i] = src.flat[s_off + i * s_stride + j] ^ flip for
    i, j < 16."""
    if not (_bytes_array(src) and _bytes_array(dst)):
        return None
    sig = types.void(src, s_off, s_stride, dst, d_off, d_stride, flip)

    def codegen(context, builder, signature, args):
        (sp, dp), (s_off_v, s_stride_v, d_off_v, d_stride_v, flip_v) = _codegen_parts(
            context, builder, signature, args)
        fv = builder.insert_element(ir.Constant(_V16B, ir.Undefined), builder.trunc(flip_v, _I8),
                                    ir.Constant(_I32, 0))
        fv = builder.shuffle_vector(fv, ir.Constant(_V16B, ir.Undefined),
                                    ir.Constant(ir.VectorType(_I32, 16), None))
        rows = [builder.xor(builder.load(_row(builder, sp, s_off_v, s_stride_v, i), align=1), fv)
                for i in range(16)]
        for _ in range(4):
            rows = [builder.shuffle_vector(rows[i], rows[i + 8], mask)
                    for i in range(8) for mask in _BYTES]
        for j in range(16):
            builder.store(rows[j], _row(builder, dp, d_off_v, d_stride_v, j), align=1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def transpose4x16_u8(typingctx, src, s_off, s_stride, dst, d_off):
    """dst.flat[d_off + 4 * j + i] = src.flat[s_off + i * s_stride + j] for i < 4, j < 16: four
    rows of 16 bytes into 16 groups of four, 64 contiguous bytes."""
    if not (_bytes_array(src) and _bytes_array(dst)):
        return None
    sig = types.void(src, s_off, s_stride, dst, d_off)

    def codegen(context, builder, signature, args):
        (sp, dp), (s_off_v, s_stride_v, d_off_v) = _codegen_parts(context, builder, signature,
                                                                  args)
        r = [builder.load(_row(builder, sp, s_off_v, s_stride_v, i), align=1) for i in range(4)]
        # bytes: rows 0 and 1 -> (r0[j], r1[j]) pairs, rows 2 and 3 likewise
        p01 = [builder.bitcast(builder.shuffle_vector(r[0], r[1], m), _V8H) for m in _BYTES]
        p23 = [builder.bitcast(builder.shuffle_vector(r[2], r[3], m), _V8H) for m in _BYTES]
        # pairs: (r0[j], r1[j]) next to (r2[j], r3[j]), columns 0-3, 4-7, 8-11, 12-15
        out = [builder.shuffle_vector(p01[h], p23[h], m) for h in (0, 1) for m in _PAIRS]
        for k, v in enumerate(out):
            builder.store(builder.bitcast(v, _V16B), _row(builder, dp, d_off_v,
                                                         ir.Constant(_I64, 16), k), align=1)
        return context.get_dummy_value()

    return sig, codegen


def transpose16_u8_ref(src, s_off, s_stride, dst, d_off, d_stride, flip):
    """The same bytes moved by NumPy, on flat views."""
    s, d = src.reshape(-1), dst.reshape(-1)
    block = s[s_off + np.arange(16)[:, None] * s_stride + np.arange(16)[None, :]]
    d[d_off + np.arange(16)[:, None] * d_stride + np.arange(16)[None, :]] = \
        block.T ^ np.array(flip).astype(s.dtype)


def transpose4x16_u8_ref(src, s_off, s_stride, dst, d_off):
    s, d = src.reshape(-1), dst.reshape(-1)
    block = s[s_off + np.arange(4)[:, None] * s_stride + np.arange(16)[None, :]]
    d[d_off + np.arange(64)] = block.T.reshape(-1)
