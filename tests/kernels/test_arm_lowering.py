"""What can be checked on this x86 machine about an ARM port of the VNNI tile
(docs/performance.md, "ARM"): the LLVM that Numba uses lowers the dot-product instructions the
tile would call for an aarch64 target. Nothing here runs ARM code."""
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


@pytest.mark.parametrize("op,features", [("usdot", "+neon,+i8mm"), ("sdot", "+neon,+dotprod"),
                                         ("udot", "+neon,+dotprod")])
def test_llvm_lowers_the_arm_dot_products(op, features):
    """usdot (Armv8.6 I8MM) is vpdpbusd's u8 x s8 -> s32 on 16-byte vectors; sdot / udot
    (Armv8.2 dot product) the same-sign forms."""
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    target = llvm.Target.from_triple("aarch64-unknown-linux-gnu")  # llvmlite wheels carry it
    tm = target.create_target_machine(cpu="generic", features=features)
    module = llvm.parse_assembly(_IR.format(op=op))
    module.verify()
    asm = tm.emit_assembly(module)
    assert f"{op}\tv0.4s, v1.16b, v2.16b" in asm
