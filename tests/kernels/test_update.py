import numpy as np
import pytest

from kernel_data import EXTREMES
from intsr.kernels.update import sgd_update, sgd_update_ref


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("bits", [8, 32])
@pytest.mark.parametrize("g_shift", [-40, -12, 0, 5])
@pytest.mark.parametrize("nearest", [False, True])
def test_sgd_update_bit_exact(fill, kind, bits, g_shift, nearest):
    dt = np.int32 if bits == 32 else np.int8
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    w = fill((27, 16), dt, kind)
    kept = np.array([0, 3, 4, 9, 15])
    g = fill((27, 5), dt, kind)
    out = np.empty((27, 16), np.int64)
    sgd_update(w, g, kept, g_shift, 65535, 20, nearest, lo, hi, out)
    np.testing.assert_array_equal(out, sgd_update_ref(w, g, kept, g_shift, 65535, 20, nearest,
                                                      lo, hi))
    untouched = np.setdiff1d(np.arange(16), kept)
    np.testing.assert_array_equal(out[:, untouched], w[:, untouched])  # Eq. 6: masked columns
