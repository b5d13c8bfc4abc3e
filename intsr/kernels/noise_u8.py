"""Seeded additive noise on uint8 pixels, integers only: what makes a son as noisy as its input
(issue 28: a son degraded like the image, so the online steps learn to remove noise instead of
sharpening it).

Each pixel draws its own noise from a counter-based generator: three splitmix64 outputs of
``(seed, 3 i + j)`` give twelve 16-bit uniforms whose sum (Irwin-Hall, 12 terms) is close to a
Gaussian. ``d = 2 sum - 12 * 65535`` is symmetric about 0 with standard deviation
``sqrt(12 (65536^2 - 1) / 3) ~= 2^17``. The pixel gains ``d * sigma_q8 / 2^25`` levels rounded to
nearest (ties up, fixedpoint.shift_round) and is saturated to [0, 255]: noise of ``sigma_q8 / 256``
levels. Since every pixel's draw depends only on the seed and its index, the result is the same
for any thread count or order.

Headroom: |d| <= 786420 < 2^20 and sigma_q8 <= MAX_SIGMA_Q8 < 2^13, so |d * sigma_q8| < 2^33
in int64, and the pixel plus its rounded noise stays far inside int64 before saturation.
"""
import numpy as np
from numba import njit, prange

from intsr.kernels.fixedpoint import saturate, shift_round

NOISE_SHIFT = 25       # 17 bits of d's standard deviation + 8 fractional bits of sigma_q8
MAX_SIGMA_Q8 = 64 * 256  # 64 levels: far beyond any camera; a bound for the headroom argument
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_LOW16 = np.uint64(0xFFFF)
_OFFSET = 12 * 65535  # 2 x the mean of the 12-term sum


@njit(cache=True, inline="always")
def _splitmix64(z):
    # Steele, Lea and Flood's finaliser; uint64 arithmetic wraps by definition.
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def _draw(key, i):
    """d for flat pixel index i: 2 x (sum of twelve 16-bit uniforms) - 12 * 65535."""
    acc = np.int64(0)
    for j in range(3):
        z = _splitmix64(key + np.uint64(3 * i + j) * _GOLDEN)
        for q in range(4):
            acc += np.int64((z >> np.uint64(16 * q)) & _LOW16)
    return 2 * acc - _OFFSET


@njit(cache=True, nogil=True, parallel=True)
def add_noise_u8(img, sigma_q8, seed, out):
    """out[i] = saturate(img[i] + round(d_i * sigma_q8 / 2^25), 0, 255) for flat uint8 arrays
    (module docstring); ``seed`` a non-negative int64."""
    key = _splitmix64(np.uint64(seed))
    for i in prange(img.shape[0]):
        noise = shift_round(_draw(key, i) * np.int64(sigma_q8), -NOISE_SHIFT, True)
        out[i] = saturate(np.int64(img[i]) + noise, 0, 255)


def add_noise_u8_ref(img, sigma_q8, seed):
    """Plain NumPy reference of add_noise_u8 (Python integers, no wrap concerns)."""
    mask = (1 << 64) - 1

    def mix(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    key = mix(seed & mask)
    out = np.empty_like(img)
    for i, v in enumerate(img.tolist()):
        acc = 0
        for j in range(3):
            z = mix((key + (3 * i + j) * 0x9E3779B97F4A7C15) & mask)
            acc += sum((z >> (16 * q)) & 0xFFFF for q in range(4))
        d = 2 * acc - _OFFSET
        n = (d * sigma_q8 + (1 << (NOISE_SHIFT - 1))) >> NOISE_SHIFT
        out[i] = min(255, max(0, v + n))
    return out
