"""Blind mode: the device estimates the blur kernel of its input, in integers.

    (u, v, w) <- KernelEstimator on the LR image: LAYERS x [conv3x3 -> ReLU + Eq. 11 ->
                 uint8], then the last layer's ReLU sums over all pixels, L1-normalised
                 (contrast and size drop out), through a linear head
    kernel    <- the nearest entry of the bank (a constant table of Gaussians) in (u, v, w)

(u, v, w) is the log-covariance of intsr.floatpath.gaussian. Everything per image is integer:
the convolutions and requantization are the SR network's kernels, the rest is exact integer
arithmetic on Python ints (unbounded, so no overflow argument is needed; 3 x WIDTH numbers).
The boundary, once per process and before any image: the estimator's weights to int8 (Eq.
10-11), its head and bias to fixed point, the bank's parameters to fixed point and its taps to
kernel_to_fixed. docs/blind.md says why an estimator and not a search, and what it costs.
"""
import functools
import math
import os
from dataclasses import dataclass

import numpy as np

from intsr import torchfile
from intsr.floatpath.convert import kernel_to_fixed, weights_to_int
from intsr.floatpath.gaussian import from_log_cov, gaussian, kernel_size, log_cov
from intsr.floatpath.realdeg import RESIZERS, resizer_kernel
from intsr.io import InputError, jpeg_roundtrip
from intsr.kernels.dispatch import conv3x3
from intsr.kernels.requant import GATE_RELU
from intsr.model import requantize
from intsr.quant import dynamic_scale, quantize
from intsr.weights import WEIGHTS_DIR, shipped_config

LAYERS, WIDTH = 6, 32  # the estimator: 3 -> WIDTH -> ... -> WIDTH, 3x3, no biases
FRAC = 12  # fractional bits of (u, v, w) on the device
NORM_BITS = 16  # fractional bits of the L1-normalised features
LIMIT = 8 << FRAC  # predictions are clamped to +-8 in (u, v, w)
WINDOW = 256  # LR pixels per side the estimator reads (central window), like the online steps

# The bank: sigma on a geometric grid (ratio 2**(1/6), 0.4 to 3.2 HR pixels); isotropic
# kernels, and anisotropic ones with sigma2 < sigma1 <= 4 sigma2 at 8 orientations (22.5 deg).
SIGMAS = tuple(0.4 * 2 ** (i / 6) for i in range(19))
MAX_RATIO_STEPS = 12  # 2**(12/6) = 4
ORIENTATIONS = 8


@dataclass(frozen=True)
class Bank:
    params: tuple     # (sigma1, sigma2, theta) per entry: constants, for reports
    uvw: np.ndarray   # (N, 3) int64, FRAC fractional bits
    sizes: np.ndarray  # (N,) kernel side
    taps: tuple       # int32 fixed-point taps per entry (kernel_to_fixed)


@functools.lru_cache(maxsize=1)
def bank():
    """The constant table of candidate kernels, built once (the float boundary)."""
    params = [(s, s, 0.0) for s in SIGMAS]
    for i, s1 in enumerate(SIGMAS):
        for s2 in SIGMAS[max(0, i - MAX_RATIO_STEPS):i]:
            params += [(s1, s2, t * math.pi / ORIENTATIONS) for t in range(ORIENTATIONS)]
    uvw = np.array([[math.floor(c * (1 << FRAC) + 0.5) for c in log_cov(*p)] for p in params],
                   np.int64)
    sizes = np.array([kernel_size(p[0]) for p in params], np.int64)
    taps = tuple(kernel_to_fixed(gaussian(*p)) for p in params)
    return Bank(tuple(params), uvw, sizes, taps)


@dataclass
class Estimate:
    """A blind estimate: the bank entry, its fixed-point taps (what the son is made with) and
    the estimator's raw prediction (u, v, w) * 2**FRAC; ``resizer`` names the resizer when the
    estimator read the image as made by one (a family estimator: index -1, the resizer's taps)."""
    index: int
    k_fixed: np.ndarray
    uvw: tuple
    resizer: str | None = None

    def describe(self):
        """Reporting boundary: the entry's parameters and the prediction as floats."""
        ps1, ps2, pth = from_log_cov(*(c / (1 << FRAC) for c in self.uvw[:3]))
        predicted = {"sigma1": ps1, "sigma2": ps2, "theta_deg": math.degrees(pth)}
        if self.resizer is not None:
            return {"family": "resizer", "resizer": self.resizer,
                    "size": int(self.k_fixed.shape[0]), "predicted": predicted}
        s1, s2, th = bank().params[self.index]
        return {"family": "gauss", "sigma1": s1, "sigma2": s2, "theta_deg": math.degrees(th),
                "size": int(self.k_fixed.shape[0]), "bank_index": self.index,
                "bank_size": len(bank().params), "predicted": predicted}

    def kernel(self):
        """The kernel as a float array summing to 1 (exactly the taps the device used)."""
        return self.k_fixed.astype(np.float64) / self.k_fixed.sum()


# The head has 3 outputs (u, v, w), or with the kernel family 4 + len(RESIZERS): then output 3
# is the family's logit (>= 0: a resizer made the image) and 4.. one logit per resizer.
ESTIMATOR_SPEC = {**{f"conv{i + 1}": ((3, 3, 3 if i == 0 else WIDTH, WIDTH), "f", 4)
                     for i in range(LAYERS)},
                  "head_w": ((WIDTH, None), "f", 4), "head_b": ((None,), "f", 4),
                  "scale": ((), "i")}
FAMILY_OUTPUTS = 4 + len(RESIZERS)


# Blind mode at a scale without an estimator assumes the input was made by this resizer (the
# commonest way images are made smaller) and adapts from the direct-SR weights (issue 28).
# At a scale whose configuration sets "resize_sigma", an estimate narrower than that (the
# geometric mean of its two sigmas, HR pixels) reads as this resizer too: a resizer's own
# antialiasing is the least blur an image has, and a Gaussian estimator cannot tell it from a
# narrow Gaussian, while the two want sons on grids half a pixel apart (docs/real-inputs.md).
ASSUMED_RESIZER = "bicubic"


def has_estimator(scale):
    """Whether a kernel estimator is shipped for ``scale``."""
    return shipped_config(scale).get("estimator") is not None


def shipped_estimator(scale):
    """Path of the shipped estimator for ``scale``; InputError if there is none."""
    name = shipped_config(scale).get("estimator")
    if name is None:
        raise InputError(f"no kernel estimator is shipped for x{scale}: give --kernel (blind "
                         f"mode needs an estimator trained for the scale, docs/blind.md)")
    return WEIGHTS_DIR / name


class KernelEstimator:
    """The estimator network on integers. ``path``: an estimator .npz (None: the shipped one
    for ``scale``), read without executing anything from it (intsr.torchfile.read_npz)."""

    def __init__(self, path=None, scale=4):
        path = shipped_estimator(scale) if path is None else path
        z = torchfile.read_npz(path, ESTIMATOR_SPEC, "kernel estimator")
        outputs = z["head_w"].shape[1]
        if outputs not in (3, FAMILY_OUTPUTS) or z["head_b"].shape != (outputs,):
            raise InputError(f"{os.path.basename(path)}: a head of {outputs} outputs is neither "
                             f"(u, v, w) nor (u, v, w) with the kernel family")
        if int(z["scale"]) != scale:
            raise InputError(f"{os.path.basename(path)} estimates kernels for x{int(z['scale'])}"
                             f", not x{scale}")
        self.w8 = weights_to_int([z[f"conv{i + 1}"] for i in range(LAYERS)], "standard")
        # Head in 32 bits (Eq. 14's quantizer), bias at the exponent of the head's products.
        hs = dynamic_scale(z["head_w"])
        self.head_w = [[int(v) for v in row] for row in quantize(z["head_w"], hs, 32, "nearest")]
        self.head_exp = hs - 31 - NORM_BITS
        self.head_b = [math.floor(float(b) * 2.0 ** -self.head_exp + 0.5) for b in z["head_b"]]
        if -self.head_exp - FRAC < 1:
            raise InputError(f"{os.path.basename(path)}: head weights out of range")
        self.scale = scale
        # the resizers' taps at this scale (boundary: made once, like the bank)
        self.resizer_taps = ({name: kernel_to_fixed(resizer_kernel(name, scale))
                              for name in RESIZERS} if outputs > 3 else None)
        sigma = shipped_config(scale).get("resize_sigma")
        self.resize_u = self.assumed_taps = None
        if sigma is not None:
            # u = ln(sigma1) + ln(sigma2) = 2 ln(geometric-mean sigma), FRAC fractional bits
            self.resize_u = math.floor(2 * math.log(float(sigma)) * (1 << FRAC) + 0.5)
            self.assumed_taps = kernel_to_fixed(resizer_kernel(ASSUMED_RESIZER, scale))
        bank()

    def features(self, image):
        """The last layer's ReLU summed over the pixels: WIDTH Python ints (any common power
        of two; only their ratios matter)."""
        h, w = image.shape[:2]
        y0, x0 = max(0, (h - WINDOW) // 2), max(0, (w - WINDOW) // 2)
        # writable and C-contiguous, as the training pairs are: the kernels then run the
        # signatures a told run has compiled (a read-only image would compile new ones)
        x = np.require(image[y0:y0 + WINDOW, x0:x0 + WINDOW], requirements=["C", "W"])
        h, w = x.shape[:2]
        exp = -8  # pixels read as p / 256, like the SR network's input
        for layer, wq in enumerate(self.w8):
            # int32 accumulator: 9 taps x 32 channels x 255 x 128 < 2**24, far from 2**31.
            if layer == LAYERS - 1:
                acc = conv3x3(x, wq.value)
                # int32 values, at most 2**16 pixels: the int64 sum has 2**16 headroom.
                return [int(v) for v in np.maximum(acc, 0).sum(axis=(0, 1), dtype=np.int64)]
            # Eq. 11's maximum taken by the conv as it goes, as IntNet.forward does
            acc, m = conv3x3(x, wq.value, GATE_RELU)
            q = requantize(acc.reshape(h * w, -1), exp + wq.exp, None, GATE_RELU, True,
                           unsigned=True, max_abs=m)
            x, exp = q.value.reshape(h, w, -1), q.exp

    def predict(self, image):
        """(u, v, w[, family, resizers...]) * 2**FRAC as Python ints, rounded half up from
        the head's exponent.

        Features ``f`` -> ``q_i = floor(WIDTH * f_i * 2**NORM_BITS / sum f)`` (a featureless,
        all-zero image reads as uniform features) -> ``head_w^T q + head_b``."""
        f = self.features(image)
        total = sum(f)
        q = [(WIDTH * v << NORM_BITS) // total for v in f] if total else [1 << NORM_BITS] * WIDTH
        shift = -self.head_exp - FRAC  # > 0 for any real head: NORM_BITS + 31 - hs > 12
        out = []
        for j in range(len(self.head_b)):
            acc = sum(qi * row[j] for qi, row in zip(q, self.head_w, strict=True))
            acc += self.head_b[j]
            out.append((acc + (1 << (shift - 1))) >> shift)
        return tuple(out)

    def estimate(self, images, max_size=None):
        """The bank entry nearest to the prediction for ``images`` (one HxWx3 uint8 image, or a
        list of them sharing one kernel: the mean prediction, rounded half up): squared
        distance in (u, v, w), exact in int64, the lowest index on a tie; only kernels no wider
        than ``max_size``."""
        if isinstance(images, np.ndarray):
            images = [images]
        preds = [self.predict(im) for im in images]
        n = len(preds)
        # Clamped to +-LIMIT (sigma ratios of e**4, far outside the bank: the choice is the
        # same) so that the int64 squared distances below cannot overflow for any head.
        uvw = tuple(max(-LIMIT, min(LIMIT, (sum(p[j] for p in preds) * 2 + n) // (2 * n)))
                    for j in range(len(preds[0])))
        if len(uvw) > 3 and uvw[3] >= 0:
            # read as a resizer's image: the resizer of the largest logit (first on a tie)
            logits = uvw[4:]
            name = list(RESIZERS)[logits.index(max(logits))]
            taps = self.resizer_taps[name]
            if max_size is None or taps.shape[0] <= max_size:
                return Estimate(-1, taps, uvw, name)
        if self.resize_u is not None and uvw[0] < self.resize_u and (
                max_size is None or self.assumed_taps.shape[0] <= max_size):
            return Estimate(-1, self.assumed_taps, uvw[:3], ASSUMED_RESIZER)
        b = bank()
        d = ((b.uvw - np.array(uvw[:3], np.int64)) ** 2).sum(axis=1)
        if max_size is not None:
            d = np.where(b.sizes <= max_size, d, np.iinfo(np.int64).max)
        i = int(np.argmin(d))
        return Estimate(i, b.taps[i], uvw[:3])


# Noise level (Immerkaer, "Fast noise variance estimation", 1996), integers only. The mask
# N = [[1, -2, 1], [-2, 4, -2], [1, -2, 1]] cancels planes and most smooth structure; on white
# Gaussian noise of sigma per channel, the luma R + 2G + B carries sigma * sqrt(6) and
# E|N * y| = sqrt(2 / pi) * 6 * sqrt(6) * sigma. Texture also passes the mask, so only the
# quietest 1/NOISE_SHARE of the NOISE_BLOCK-pixel blocks are read; that choice also picks
# the blocks where the noise itself happened to be small, which NOISE_GAIN undoes (measured on
# held-out training images at 3 and 5 levels: docs/real-inputs.md). Below NOISE_FLOOR_Q8 an
# image reads as clean: texture alone reads as up to 2-3 levels on one image in ten.
NOISE_BLOCK = 4
NOISE_SHARE = 20
NOISE_FLOOR_Q8 = 512  # 2 levels
# round(2**16 * NOISE_GAIN * sqrt(pi / 2) / (6 * sqrt(6))) with NOISE_GAIN = 1.4
_NOISE_GAIN_Q16 = 7824


def _window(rgb):
    """The central WINDOW x WINDOW pixels of an (H, W, 3) uint8 image, as int32."""
    h, w = rgb.shape[:2]
    y0, x0 = max(0, (h - WINDOW) // 2), max(0, (w - WINDOW) // 2)
    return rgb[y0:y0 + WINDOW, x0:x0 + WINDOW].astype(np.int32)


def _quiet_blocks(y):
    """(sum of |N * y| over the quietest 1/NOISE_SHARE of the NOISE_BLOCK-pixel blocks, the
    number of pixels summed), for an int32 plane ``y`` of |values| <= 1020; (0, 0) if no block
    fits. |N * y| <= 16 * 1020 < 2**14; a block sum of 16 of them < 2**18, exact in int64."""
    r = np.abs(y[:-2, :-2] - 2 * y[:-2, 1:-1] + y[:-2, 2:]
               - 2 * y[1:-1, :-2] + 4 * y[1:-1, 1:-1] - 2 * y[1:-1, 2:]
               + y[2:, :-2] - 2 * y[2:, 1:-1] + y[2:, 2:])
    bh, bw = r.shape[0] // NOISE_BLOCK, r.shape[1] // NOISE_BLOCK
    if bh == 0 or bw == 0:
        return 0, 0
    blocks = r[:bh * NOISE_BLOCK, :bw * NOISE_BLOCK].reshape(
        bh, NOISE_BLOCK, bw, NOISE_BLOCK).sum(axis=(1, 3), dtype=np.int64).ravel()
    n = max(1, blocks.size // NOISE_SHARE)
    return int(np.partition(blocks, n - 1)[:n].sum()), n * NOISE_BLOCK * NOISE_BLOCK


def _levels_q8(total, pixels, gain_q16):
    """total * gain_q16 / (pixels * 2**16) in levels with 8 fractional bits, rounded half up."""
    den = pixels << 16
    return (total * gain_q16 * 256 + den // 2) // den


def estimate_noise(rgb):
    """Noise standard deviation of an (H, W, 3) uint8 image in 8-bit levels with 8 fractional
    bits (``sigma_q8``), 0 for an image that reads as clean; central WINDOW pixels."""
    x = _window(rgb)
    total, pixels = _quiet_blocks(x[..., 0] + 2 * x[..., 1] + x[..., 2])  # luma <= 1020
    if pixels == 0:
        return 0
    sigma_q8 = _levels_q8(total, pixels, _NOISE_GAIN_Q16)
    return 0 if sigma_q8 < NOISE_FLOOR_Q8 else sigma_q8


# The sampling grid cannot be read from pixels (docs/real-inputs.md, "The grid cannot be read
# from pixels"): blind mode takes it from a prior on how the image was made. Images that pass
# through a resizer, a camera or a JPEG encoder are on the resizers' (centre) grid; white noise
# in every colour channel of a lossless image is the mark of the classical degradation
# pipelines (blur, keep [::s, ::s] from pixel 0, add noise, as MZSR's, ZSSR's and KernelGAN's
# code keeps them), which are on the corner grid.
# Colour noise is read on the differences R - G and B - G, where a natural image's texture
# mostly cancels (its channels move together) and white noise of sigma per channel stays
# (sqrt(2) sigma): Immerkaer's mask on each, the quietest blocks, the smaller of the two, with
# a gain of CHROMA_GAIN for that choice's bias. JPEG's 4:2:0 chroma and its quantizer remove
# such noise. Measured on held-out training images (x4, 50 each, docs/real-inputs.md): clean
# images (Gaussian blurs, bicubic and box resizes, JPEGs) read at most 1.6 levels; noise of 3
# levels 2.6-4.3; noise of 5, 4.1-6.0.
CHROMA_GAIN = 2.05  # measured at 3 and 5 levels (2.03, 2.07): the quietest blocks' bias
# round(2**16 * CHROMA_GAIN * sqrt(pi / 2) / (6 * sqrt(2)))
_CHROMA_GAIN_Q16 = 19844
GRID_CORNER_CHROMA_Q8 = 3 << 8  # colour noise of 3 levels or more: the corner grid


def estimate_chroma_noise(rgb):
    """White noise per colour channel of an (H, W, 3) uint8 image, in 8-bit levels with 8
    fractional bits, read on the colour differences (above); central WINDOW pixels."""
    x = _window(rgb)
    reads = [_quiet_blocks(x[..., c] - x[..., 1]) for c in (0, 2)]  # |R - G| <= 255
    if reads[0][1] == 0:
        return 0
    return _levels_q8(min(t for t, _ in reads), reads[0][1], _CHROMA_GAIN_Q16)


def grid_prior(images):
    """(grid, colour noise q8): blind mode's grid for one HxWx3 uint8 image or a list sharing
    one degradation (their mean colour noise, rounded down): "corner" for noise of
    GRID_CORNER_CHROMA_Q8 or more, else "centre" (the prior above)."""
    if isinstance(images, np.ndarray):
        images = [images]
    chroma = sum(estimate_chroma_noise(im) for im in images) // len(images)
    return ("corner" if chroma >= GRID_CORNER_CHROMA_Q8 else "centre"), chroma


# JPEG quality of an image that was once a JPEG but is no longer one (a PNG of a JPEG), from its
# pixels ("JPEG ghosts", Farid 2009): JPEG at the quality and subsampling an image was saved
# with changes it least, a dip of the recompression error at one quality that an image never
# compressed does not have (its error falls smoothly as the quality rises). The error
# D(q) = sum |jpeg(x, q) - x| over a window on the 16-pixel grid of the 4:2:0 blocks (a crop off
# that grid loses the dip); the dip is the smallest D(q) / min(D(q - 1), D(q + 1)), and it counts
# below 7/8. The subsampling is not the curve with the deeper dip: at quality 89 and above a
# 4:2:0 image resaved 4:4:4 changes less than resaved 4:2:0 (chroma resampled twice is not a
# fixed point), so it is read from the error at the dip: a 4:4:4 image resaved 4:2:0 changes
# more than JPEG_SUB times as much as resaved 4:4:4 (measured 12-30000x), a 4:2:0 image at most
# 2.2x. Measured on 50 held-out training images resized by Pillow's bicubic (x4), clean and
# with noise of 3 levels, each saved once at a quality drawn from 50-95 with 4:4:4 or 4:2:0: every
# quality and subsampling read exactly (dip ratios 0.01-0.80), no clean or noisy image read as a
# JPEG (0.96 and above); again on 114 others resized x2-x4 at qualities 35-98 (session 15). A
# small 4:2:0 image at 97 or above (quantizer steps of 1-2) may read as never compressed (the
# tests' 85 px butterfly does). 4:2:2 is not tried; neither is a file saved twice.
JPEG_WINDOW = 128
JPEG_QUALITIES = (30, 100)  # both ends are only neighbours: a dip is read at 31-99
JPEG_DIP = (7, 8)
JPEG_SUB = 5


def estimate_jpeg(rgb):
    """(quality, Pillow subsampling 0 or 2) of an (H, W, 3) uint8 image that reads as having
    been saved as a JPEG, or None; central JPEG_WINDOW pixels on the 16-pixel grid. Integers
    only (Pillow's JPEG codec is libjpeg's integer DCT: intsr.io.jpeg_roundtrip)."""
    h, w = rgb.shape[:2]
    sh, sw = min(JPEG_WINDOW, h // 16 * 16), min(JPEG_WINDOW, w // 16 * 16)
    if sh == 0 or sw == 0:
        return None
    y0, x0 = (h - sh) // 32 * 16, (w - sw) // 32 * 16
    x = np.ascontiguousarray(rgb[y0:y0 + sh, x0:x0 + sw])
    xi = x.astype(np.int32)
    lo, hi = JPEG_QUALITIES
    d = {sub: [int(np.abs(jpeg_roundtrip(x, q, sub).astype(np.int32) - xi).sum(dtype=np.int64))
               for q in range(lo, hi + 1)] for sub in (0, 2)}
    best = None  # (numerator, denominator, index) of the deepest dip on either curve
    for c in d.values():
        for i in range(1, len(c) - 1):
            num, den = c[i], max(1, min(c[i - 1], c[i + 1]))
            if best is None or num * best[1] < best[0] * den:
                best = (num, den, i)
    num, den, i = best
    if JPEG_DIP[1] * num >= JPEG_DIP[0] * den:
        return None
    return lo + i, 0 if d[2][i] > JPEG_SUB * d[0][i] else 2


@functools.lru_cache(maxsize=4)
def estimator(scale, path=None):
    """A process-wide KernelEstimator per (scale, path): weights and bank are read once."""
    return KernelEstimator(path, scale)
