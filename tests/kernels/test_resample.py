"""degrade_u8 (Eq. 1 on integers) bit-exact against its plain-loop reference, at the extremes of
uint8 and of the fixed-point taps, including kernels wider than the image (reflect wraps)."""
import numpy as np
import pytest

from intsr.floatpath.convert import KERNEL_BITS, kernel_to_fixed
from intsr.kernels.resample import degrade_u8, degrade_u8_ref


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
