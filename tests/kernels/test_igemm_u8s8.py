"""The AVX-512 VNNI implicit-GEMM kernels, bit-exact against the plain int64 references.

These kernels only exist where the CPU has AVX512-VNNI; elsewhere the portable kernels (tested
in test_conv.py / test_backward.py) are the engine, so on such a CPU there is nothing to run."""
import numpy as np
import pytest

from kernel_data import EXTREMES
from intsr.kernels import igemm_u8s8
from intsr.kernels.dispatch import PATH, conv3x3_ref
from intsr.kernels.gemm_x8s8 import wgrad_x8s8_ref
from intsr.kernels.im2col import im2col

pytestmark = pytest.mark.skipif(not PATH == "vnni", reason="CPU without AVX512-VNNI")

# (H, W, C_in, C_out): the net's layers, widths that are not a multiple of the 4-pixel tile,
# channel counts that are not multiples of 4 (padding) or 16 (partial register blocks).
SHAPES = [(9, 11, 64, 64), (5, 8, 3, 64), (7, 5, 5, 3), (6, 13, 64, 3), (5, 6, 24, 40),
          (1, 1, 8, 16), (3, 2, 1, 1)]


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("xdtype", [np.int8, np.uint8])
@pytest.mark.parametrize("shape", SHAPES)
def test_conv3x3_bit_exact(fill, kind, xdtype, shape):
    h, w, c, n = shape
    x = fill((h, w, c), xdtype, kind)
    wt = fill((3, 3, c, n), np.int8, kind)
    got = igemm_u8s8.conv3x3(x, wt)
    assert got.dtype == np.int32 and got.shape == (h, w, n)
    np.testing.assert_array_equal(got.astype(np.int64), conv3x3_ref(x, wt))


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("xdtype", [np.int8, np.uint8])
@pytest.mark.parametrize("shape", SHAPES)
def test_wgrad3x3_bit_exact(fill, kind, xdtype, shape):
    h, w, c, n = shape
    x = fill((h, w, c), xdtype, kind)
    g = fill((h, w, n), np.int8, kind)
    got = igemm_u8s8.wgrad3x3(x, g)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, wgrad_x8s8_ref(im2col(x), g.reshape(-1, n)))


@pytest.mark.parametrize("xdtype,val", [(np.int8, -128), (np.uint8, 255)])
def test_wgrad3x3_chunks_past_int32(xdtype, val):
    """More pixels than one int32 accumulator holds at the extremes (400 x 400 products of
    -128 * -128 or 255 * -128 exceed 2**31): the chunked int32 sums widened to int64 stay
    exact."""
    h = w = 400
    x = np.full((h, w, 4), val, xdtype)
    g = np.full((h, w, 16), -128, np.int8)
    got = igemm_u8s8.wgrad3x3(x, g)
    center = got[4 * 4]  # tap (1, 1): every pixel contributes
    assert abs(h * w * int(val) * -128) > 2 ** 31
    assert (center == h * w * int(val) * -128).all()
    np.testing.assert_array_equal(got, wgrad_x8s8_ref(im2col(x), g.reshape(-1, 16)))


def test_small_chunks_equal_one_chunk(fill, monkeypatch):
    x = fill((9, 11, 8), np.uint8, "random")
    g = fill((9, 11, 16), np.int8, "random")
    whole = igemm_u8s8.wgrad3x3(x, g)
    monkeypatch.setattr(igemm_u8s8, "WGRAD_CHUNK", 16)  # one row of 12 padded pixels a chunk
    np.testing.assert_array_equal(igemm_u8s8.wgrad3x3(x, g), whole)


def test_too_many_output_channels():
    with pytest.raises(ValueError):
        igemm_u8s8.conv3x3(np.zeros((2, 2, 4), np.uint8), np.zeros((3, 3, 4, 65), np.int8))


def test_kernel_is_vnni():
    """The register tile really compiles to vpdpbusd on 512-bit registers (a fresh, uncached
    function: Numba cannot show the assembly of cached code)."""
    from numba import njit

    @njit
    def tile(a, segs, b, out):
        igemm_u8s8._tile(a, 0, 4, segs, 1, b, 256, out, 0, 64, 4, 8)

    a = np.arange(16, dtype=np.uint8)
    b = np.ones(256, np.int8)
    out = np.zeros(256, np.int32)
    tile(a, np.zeros(1, np.int64), b, out)
    # row r, any column: one group of four bytes a[4r:4r+4] times ones
    np.testing.assert_array_equal(out.reshape(4, 64)[:, 0], a.reshape(4, 4).sum(axis=1))
    asm = "".join(tile.inspect_asm().values())
    assert "vpdpbusd" in asm and "zmm" in asm
