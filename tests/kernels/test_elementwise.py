import numpy as np
import pytest

from kernel_data import EXTREMES
from intsr.kernels.elementwise import (GATE_MASK, GATE_NONE, GATE_RELU, gather_channels, l1_grad,
                                       max_abs_gated, requant_8bit, requant_8bit_ref, residual_add,
                                       to_u8)


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("mode", [GATE_NONE, GATE_RELU, GATE_MASK])
@pytest.mark.parametrize("shift", [-30, -17, -8, -1, 0, 3])
@pytest.mark.parametrize("nearest", [False, True])
@pytest.mark.parametrize("lo,hi,dt", [(-128, 127, np.int8), (0, 255, np.uint8)])
def test_requant_8bit_bit_exact(fill, kind, mode, shift, nearest, lo, hi, dt):
    acc = fill((23, 19), np.int32, kind) >> 4  # keep the left-shift case meaningful
    gate = fill((23, 19), np.int8, "random")
    out = np.empty(acc.shape, dt)
    requant_8bit(acc, gate, mode, shift, nearest, lo, hi, out)
    np.testing.assert_array_equal(out, requant_8bit_ref(acc, gate, mode, shift, nearest, lo, hi))
    m = max_abs_gated(acc, gate, mode)
    a = acc.astype(np.int64)
    if mode == GATE_RELU:
        a = np.maximum(a, 0)
    elif mode == GATE_MASK:
        a = np.where(gate > 0, a, 0)
    assert m == np.abs(a).max()


def test_requant_rounding_ties_and_saturation():
    acc = np.array([[-3, -2, -1, 1, 2, 3, 255, -256, 2 ** 30, -(2 ** 31)]], np.int32)
    g = np.zeros_like(acc, np.int8)
    out = np.empty(acc.shape, np.int8)
    requant_8bit(acc, g, GATE_NONE, -1, True, -128, 127, out)   # x / 2 rounded half up
    assert out.tolist() == [[-1, -1, 0, 1, 1, 2, 127, -128, 127, -128]]
    requant_8bit(acc, g, GATE_NONE, -1, False, -128, 127, out)  # floor
    assert out.tolist() == [[-2, -1, -1, 0, 1, 1, 127, -128, 127, -128]]
    u = np.empty(acc.shape, np.uint8)
    requant_8bit(acc, g, GATE_RELU, -1, True, 0, 255, u)  # uint8 post-ReLU store
    assert u.tolist() == [[0, 0, 0, 1, 1, 2, 128, 0, 255, 0]]


def test_residual_and_l1_exact(fill):
    inp = fill((50, 3), np.uint8, "random")
    acc = fill((50, 3), np.int32, "random") >> 8
    tgt = fill((50, 3), np.uint8, "random")
    out = np.empty((50, 3), np.int64)
    residual_add(inp, acc, 12, 0, out)
    ref = (inp.astype(np.int64) << 12) + acc
    np.testing.assert_array_equal(out, ref)
    grad = np.empty((50, 3), np.int8)
    total = l1_grad(out, tgt, 12, grad)
    d = ref - (tgt.astype(np.int64) << 12)
    assert total == np.abs(d).sum()
    np.testing.assert_array_equal(grad, np.sign(d))
    pix = np.empty((50, 3), np.uint8)
    to_u8(out, -12, pix)
    np.testing.assert_array_equal(pix, np.clip((ref + 2048) >> 12, 0, 255))


@pytest.mark.parametrize("dt", [np.int8, np.uint8])
def test_gather_channels_is_fancy_indexing(fill, dt):
    x = fill((37, 64), dt, "mixed")
    idx = np.array([0, 3, 4, 17, 63], np.int64)
    out = np.empty((37, idx.size), dt)
    gather_channels(x, idx, out)
    np.testing.assert_array_equal(out, x[:, idx])
