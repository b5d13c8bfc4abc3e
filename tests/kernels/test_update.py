import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from intsr.kernels.update import sgd_update_s32, sgd_update_s32_ref
from intsr.quant import rescale, shift_round

from kernel_data import EXTREMES


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
    sgd_update_s32(w, g, kept, g_shift, 65535, 20, nearest, lo, hi, out)
    np.testing.assert_array_equal(out, sgd_update_s32_ref(w, g, kept, g_shift, 65535, 20, nearest,
                                                      lo, hi))
    untouched = np.setdiff1d(np.arange(16), kept)
    np.testing.assert_array_equal(out[:, untouched], w[:, untouched])  # Eq. 6: masked columns


@settings(max_examples=200, deadline=None)
@given(st.integers(-40, 40), st.integers(-3, 3), st.integers(1 << 15, (1 << 16) - 1),
       st.integers(0, 40), st.booleans(), st.sampled_from([8, 32]), st.integers(0, 2 ** 32))
def test_sgd_update_is_eq15_of_quant_rescale(s_g, s_w, lr_mult, lr_shift, nearest, bits, seed):
    """Eq. 15 (bits 32) / Eq. 12-13 (bits 8) as quant states them: line 1 is
    ``rescale(grad, s_grad, s_theta)``, line 2 the product with lr = mult * 2**-shift, rounded
    like line 1; the kernel's update is the master weight minus that, on kept columns only."""
    rng = np.random.default_rng(seed)
    dt = np.int32 if bits == 32 else np.int8
    info = np.iinfo(dt)
    w = rng.integers(info.min, int(info.max) + 1, (6, 5), dtype=dt)
    kept = np.array([0, 2, 3])
    g = rng.integers(info.min, int(info.max) + 1, (6, 3), dtype=dt)
    rounding = "nearest" if nearest else "floor"
    out = np.empty((6, 5), np.int64)
    sgd_update_s32(w, g, kept, s_g - s_w, lr_mult, lr_shift, nearest, int(info.min),
                   int(info.max), out)
    line1 = rescale(g, s_g, s_w, bits, bits, rounding).astype(np.int64)
    line2 = shift_round(line1 * lr_mult, -lr_shift, rounding)
    want = w.astype(np.int64)
    want[:, kept] -= line2
    np.testing.assert_array_equal(out, want)
