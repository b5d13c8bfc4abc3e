"""Property tests pinning intsr.quant to the paper's Eq. 10-15."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from intsr.quant import QTensor, ceil_log2, dequantize, dynamic_scale, quantize, rescale

# Magnitudes in [1e-30, 1e6] or 0: the float reference itself underflows when one tensor spans
# more than ~1000 binades (subnormals), which no network tensor does.
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_subnormal=False).map(
    lambda v: 0.0 if abs(v) < 1e-30 else v)
scales = st.integers(min_value=-30, max_value=30)


@given(arrays(np.float64, st.integers(1, 40), elements=finite))
def test_eq11_dynamic_scale_is_ceil_log2_of_max(x):
    """Eq. 11: s = ceil(log2(max|X|)); the all-zero tensor gets 0 by definition."""
    m = np.abs(x).max()
    s = dynamic_scale(x)
    if m == 0:
        assert s == 0
    else:
        assert 2.0 ** (s - 1) < m <= 2.0 ** s


def test_eq11_exact_powers_of_two():
    """Eq. 11 at exact powers of two, where a float log2 could round the wrong way."""
    for e in range(-60, 60):
        assert dynamic_scale(np.array([2.0 ** e])) == e
        assert dynamic_scale(np.array([-(2.0 ** e) * 1.000001])) == e + 1


def test_eq11_rejects_nan():
    with pytest.raises(ValueError):
        dynamic_scale(np.array([1.0, np.nan]))


@given(arrays(np.float64, st.integers(1, 40), elements=finite), scales, st.sampled_from([8, 32]))
def test_eq10_eq14_quantize_is_saturated_floor(x, s, bits):
    """Eq. 10 (bits=8) and Eq. 14 (bits=32): v = floor(2**(bits-1) * X / 2**s), saturated."""
    v = quantize(x, s, bits)
    assert v.dtype == (np.int8 if bits == 8 else np.int32)
    ref = np.floor(x * 2.0 ** (bits - 1) / 2.0 ** s)
    lim = 2 ** (bits - 1)
    np.testing.assert_array_equal(v.astype(np.float64), np.clip(ref, -lim, lim - 1))


@given(arrays(np.float64, st.integers(1, 40), elements=finite), st.sampled_from([8, 32]))
def test_eq10_eq11_dynamic_quantization_error_below_one_step(x, bits):
    """Eq. 10 with the Eq. 11 scale: DQ(Q(X)) is within one step below X (floor), and only the
    element equal to 2**s saturates (the documented deviation: 2**(bits-1) does not fit)."""
    s = dynamic_scale(x)
    v = quantize(x, s, bits)
    step = 2.0 ** (s - (bits - 1))
    err = x - dequantize(v, s, bits)
    sat = x >= 2.0 ** s
    # <= rather than <: x - DQ(v) is itself rounded in float64 for tiny negative x.
    assert np.all(err[~sat] >= 0) and np.all(err[~sat] <= step)
    assert np.all(v[sat] == 2 ** (bits - 1) - 1)


def test_eq10_saturation_at_max_and_extremes():
    """Eq. 10: X = 2**s would be 128 (2**31 for Eq. 14); it saturates to 127 (2**31 - 1)."""
    assert quantize(np.array([1.0]), 0, 8)[0] == 127
    assert quantize(np.array([-1.0]), 0, 8)[0] == -128
    assert quantize(np.array([1.0]), 0, 32)[0] == 2 ** 31 - 1
    assert quantize(np.array([1e9, -1e9]), 0, 8).tolist() == [127, -128]


@given(arrays(np.float64, st.integers(1, 40), elements=finite), scales, st.sampled_from([8, 32]))
def test_eq10_nearest_rounding_error_at_most_half_step(x, s, bits):
    """Eq. 10 with round-to-nearest (the engine's training mode): |error| <= step / 2 unless
    saturated."""
    v = quantize(x, s, bits, rounding="nearest")
    step = 2.0 ** (s - (bits - 1))
    lim = 2 ** (bits - 1)
    inside = (x < (lim - 0.5) * step) & (x >= -lim * step)
    assert np.all(np.abs(x - dequantize(v, s, bits))[inside] <= step / 2)


@given(st.integers(-2 ** 31, 2 ** 31 - 1), scales, st.sampled_from([8, 32]))
def test_dequantize_is_exact_inverse_scale(v, s, bits):
    """DQ(v, s) = v * 2**s / 2**(bits-1), and Q(DQ(v, s), s) = v."""
    if bits == 8:
        v = max(-128, min(127, v))
    arr = np.array([v], np.int64)
    x = dequantize(arr, s, bits)
    assert x[0] == v * 2.0 ** s / 2.0 ** (bits - 1)
    assert quantize(x, s, bits)[0] == v


@settings(max_examples=300)
@given(st.data(), st.sampled_from([(32, 32), (8, 8), (32, 8), (8, 32)]),
       scales, scales, st.sampled_from(["floor", "nearest"]))
def test_eq12_eq15_rescale_matches_float_formula(data, bits, s_from, s_to, rounding):
    """Eq. 12 (8 -> 8) and Eq. 15 (32 -> 32): rescale(v) == Q(DQ(v, s_from), s_to), bit for bit,
    computed with integer shifts only."""
    bf, bt = bits
    lo, hi = -(2 ** (bf - 1)), 2 ** (bf - 1) - 1
    vals = data.draw(st.lists(st.integers(lo, hi), min_size=1, max_size=20))
    vals += [lo, hi, 0, -1, 1]
    v = np.array(vals, np.int32 if bf == 32 else np.int8)
    got = rescale(v, s_from, s_to, bf, bt, rounding)
    ref = quantize(dequantize(v, s_from, bf), s_to, bt, rounding)
    assert got.dtype == ref.dtype
    np.testing.assert_array_equal(got, ref)


@given(st.integers(0, 2 ** 62))
def test_ceil_log2_integer(m):
    """The integer form of Eq. 11 used inside the engine."""
    c = ceil_log2(m)
    if m <= 1:
        assert c == 0
    else:
        assert 2 ** (c - 1) < m <= 2 ** c


def test_qtensor_refuses_float_values():
    with pytest.raises(TypeError):
        QTensor(np.zeros(3, np.float32), 0)
    q = QTensor.from_float(np.array([0.5, -0.25]))
    assert q.value.dtype == np.int8 and q.scale == -1
    np.testing.assert_array_equal(q.dequantize(), [0.5 * 127 / 128, -0.25])
