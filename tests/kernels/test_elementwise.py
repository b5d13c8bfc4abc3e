import numpy as np

from intsr.kernels.elementwise import (
    l1_grad_s64,
    l1_grad_s64_ref,
    pixels_s64,
    pixels_s64_ref,
    residual_add_u8s32,
    residual_add_u8s32_ref,
)


def test_residual_and_l1_exact(fill):
    inp = fill((50, 3), np.uint8, "random")
    acc = fill((50, 3), np.int32, "random") >> 8
    tgt = fill((50, 3), np.uint8, "random")
    out = np.empty((50, 3), np.int64)
    residual_add_u8s32(inp, acc, 12, 0, out)
    ref = (inp.astype(np.int64) << 12) + acc
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(out, residual_add_u8s32_ref(inp, acc, 12, 0))
    grad = np.empty((50, 3), np.int8)
    total = l1_grad_s64(out, tgt, 12, grad)
    d = ref - (tgt.astype(np.int64) << 12)
    assert total == np.abs(d).sum()
    np.testing.assert_array_equal(grad, np.sign(d))
    assert (total, grad.tolist()) == (l1_grad_s64_ref(out, tgt, 12)[0],
                                      l1_grad_s64_ref(out, tgt, 12)[1].tolist())
    pix = np.empty((50, 3), np.uint8)
    pixels_s64(out, -12, pix)
    np.testing.assert_array_equal(pix, np.clip((ref + 2048) >> 12, 0, 255))
    np.testing.assert_array_equal(pix, pixels_s64_ref(out, -12))


def test_residual_headroom_at_the_extremes():
    """The largest shifts IntNet.forward allows (54 on the image, 31 on the accumulator) on the
    largest operands stay exact in int64: checked against Python integers."""
    inp = np.array([[255, 0, 255]], np.uint8)
    acc = np.array([[2 ** 31 - 1, -2 ** 31, -2 ** 31]], np.int32)
    for sh_i, sh_a in ((54, 0), (0, 31)):
        out = np.empty((1, 3), np.int64)
        residual_add_u8s32(inp, acc, sh_i, sh_a, out)
        assert out.tolist()[0] == [(int(a) << sh_i) + (int(b) << sh_a)
                                   for a, b in zip(inp[0], acc[0], strict=True)]
