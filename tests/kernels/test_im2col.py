import numpy as np
import pytest

import intsr.kernels.im2col as im2col_mod
from intsr.kernels.im2col import bands, im2col, im2col_3x3_ref

from kernel_data import EXTREMES


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 7, 3), (16, 9, 64)])
def test_im2col_bit_exact(fill, kind, dtype, shape):
    x = fill(shape, dtype, kind)
    got = im2col(x)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, im2col_3x3_ref(x))


def test_bands_cover_the_image_in_order(fill, monkeypatch):
    """Banded im2col (bounded memory) yields exactly the full im2col, band after band."""
    x = fill((13, 7, 5), np.int8, "random")
    monkeypatch.setattr(im2col_mod, "BAND_BYTES", 7 * 9 * 5 * 4)  # 4 rows a band
    parts = list(bands(x))
    assert [y0 for y0, _ in parts] == [0, 4, 8, 12]
    np.testing.assert_array_equal(np.concatenate([c for _, c in parts]), im2col_3x3_ref(x))
