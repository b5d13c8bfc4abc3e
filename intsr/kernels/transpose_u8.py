"""16 x 16 byte-block transpose, uint8: the channels-last -> channels-first copy that the weight
gradient's tile reads its layer input from (igemm_u8s8._pad_x8).

Written as loops, a byte transpose stays scalar in LLVM (about 0.6 cycles a byte here: 230 us
for a 128 x 128 x 64 activation, a tenth of a 128 px step over the seven middle layers).
``transpose16_u8`` loads sixteen 16-byte rows, applies four rounds of byte interleaving (a
perfect shuffle of rows i and i + 8; four rounds of it transpose a 16 x 16 block) and stores
sixteen 16-byte columns. Only ``shufflevector``, ``xor``, loads and stores: no target
intrinsic, so every target lowers it (``punpcklbw`` / ``punpckhbw`` on x86 from SSE2 on,
``zip1`` / ``zip2`` on Arm), and no arithmetic at all: the bytes move, unchanged but for the
sign-bit flip the caller asks for.
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_I32, _I64, _I8 = ir.IntType(32), ir.IntType(64), ir.IntType(8)
_V16 = ir.VectorType(_I8, 16)
_MASK = ir.VectorType(_I32, 16)
# interleave of a (lanes 0-15) and b (16-31): a0 b0 a1 b1 ... a7 b7, and a8 b8 ... a15 b15
_LOW = ir.Constant(_MASK, [k // 2 + 16 * (k % 2) for k in range(16)])
_HIGH = ir.Constant(_MASK, [8 + k // 2 + 16 * (k % 2) for k in range(16)])


@intrinsic
def transpose16_u8(typingctx, src, s_off, s_stride, dst, d_off, d_stride, flip):
    """dst.flat[d_off + j * d_stride + i] = src.flat[s_off + i * s_stride + j] ^ flip for
    i, j < 16: element offsets into C-contiguous uint8 arrays, which the caller keeps in
    bounds (nothing is checked here)."""
    for arr in (src, dst):
        if not (isinstance(arr, types.Array) and arr.dtype == types.uint8 and arr.layout == "C"):
            return None
    sig = types.void(src, s_off, s_stride, dst, d_off, d_stride, flip)

    def codegen(context, builder, signature, args):
        src_v, s_off_v, s_stride_v, dst_v, d_off_v, d_stride_v, flip_v = args
        ptrs = [builder.bitcast(context.make_array(signature.args[i])(context, builder,
                                                                      args[i]).data,
                                _I8.as_pointer()) for i in (0, 3)]
        offs = [context.cast(builder, args[i], signature.args[i], types.int64)
                for i in (1, 2, 4, 5)]
        flip8 = builder.trunc(context.cast(builder, flip_v, signature.args[6], types.int64), _I8)
        fv = builder.insert_element(ir.Constant(_V16, ir.Undefined), flip8, ir.Constant(_I32, 0))
        fv = builder.shuffle_vector(fv, ir.Constant(_V16, ir.Undefined), ir.Constant(_MASK, None))

        def row_ptr(base, off, stride, i):
            p = builder.gep(base, [builder.add(off, builder.mul(stride, ir.Constant(_I64, i)))])
            return builder.bitcast(p, _V16.as_pointer())

        rows = [builder.xor(builder.load(row_ptr(ptrs[0], offs[0], offs[1], i), align=1), fv)
                for i in range(16)]
        for _ in range(4):
            rows = [builder.shuffle_vector(rows[i], rows[i + 8], mask)
                    for i in range(8) for mask in (_LOW, _HIGH)]
        for j in range(16):
            builder.store(rows[j], row_ptr(ptrs[1], offs[2], offs[3], j), align=1)
        return context.get_dummy_value()

    return sig, codegen


def transpose16_u8_ref(src, s_off, s_stride, dst, d_off, d_stride, flip):
    """The same bytes moved by NumPy, on flat views."""
    s, d = src.reshape(-1), dst.reshape(-1)
    block = s[s_off + np.arange(16)[:, None] * s_stride + np.arange(16)[None, :]]
    d[d_off + np.arange(16)[:, None] * d_stride + np.arange(16)[None, :]] = block.T ^ np.uint8(flip)
