"""kernels/fixedpoint.py: the one rounding shift and the one saturation the kernels use agree
with quant.shift_round / quant.saturate, the NumPy statements of Eq. 10-15's rounding."""
import numpy as np
from hypothesis import given, settings, strategies as st
from numba import njit

from intsr import quant
from intsr.kernels.fixedpoint import saturate, shift_round


@njit
def _apply(v, shift, nearest, lo, hi):
    out = np.empty(v.shape[0], np.int64)
    for i in range(v.shape[0]):
        out[i] = saturate(shift_round(v[i], shift, nearest), lo, hi)
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-2 ** 40, 2 ** 40), min_size=1, max_size=20),
       st.integers(-70, 20), st.booleans(), st.sampled_from([8, 32]))
def test_shift_round_saturate_match_quant_eq10_eq15(values, shift, nearest, bits):
    """Eq. 10 / 15 rounding: floor or round half up of v * 2**shift, then saturation."""
    v = np.array(values, np.int64)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    got = _apply(v, shift, nearest, lo, hi)
    want = quant.saturate(quant.shift_round(v, shift, "nearest" if nearest else "floor"), bits)
    np.testing.assert_array_equal(got, want.astype(np.int64))


def test_ties_round_up_and_floor_goes_down():
    v = np.array([-3, -2, -1, 1, 2, 3, 2 ** 62 - 1, -2 ** 62], np.int64)
    big = 2 ** 62
    assert _apply(v, -1, True, -big, big).tolist() == [-1, -1, 0, 1, 1, 2, 2 ** 61, -2 ** 61]
    assert _apply(v, -1, False, -big, big).tolist() == [-2, -1, -1, 0, 1, 1, 2 ** 61 - 1,
                                                        -2 ** 61]
    # Shifts past 62 bits are capped: every value below 2**62 floors to 0 or -1.
    assert _apply(v, -90, False, -big, big).tolist() == [-1, -1, -1, 0, 0, 0, 0, -1]
