"""16-bit operands by byte planes (kernels/planes_x16.py), through the front door
(kernels/dispatch.py's width-generic conv3x3, agrad3x3, wgrad3x3): bit-exact against the int64
references for every dtype pair, at the extremes of each dtype, on this target's path and on
the portable one (where every 16-bit product runs as separate plane calls)."""
import numpy as np
import pytest

from intsr.kernels import dispatch
from intsr.kernels.dispatch import (
    agrad3x3,
    agrad_weights,
    conv3x3,
    conv3x3_ref,
    wgrad3x3,
    wgrad3x3_ref,
)
from intsr.kernels.planes_x16 import (
    W16_NARROW_MAX,
    add_shifted_s64,
    add_shifted_s64_ref,
    box_sum_x8,
    tap_sums_x8,
)
from intsr.kernels.requant import GATE_RELU, max_abs_s32_ref

from kernel_data import EXTREMES


@pytest.fixture(params=["target", "portable"])
def path(request, monkeypatch):
    if request.param == "portable":
        monkeypatch.setattr(dispatch, "PATH", "portable")
    return request.param


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("xdtype", [np.uint8, np.int8, np.uint16, np.int16])
@pytest.mark.parametrize("wdtype", [np.int8, np.int16])
def test_conv3x3_x16_bit_exact(fill, kind, xdtype, wdtype, path):
    x = fill((7, 9, 64), xdtype, kind)
    w = fill((3, 3, 64, 24), wdtype, kind)
    got = conv3x3(x, w)
    # int32 where the result is bounded below 2**31: both 8-bit, or 16-bit data on the tile
    # with int8 weights small enough (igemm_u8s8.fits_s32_x16)
    s32 = wdtype == np.int8 and (x.itemsize == 1 or dispatch.PATH != "portable"
                                 and dispatch.igemm_u8s8.fits_s32_x16(x, w))
    assert got.dtype == (np.int32 if s32 else np.int64)
    np.testing.assert_array_equal(got.astype(np.int64), conv3x3_ref(x, w))
    # with Eq. 11's maximum: the same output, and the maximum where a kernel took it (None
    # where separate plane calls leave it to the requantization)
    out, m = conv3x3(x, w, GATE_RELU)
    np.testing.assert_array_equal(out, got)
    assert m is None or m == max_abs_s32_ref(out.reshape(63, 24), None, GATE_RELU)
    assert (m is None) == (wdtype == np.int16 or x.itemsize == 2 and dispatch.PATH == "portable")


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("xdtype", [np.uint8, np.int8])
@pytest.mark.parametrize("c", [3, W16_NARROW_MAX, W16_NARROW_MAX + 1])
def test_conv3x3_of_8_bit_data_and_16_bit_weights_over_few_channels(fill, kind, xdtype, c,
                                                                    path):
    """The first layer's case (8-bit image, int16 weights, 3 channels; a uint8 image on a tile
    in one Horner pass, conv3x3_w16): int32 up to W16_NARROW_MAX input channels, exact at the
    extremes (all 255 against all -32768 reaches
    -9 * 28 * 255 * 32768, just above -2**31), and int64 above it."""
    x = fill((6, 7, c), xdtype, kind)
    w = fill((3, 3, c, 16), np.int16, kind)
    got = conv3x3(x, w)
    assert got.dtype == (np.int32 if c <= W16_NARROW_MAX else np.int64)
    np.testing.assert_array_equal(got, conv3x3_ref(x, w))
    out, m = conv3x3(x, w, GATE_RELU)
    np.testing.assert_array_equal(out, got)
    if xdtype == np.uint8 and c <= W16_NARROW_MAX and dispatch.PATH != "portable":
        assert m == max(0, int(got.max()))  # the Horner tile (conv3x3_w16) takes Eq. 11's
    else:
        assert m is None
    if c == W16_NARROW_MAX and kind == "max":  # the corner: every pixel 255, every weight
        corner = conv3x3(np.full((3, 3, c), 255, np.uint8), np.full((3, 3, c, 1), -32768,
                                                                    np.int16))
        assert corner.dtype == np.int32 and int(corner[1, 1, 0]) == -9 * c * 255 * 32768


def test_conv3x3_x16_headroom_at_the_corners():
    """The largest magnitude any pair can reach: 576 products of 65535 * (-32768) and of
    (-32768) * (-32768), checked exactly (int64 reference; an int32 partial would wrap)."""
    for x, w in (((65535, np.uint16), (-32768, np.int16)),
                 ((-32768, np.int16), (-32768, np.int16))):
        xa = np.full((3, 3, 64), x[0], x[1])
        wa = np.full((3, 3, 64, 2), w[0], w[1])
        assert conv3x3(xa, wa)[1, 1, 0] == 576 * x[0] * w[0]


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("gdtype,wdtype", [(np.int8, np.int16), (np.int16, np.int8),
                                           (np.int16, np.int16)])
def test_agrad3x3_x16_bit_exact(fill, kind, gdtype, wdtype, path):
    g = fill((6, 5, 16), gdtype, kind)
    w = fill((3, 3, 24, 32), wdtype, kind)
    kin, kout = np.arange(0, 24, 2), np.arange(0, 32, 2)
    np.testing.assert_array_equal(agrad3x3(g, w, kin, kout),
                                  conv3x3_ref(g, agrad_weights(w, kin, kout)))


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("xdtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("gdtype", [np.int8, np.int16])
def test_wgrad3x3_x16_bit_exact(fill, kind, xdtype, gdtype, path):
    x = fill((9, 7, 16), xdtype, kind)
    g = fill((9, 7, 5), gdtype, kind)
    got = wgrad3x3(x, g)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, wgrad3x3_ref(x, g))


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("xdtype", [np.uint8, np.int8])
def test_box_and_tap_sums_are_the_all_ones_products(fill, kind, xdtype):
    """box_sum_x8 = x (*) an all-ones 3x3 filter with one output channel, tap_sums_x8 = the
    weight gradient of x against an all-ones gradient: the int64 references, exactly."""
    x = fill((6, 9, 64), xdtype, kind)
    box = np.empty((6 * 9, 1), np.int64)
    box_sum_x8(x, box)
    np.testing.assert_array_equal(box, conv3x3_ref(x, np.ones((3, 3, 64, 1), np.int8))
                                  .reshape(-1, 1))
    taps = np.empty((9 * 64, 1), np.int64)
    tap_sums_x8(x, taps)
    np.testing.assert_array_equal(taps, wgrad3x3_ref(x, np.ones((6, 9, 1), np.int8)))


@pytest.mark.parametrize("pdtype,cols", [(np.int32, 5), (np.int64, 5), (np.int32, 1)])
@pytest.mark.parametrize("first", [True, False])
def test_add_shifted_s64_matches_its_reference(fill, pdtype, cols, first):
    """In-place shifted add (broadcast of a one-column part included) at the largest shift the
    planes use, 16, on int32's extremes (partials never exceed them; int64 parts hold them)."""
    out = fill((7, 5), np.int32, "mixed").astype(np.int64)
    part = fill((7, cols), np.int32, "mixed").astype(pdtype)
    want = add_shifted_s64_ref(out, part, 16, first)
    add_shifted_s64(out, part, 16, first)
    np.testing.assert_array_equal(out, want)
