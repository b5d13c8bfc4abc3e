import numpy as np
import pytest

from kernel_data import EXTREMES
from intsr.kernels.im2col import im2col, im2col_3x3_ref


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 7, 3), (16, 9, 64)])
def test_im2col_bit_exact(fill, kind, dtype, shape):
    x = fill(shape, dtype, kind)
    got = im2col(x)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, im2col_3x3_ref(x))
