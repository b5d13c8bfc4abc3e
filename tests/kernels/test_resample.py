"""degrade_u8 (Eq. 1 on integers) bit-exact against its plain-loop reference, at the extremes of
uint8 and of the fixed-point taps, including kernels wider than the image (reflect wraps)."""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from intsr.floatpath.convert import KERNEL_BITS, kernel_to_fixed
from intsr.kernels.resample import _cubic, bicubic_coeffs, degrade_u8, degrade_u8_ref


@pytest.mark.parametrize("shape,ksize,scale", [((13, 11, 3), 5, 2), ((9, 10, 1), 15, 4),
                                               ((5, 6, 3), 15, 3), ((16, 16, 3), 4, 4)])
@pytest.mark.parametrize("kind", ["random", "max", "mixed"])
def test_degrade_u8_bit_exact(shape, ksize, scale, kind):
    rng = np.random.default_rng(ksize * scale)
    if kind == "random":
        img = rng.integers(0, 256, shape, dtype=np.uint8)
    elif kind == "max":
        img = np.full(shape, 255, np.uint8)
    else:
        img = rng.choice(np.array([0, 255, 1, 254], np.uint8), shape)
    k = kernel_to_fixed(rng.random((ksize, ksize)) - 0.2)  # negative taps too
    got = degrade_u8(img, k, KERNEL_BITS, scale)
    np.testing.assert_array_equal(got, degrade_u8_ref(img, k, KERNEL_BITS, scale))
    if kind == "max" and (k >= 0).all():
        assert (got == 255).all()  # taps sum to exactly 2**KERNEL_BITS: flat stays flat


def test_degrade_u8_saturates_both_ways():
    """A kernel with strong negative lobes drives outputs past both ends of uint8."""
    k = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float64)
    img = np.random.default_rng(3).choice(np.array([0, 255], np.uint8), (16, 16, 1))
    kq = kernel_to_fixed(k)
    got = degrade_u8(img, kq, KERNEL_BITS, 2)
    np.testing.assert_array_equal(got, degrade_u8_ref(img, kq, KERNEL_BITS, 2))
    assert got.max() == 255 and got.min() == 0


@pytest.mark.parametrize("grid", ["centre", "corner"])
def test_degrade_u8_on_both_grids(grid):
    from intsr.floatpath.degrade import lr_image
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (17, 19, 3), dtype=np.uint8)
    k = rng.random((5, 5))
    kq = kernel_to_fixed(k)
    got = degrade_u8(img, kq, KERNEL_BITS, 4, grid)
    np.testing.assert_array_equal(got, degrade_u8_ref(img, kq, KERNEL_BITS, 4, grid))
    ref = lr_image(img, k / k.sum(), 4, grid)  # the float Eq. 1 on the same grid
    assert got.shape == ref.shape and np.abs(got.astype(int) - ref).max() <= 1
    # corner keeps rows 0, 4, ...; centre keeps 2, 6, ...: the same kernel, other pixels
    delta = np.zeros((5, 5))
    delta[2, 2] = 1
    keep = degrade_u8(img, kernel_to_fixed(delta), KERNEL_BITS, 4, grid)
    off = 0 if grid == "corner" else 2
    np.testing.assert_array_equal(keep, img[off::4, off::4])


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("grid", ["centre", "corner"])
def test_bicubic_follows_the_grid(scale, grid):
    """A linear ramp is reproduced exactly by Keys' cubic (a = -0.5), so inside the image the
    upsampled value of HR pixel j shows where the upsampler puts the LR pixels. On both grids
    it is the same place relative to the HR pixel Eq. 1 kept (``off + s*i``): Pillow's own,
    which for even s sits half an HR pixel before it (what the weights were trained on)."""
    from intsr.floatpath.degrade import bicubic_upsample
    from intsr.kernels.resample import bicubic_upsample_u8, grid_offset
    n = 12
    ramp = (np.arange(n) / (4.0 * n))[None, :] * np.ones((n, 1))
    up = bicubic_upsample(ramp, scale, grid=grid)
    j = np.arange(2 * scale, (n - 3) * scale)
    lr_pos = (j - grid_offset(grid, scale)) / scale + (0.5 / scale if scale % 2 == 0 else 0.0)
    np.testing.assert_allclose(up[5 * scale, j], lr_pos / (4.0 * n), atol=1e-12)
    img = np.random.default_rng(scale).integers(0, 256, (9, 10, 3), dtype=np.uint8)
    ours = bicubic_upsample_u8(img, scale, grid)
    flt = bicubic_upsample(img / 255.0, scale, grid=grid) * 255
    assert np.abs(ours - flt).max() <= 1.5  # two 8-bit roundings, like Pillow's own path


def _pillow_coeffs_row_by_row(in_size, out_size, shift):
    """Pillow's precompute_coeffs for bicubic, each output row derived on its own in exact
    rationals (what bicubic_coeffs computed before it derived each repeating row once)."""
    scale = Fraction(in_size, out_size)
    filterscale = max(scale, Fraction(1))
    support = 2 * filterscale
    starts, taps = [], []
    for xx in range(out_size):
        center = (xx + shift + Fraction(1, 2)) * scale
        xmin = max(int(center - support + Fraction(1, 2)), 0)
        xmax = min(int(center + support + Fraction(1, 2)), in_size) - xmin
        w = [_cubic((x + xmin - center + Fraction(1, 2)) / filterscale) for x in range(xmax)]
        total = sum(w)
        starts.append(xmin)
        taps.append(tuple(t / total for t in w) if total != 0 else tuple(w))
    return tuple(starts), tuple(taps)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 80), st.integers(1, 80), st.integers(-4, 6))
def test_bicubic_coeffs_equal_the_row_by_row_derivation(in_size, out_size, shift):
    """The upsampler's taps (up- and downscaling, any shift, borders included) are the rows
    Pillow derives one by one: the integer window arithmetic and the reuse of a row with the
    same offset and width change no tap."""
    bicubic_coeffs.cache_clear()
    assert bicubic_coeffs(in_size, out_size, shift) == \
        _pillow_coeffs_row_by_row(in_size, out_size, shift)
