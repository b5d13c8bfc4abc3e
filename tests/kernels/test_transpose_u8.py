"""The byte-block transposes, bit-exact against their NumPy forms. They emit only shufflevector,
so they run on every target; test_dispatch reruns this file and test_igemm_u8s8 (whose packing
test covers the two kernels that call them) compiled for haswell and alderlake."""
import numpy as np
from hypothesis import given, settings, strategies as st
from numba import njit

from intsr.kernels.transpose_u8 import (
    transpose4x16_u8,
    transpose4x16_u8_ref,
    transpose16_u8,
    transpose16_u8_ref,
)

from kernel_data import GARBAGE


@njit(cache=True)
def _call(src, s_off, s_stride, dst, d_off, d_stride, flip):
    transpose16_u8(src, s_off, s_stride, dst, d_off, d_stride, flip)


@njit(cache=True)
def _call4(src, s_off, s_stride, dst, d_off):
    transpose4x16_u8(src, s_off, s_stride, dst, d_off)


@settings(max_examples=200, deadline=None)
@given(st.integers(16, 80), st.integers(16, 80), st.integers(0, 300), st.integers(0, 300),
       st.sampled_from([0, 128, 255]), st.integers(0, 2 ** 32))
def test_transpose16_moves_one_block_exactly(s_stride, d_stride, s_off, d_off, flip, seed):
    """Any strides and offsets: the block lands transposed (and xor-ed with ``flip``), and no
    byte of dst outside it changes."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, 256, s_off + 15 * s_stride + 16 + 5, dtype=np.uint8)
    dst = np.full(d_off + 15 * d_stride + 16 + 5, GARBAGE, np.uint8)
    want = dst.copy()
    transpose16_u8_ref(src, s_off, s_stride, want, d_off, d_stride, flip)
    _call(src, s_off, s_stride, dst, d_off, d_stride, np.uint8(flip))
    np.testing.assert_array_equal(dst, want)


def test_transpose16_of_a_3d_activation_block():
    """The way _pad_x8 calls it: a (H, W, C) activation into (C, H+2, W+2) planes, values drawn
    from 0, 1, 127, 128 and 255."""
    rng = np.random.default_rng(0)
    x = rng.choice(np.array([0, 1, 127, 128, 255], np.uint8), (3, 20, 32))
    xp = np.full((32, 5, 22), GARBAGE, np.uint8)
    plane = 5 * 22
    _call(x, (1 * 20 + 4) * 32 + 16, 32, xp, 16 * plane + 2 * 22 + 5, plane, np.uint8(0))
    np.testing.assert_array_equal(xp[16:32, 2, 5:21], x[1, 4:20, 16:32].T)
    assert (np.delete(xp.reshape(-1), [16 * plane + c * plane + 2 * 22 + 5 + i for c in range(16)
                                       for i in range(16)]) == GARBAGE).all()


@settings(max_examples=200, deadline=None)
@given(st.integers(16, 80), st.integers(0, 300), st.integers(0, 300), st.booleans(),
       st.integers(0, 2 ** 32))
def test_transpose4x16_groups_four_rows_exactly(s_stride, s_off, d_off, signed, seed):
    """Four rows of 16 bytes (int8 gradients or uint8) -> 16 groups of four, and nothing else
    of dst changes."""
    rng = np.random.default_rng(seed)
    dt = np.int8 if signed else np.uint8
    src = rng.integers(0, 256, s_off + 3 * s_stride + 16 + 5).astype(np.uint8).view(dt)
    dst = np.full(d_off + 64 + 5, GARBAGE, dt)
    want = dst.copy()
    transpose4x16_u8_ref(src, s_off, s_stride, want, d_off)
    _call4(src, s_off, s_stride, dst, d_off)
    np.testing.assert_array_equal(dst, want)
