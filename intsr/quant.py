"""Eq. 10-15: power-of-two quantization, its inverse, and rescaling between scales.

A real tensor X is held as an integer value tensor v and one integer scale s (Section V-B):
``X ~= v * 2**(s - (bits - 1))`` for signed values (``bits`` = 8, 16 or 32). Unsigned values
(images entering the network, post-ReLU activations) read ``v * 2**(s - bits)``.

Rounding of every primitive, in one sentence each:

- ``floor``    : the paper's ``floor``; biased by -1/2 step on average. The default of the four
  public functions, because that is what Eq. 10, 12, 14 and 15 print.
- ``nearest``  : ``floor(y + 1/2)``, i.e. round half up (towards +inf); unbiased except at ties.
  What the engine trains with (docs/integer-semantics.md has the measured effect of each).

Saturation: results are clipped to ``[-2**(bits-1), 2**(bits-1) - 1]``. The paper does not
saturate, but with ``s = ceil(log2(max|X|))`` the element equal to ``2**s`` maps to ``2**(bits-1)``
(128 for int8), which does not fit; it becomes 127 (or ``2**31 - 1``). That is the only element
that can saturate under a dynamic scale.

Conversions of float arrays (``quantize``, ``dequantize``, ``dynamic_scale``) are for the
boundaries (weight import, tests). Inside the engine, scales are computed from integers with
``ceil_log2`` and values move between scales with ``rescale``/``shift_round``: integer shifts only.
"""
import numpy as np

ROUNDINGS = ("floor", "nearest")


def _check_rounding(rounding):
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, not {rounding!r}")


def _int_dtype(bits):
    dtypes = {8: np.int8, 16: np.int16, 32: np.int32}
    if bits not in dtypes:
        raise ValueError(f"bits must be 8, 16 or 32, not {bits}")
    return dtypes[bits]


def ceil_log2(m):
    """Exact ``ceil(log2(m))`` of a positive Python/NumPy integer; 0 for m <= 1."""
    m = int(m)
    return 0 if m <= 1 else (m - 1).bit_length()


def dynamic_scale(x):
    """Eq. 11: ``s = ceil(log2(max|x|))``, computed exactly (frexp, no log).

    For an all-zero tensor any scale represents it exactly; we return 0 so that later shifts
    stay small. Raises ValueError for NaN or infinite input."""
    x = np.asarray(x, np.float64)
    if x.size == 0:
        return 0
    m = float(np.max(np.abs(x)))
    if not np.isfinite(m):
        raise ValueError("cannot quantize a tensor containing NaN or inf")
    if m == 0.0:
        return 0
    mant, exp = np.frexp(m)  # m = mant * 2**exp, mant in [0.5, 1)
    return int(exp) if mant > 0.5 else int(exp) - 1


def quantize(x, s, bits=8, rounding="floor"):
    """Eq. 10 (bits=8, int8 result) and Eq. 14 (bits=32, int32 result):
    ``floor(2**(bits-1) * x / 2**s)``, saturated to the signed range (see module docstring).

    Multiplying by a power of two is exact in float64, so the only rounding is the one named."""
    _check_rounding(rounding)
    dtype = _int_dtype(bits)
    y = np.ldexp(np.asarray(x, np.float64), bits - 1 - int(s))  # no overflow of 2**-s alone
    y = np.floor(y + 0.5) if rounding == "nearest" else np.floor(y)
    info = np.iinfo(dtype)
    return np.clip(y, info.min, info.max).astype(dtype)


def dequantize(v, s, bits=8):
    """Inverse of Eq. 10 / Eq. 14: ``v * 2**s / 2**(bits-1)`` as float64 (exact)."""
    return np.ldexp(np.asarray(v, np.float64), int(s) - (bits - 1))


def shift_round(v, shift, rounding="nearest"):
    """``v * 2**shift`` for an int64 array, exact for shift >= 0 (caller guarantees headroom),
    rounded as named for shift < 0 (arithmetic right shift is floor)."""
    v = np.asarray(v, np.int64)
    if shift >= 0:
        return v << np.int64(shift)
    n = min(-shift, 62)  # beyond 62 bits every |v| < 2**62 floors to 0 or -1 anyway
    if rounding == "nearest":
        return (v + np.int64(1 << (n - 1))) >> np.int64(n)
    return v >> np.int64(n)


def saturate(v, bits):
    """Clip an integer array to the signed ``bits`` range and cast."""
    dtype = _int_dtype(bits)
    info = np.iinfo(dtype)
    return np.clip(v, info.min, info.max).astype(dtype)


def rescale(v, s_from, s_to, bits_from=32, bits_to=32, rounding="floor"):
    """Eq. 12 (8 -> 8 bits) and Eq. 15 (32 -> 32 bits): ``Q(DQ(v, s_from), s_to)``.

    Integer shifts only: ``v * 2**((s_to' ) ...)`` with the net shift
    ``(s_from - (bits_from-1)) - (s_to - (bits_to-1))``; bit-identical to the float formula with
    the same rounding, then saturated to ``bits_to``."""
    _check_rounding(rounding)
    v = np.asarray(v, np.int64)
    shift = (int(s_from) - (bits_from - 1)) - (int(s_to) - (bits_to - 1))
    if shift >= 0:
        # |v| < 2**31: any shift beyond 32 saturates every non-zero element.
        shifted = v << np.int64(min(shift, 32))
    else:
        shifted = shift_round(v, shift, rounding)
    return saturate(shifted, bits_to)


class QTensor:
    """An integer tensor with one power-of-two scale (Section V-B).

    ``value``: int8 (activations, gradients, forward weights), int32 (master weights, Eq. 14),
    uint8 (images entering the network, post-ReLU activations), or their 16-bit widths (int16,
    uint16: the multi-precision profiles, intsr.precision). ``scale``: a Python int. Real value:
    ``value * 2**exp`` with ``exp = scale - frac_bits``: all bits are fraction for unsigned
    values, all but the sign for signed ones."""

    __slots__ = ("value", "scale")
    DTYPES = (np.int8, np.uint8, np.int16, np.uint16, np.int32)

    def __init__(self, value, scale):
        if value.dtype not in self.DTYPES:
            raise TypeError(f"QTensor holds int8/16/32 or uint8/16 values, not {value.dtype}")
        self.value = value
        self.scale = int(scale)

    @property
    def bits(self):
        return self.value.dtype.itemsize * 8

    @property
    def frac_bits(self):
        return self.bits if self.value.dtype.kind == "u" else self.bits - 1

    @property
    def exp(self):
        """Real value = value * 2**exp."""
        return self.scale - self.frac_bits

    @property
    def shape(self):
        return self.value.shape

    @classmethod
    def from_float(cls, x, bits=8, rounding="nearest"):
        """Boundary conversion: Eq. 11 scale, then Eq. 10 / Eq. 14."""
        s = dynamic_scale(x)
        return cls(quantize(x, s, bits, rounding), s)

    def dequantize(self):
        return np.ldexp(np.asarray(self.value, np.float64), self.exp)

    def __repr__(self):
        return f"QTensor({self.value.dtype}, shape={self.value.shape}, scale={self.scale})"
