"""Integer test inputs: random values and the extremes of each dtype."""
import numpy as np


def _fill(rng, shape, dtype, kind):
    info = np.iinfo(dtype)
    if kind == "random":
        return rng.integers(info.min, int(info.max) + 1, shape, dtype=dtype)
    if kind == "min":
        return np.full(shape, info.min, dtype)
    if kind == "max":
        return np.full(shape, info.max, dtype)
    # Random picks among the extremes and zero: worst cases for headroom and rounding.
    return rng.choice(np.array([info.min, info.max, 0, 1, -1 if info.min < 0 else 2], dtype),
                      shape)



EXTREMES = ["random", "min", "max", "mixed"]
GARBAGE = 0x5A  # what output buffers start as in tests of kernels that must write every byte
