"""Fixed-point primitives, each defined once and used by every kernel that rounds or clips
(gemmlowp's fixedpoint.h style: one sentence per rule).

- ``shift_round(v, shift, nearest)``: ``v * 2**shift`` for an int64 ``v``; exact for
  ``shift >= 0`` (the caller proves the headroom), and for ``shift < 0`` the floor of
  ``v / 2**-shift`` (an arithmetic right shift) or, with ``nearest``, the floor of
  ``v / 2**-shift + 1/2`` (round half up, towards +inf); right shifts are capped at 62 bits,
  where every ``|v| < 2**62`` already floors to 0 or -1.
- ``saturate(v, lo, hi)``: ``v`` clipped to ``[lo, hi]``; the only place a value that does not
  fit its type is changed, never wrapped.

``intsr.quant.shift_round`` / ``saturate`` are the NumPy statements of the same rules at the
float boundary; tests/kernels/test_fixedpoint.py checks the two agree on every shift.

Accumulator widths shared by several kernels are stated here with their headroom argument.
"""
import numpy as np
from numba import njit

# Products summed in one int32 accumulator by the weight-gradient kernels (portable and VNNI):
# an 8-bit activation times an int8 gradient is at most 255 * 128 = 32,640 (uint8 x int8) or
# 2**14 (int8 x int8) in magnitude, so 2**16 of them sum to at most 2,139,095,040 < 2**31 - 1.
# Chunk totals are then added in int64 (2**31 per chunk: over 2**31 chunks of headroom).
WGRAD_CHUNK = 1 << 16


@njit(cache=True, inline="always")
def shift_round(v, shift, nearest):
    if shift >= 0:
        return v << shift
    n = min(-shift, 62)
    if nearest:
        return (v + (np.int64(1) << (n - 1))) >> n
    return v >> n


@njit(cache=True, inline="always")
def saturate(v, lo, hi):
    return hi if v > hi else (lo if v < lo else v)
