import numpy as np
import pytest

from intsr.kernels.dispatch import conv3x3_ref, conv3x3_u8s8
from intsr.kernels.gemm_x8s8 import conv3x3_portable, gemm_x8s8, gemm_x8s8_ref

from kernel_data import EXTREMES


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("xdtype,cin", [(np.int8, 64), (np.uint8, 3), (np.int8, 5)])
@pytest.mark.parametrize("conv", [conv3x3_u8s8, conv3x3_portable])
def test_conv3x3_s32_bit_exact(fill, kind, xdtype, cin, conv):
    x = fill((9, 11, cin), xdtype, kind)
    w = fill((3, 3, cin, 64), np.int8, kind)
    got = conv(x, w)
    ref = conv3x3_ref(x, w)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got.astype(np.int64), ref)


def test_conv3x3_headroom_all_min():
    """576 products of (-128) * (-128) = 2**14 each: 9,437,184, far inside int32 (interior
    pixel), checked against int64 so a wrap would show."""
    x = np.full((3, 3, 64), -128, np.int8)
    w = np.full((3, 3, 64, 64), -128, np.int8)
    assert conv3x3_u8s8(x, w)[1, 1, 0] == 576 * 2 ** 14


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("m,k", [(37, 576), (1, 27), (2, 5), (4, 3)])
def test_gemm_s32_bit_exact(fill, kind, m, k):
    """Shapes of every layer kind, and degenerate ones."""
    a = fill((m, k), np.int8, kind)
    b = fill((k, 13), np.int8, kind)
    out = np.empty((m, 13), np.int32)
    bt = np.ascontiguousarray(b.T)
    gemm_x8s8(a, bt, out)
    np.testing.assert_array_equal(out, gemm_x8s8_ref(a, bt))


def test_conv_in_bands_equals_one_band(fill, monkeypatch):
    import intsr.kernels.im2col as im2col_mod
    x = fill((11, 6, 8), np.int8, "random")
    w = fill((3, 3, 8, 5), np.int8, "random")
    whole = conv3x3_portable(x, w)
    monkeypatch.setattr(im2col_mod, "BAND_BYTES", 6 * 9 * 8 * 3)  # 3 rows a band
    np.testing.assert_array_equal(conv3x3_portable(x, w), whole)
    np.testing.assert_array_equal(whole.astype(np.int64), conv3x3_ref(x, w))
