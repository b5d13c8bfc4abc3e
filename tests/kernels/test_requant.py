"""requant_s32, requant_relu_pad_u8 (and its grouped form), max_abs_s32 and
channel_max_relu_s32 against their NumPy references, at the extremes of int32."""
import numpy as np
import pytest

from intsr.kernels.requant import (
    GATE_MASK,
    GATE_NONE,
    GATE_RELU,
    channel_max_relu_s32,
    max_abs_s32,
    max_abs_s32_ref,
    requant_relu_pad_u8,
    requant_relu_pad_u8_grouped,
    requant_relu_pad_u8_ref,
    requant_s32,
    requant_s32_ref,
)

from kernel_data import EXTREMES


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("mode", [GATE_NONE, GATE_RELU, GATE_MASK])
@pytest.mark.parametrize("shift", [-30, -17, -8, -1, 0, 3])
@pytest.mark.parametrize("nearest", [False, True])
@pytest.mark.parametrize("lo,hi,dt", [(-128, 127, np.int8), (0, 255, np.uint8)])
def test_requant_s32_bit_exact(fill, kind, mode, shift, nearest, lo, hi, dt):
    acc = fill((23, 19), np.int32, kind) >> 4  # keep the left-shift case meaningful
    gate = fill((23, 19), np.int8, "random")
    out = np.empty(acc.shape, dt)
    requant_s32(acc, gate, mode, shift, nearest, lo, hi, out)
    np.testing.assert_array_equal(out, requant_s32_ref(acc, gate, mode, shift, nearest, lo, hi))
    assert max_abs_s32(acc, gate, mode) == max_abs_s32_ref(acc, gate, mode)


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("shift", [-30, -8, -1, 0, 3])
@pytest.mark.parametrize("nearest", [False, True])
@pytest.mark.parametrize("hi", [127, 255])
@pytest.mark.parametrize("c,c4", [(3, 4), (5, 8), (64, 64)])
def test_requant_relu_pad_u8_bit_exact(fill, kind, shift, nearest, hi, c, c4):
    """The fused ReLU requantization writes requant_s32's bytes into the padded interior and
    zero everywhere else (xp starts as garbage: every byte must be written)."""
    h, width = 7, 5
    acc = fill((h * width, c), np.int32, kind) >> 4
    xp = np.full((h + 2, width + 2, c4), 0xAB, np.uint8)
    requant_relu_pad_u8(acc, width, shift, nearest, hi, xp)
    np.testing.assert_array_equal(xp, requant_relu_pad_u8_ref(acc, width, shift, nearest, hi,
                                                              c4))
    lo = -128 if hi == 127 else 0
    want = requant_s32_ref(acc, None, GATE_RELU, shift, nearest, lo, hi)
    np.testing.assert_array_equal(xp[1:-1, 1:-1, :c].reshape(-1, c), want.view(np.uint8))


def test_requant_rounding_ties_and_saturation():
    acc = np.array([[-3, -2, -1, 1, 2, 3, 255, -256, 2 ** 30, -(2 ** 31)]], np.int32)
    g = np.zeros_like(acc, np.int8)
    out = np.empty(acc.shape, np.int8)
    requant_s32(acc, g, GATE_NONE, -1, True, -128, 127, out)   # x / 2 rounded half up
    assert out.tolist() == [[-1, -1, 0, 1, 1, 2, 127, -128, 127, -128]]
    requant_s32(acc, g, GATE_NONE, -1, False, -128, 127, out)  # floor
    assert out.tolist() == [[-2, -1, -1, 0, 1, 1, 127, -128, 127, -128]]
    u = np.empty(acc.shape, np.uint8)
    requant_s32(acc, g, GATE_RELU, -1, True, 0, 255, u)  # uint8 post-ReLU store
    assert u.tolist() == [[0, 0, 0, 1, 1, 2, 128, 0, 255, 0]]


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("nearest", [False, True])
@pytest.mark.parametrize("hi", [127, 255])
def test_requant_relu_pad_u8_grouped_bit_exact(fill, kind, nearest, hi):
    """A shift per channel (both signs, to the +-31 it takes) gives, channel by channel,
    requant_relu_pad_u8's bytes at that channel's shift (int64 there, uint32 here: the
    extremes of int32 meet the largest shifts); garbage never survives."""
    h, width, c = 5, 7, 16
    acc = fill((h * width, c), np.int32, kind)
    both = np.array([-31, -30, -17, -9, -8, -5, -1, 0, 1, 3, 31, -3, 0, 24, 8, -24], np.int64)
    for shift in (both, -np.abs(both)):  # left shifts somewhere, or none (its own loop)
        xp = np.full((h + 2, width + 2, c), 0xAB, np.uint8)
        requant_relu_pad_u8_grouped(acc, width, shift, nearest, hi, xp)
        for j in range(c):
            want = requant_relu_pad_u8_ref(acc[:, j:j + 1], width, int(shift[j]), nearest, hi,
                                           1)
            np.testing.assert_array_equal(xp[..., j], want[..., 0])
    with pytest.raises(ValueError, match="31"):
        requant_relu_pad_u8_grouped(acc, width, both - 1, nearest, hi, xp)


@pytest.mark.parametrize("kind", EXTREMES)
def test_channel_max_relu_s32(fill, kind):
    acc = fill((700, 24), np.int32, kind)  # several 256-row blocks and a partial one
    out = np.full(24, -5, np.int64)
    channel_max_relu_s32(acc, out)
    np.testing.assert_array_equal(out, np.maximum(acc.astype(np.int64).max(0), 0))
