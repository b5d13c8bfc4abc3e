"""What can be checked on this x86 machine about an ARM port of the VNNI tile
(docs/performance.md, "ARM"): the LLVM that Numba uses lowers the dot-product instructions the
tile would call, and the byte interleaves of the operand transposes, for an aarch64 target.
Nothing here runs ARM code."""
import re

import llvmlite.binding as llvm
import pytest

_IR = """
target triple = "aarch64-unknown-linux-gnu"
declare <4 x i32> @llvm.aarch64.neon.{op}.v4i32.v16i8(<4 x i32>, <16 x i8>, <16 x i8>)
define <4 x i32> @tile(<4 x i32> %acc, <16 x i8> %a, <16 x i8> %b) {{
  %r = call <4 x i32> @llvm.aarch64.neon.{op}.v4i32.v16i8(<4 x i32> %acc, <16 x i8> %a,
                                                          <16 x i8> %b)
  ret <4 x i32> %r
}}
"""


def _aarch64_asm(ir_text, features):
    """The assembly LLVM (as in Numba's llvmlite) emits for an aarch64 module."""
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    target = llvm.Target.from_triple("aarch64-unknown-linux-gnu")  # llvmlite wheels carry it
    module = llvm.parse_assembly(ir_text)
    module.verify()
    return target.create_target_machine(cpu="generic", features=features).emit_assembly(module)


@pytest.mark.parametrize("op,features", [("usdot", "+neon,+i8mm"), ("sdot", "+neon,+dotprod"),
                                         ("udot", "+neon,+dotprod")])
def test_llvm_lowers_the_arm_dot_products(op, features):
    """usdot (Armv8.6 I8MM) is vpdpbusd's u8 x s8 -> s32 on 16-byte vectors; sdot / udot
    (Armv8.2 dot product) the same-sign forms."""
    asm = _aarch64_asm(_IR.format(op=op), features)
    assert f"{op}\tv0.4s, v1.16b, v2.16b" in asm


def test_llvm_lowers_the_byte_interleaves_of_the_transposes_to_zip():
    """kernels/transpose_u8.py's shuffles (byte interleaves, then byte-pair interleaves) become
    Arm's zip1 / zip2 on 16-byte vectors: the transposes need nothing target-specific. (The
    results are combined by xor so that LLVM cannot fold them into interleaving stores.)"""
    from llvmlite import ir

    from intsr.kernels.transpose_u8 import _BYTES, _PAIRS, _V8H, _V16B
    module = ir.Module()
    module.triple = "aarch64-unknown-linux-gnu"
    fn = ir.Function(module, ir.FunctionType(_V16B, [_V16B, _V16B]), "interleave")
    b = ir.IRBuilder(fn.append_basic_block())
    x, y = fn.args
    t = b.bitcast(b.xor(*[b.shuffle_vector(x, y, m) for m in _BYTES]), _V8H)
    u = b.xor(*[b.shuffle_vector(t, b.bitcast(y, _V8H), m) for m in _PAIRS])
    b.ret(b.bitcast(u, _V16B))
    asm = _aarch64_asm(str(module), "+neon")
    for op, lanes in (("zip1", "16b"), ("zip2", "16b"), ("zip1", "8h"), ("zip2", "8h")):
        assert re.search(rf"{op}\tv\d+\.{lanes}, v\d+\.{lanes}, v\d+\.{lanes}", asm), asm
    assert "tbl" not in asm  # no table lookup: each shuffle is one instruction
