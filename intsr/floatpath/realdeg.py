"""The degradation model of real inputs, in float: how an LR image a user has was made from a
scene, and how the trainer, the evaluation sets and the device's son all make one the same way.

A degradation is four things (``Degradation``):

* ``kernel``: the blur taps, 2-D, summing to 1, applied by Eq. 1 (``degrade``: correlation with
  reflect padding, then the grid's pixels kept). A common resizer is a kernel too: Pillow's,
  OpenCV's and MATLAB's ``resize`` at an integer factor are a separable correlation sampled on
  a grid (``resizer_kernel``). The kernel carries the sub-pixel **phase**: a resizer aligns
  pixel centres (output pixel i at input position ``(i + 1/2) s - 1/2``), which for even s is
  half an HR pixel before the pixel the centre grid keeps, so its taps are centred half a pixel
  off; a Gaussian of Eq. 1 is centred on the kept pixel.
* ``grid``: the sampling grid, ``"centre"`` (this project's Eq. 1) or ``"corner"`` (MZSR's).
* ``noise``: the standard deviation of additive white Gaussian noise, in 8-bit levels (0-10),
  added to the blurred, subsampled image before it is rounded to 8 bits (a sensor's noise, before
  the camera's encoder).
* ``jpeg``: the JPEG quality the image was saved with (None: lossless), with ``subsampling``
  (Pillow's: 0 = 4:4:4, 2 = 4:2:0).

``make_lr`` applies one to an HR image; ``random_degradation`` draws one from the distribution the
real-input weights are trained on. A degradation cannot say where the scene was (a global shift
of the HR image leaves no trace in the LR image), so the grid and the phase are conventions
attached to each kind of kernel, not something an estimator reads from pixels (docs/real-inputs.md).
"""
import math
from dataclasses import dataclass, field

import numpy as np

from intsr.floatpath.degrade import degrade
from intsr.floatpath.gaussian import gaussian, kernel_size, random_gaussian
from intsr.io import jpeg_roundtrip


def _cubic(a):
    def f(x):
        x = np.abs(x)
        return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                        np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))
    return f


def _triangle(x):
    return np.maximum(0.0, 1.0 - np.abs(x))


# name -> (filter, support in filter units, antialiased): Pillow's filters (Resample.c) and
# OpenCV's INTER_CUBIC / INTER_LINEAR, which do not widen the filter when they shrink an image.
RESIZERS = {
    "bicubic": (_cubic(-0.5), 2.0, True),     # Pillow BICUBIC; MATLAB imresize 'bicubic'
    "bilinear": (_triangle, 1.0, True),  # Pillow BILINEAR
    "box": (lambda x: ((x >= -0.5) & (x < 0.5)).astype(np.float64), 0.5, True),
    # Pillow BOX; OpenCV INTER_AREA at an integer factor is the same average
    # np.sinc is sin(pi x) / (pi x)
    "lanczos": (lambda x: np.where(np.abs(x) < 3, np.sinc(x) * np.sinc(x / 3.0), 0.0), 3.0, True),
    "cv2-cubic": (_cubic(-0.75), 2.0, False),  # OpenCV INTER_CUBIC (no antialiasing)
    "cv2-linear": (_triangle, 1.0, False),  # OpenCV INTER_LINEAR
}


def resizer_kernel(name, scale):
    """(n, n) taps of resizer ``name`` shrinking by the integer ``scale``, for Eq. 1 on the centre
    grid: ``degrade(img, k, scale)`` equals the resizer's output (Pillow's up to its 8-bit
    rounding between the horizontal and the vertical pass).

    The resizer's output pixel i is centred at input ``s*i + (s - 1)/2``; the centre grid keeps
    ``p = s*i + s//2``, so tap t (input ``p + t``) sits ``t + delta`` from the centre with
    ``delta = 1/2`` for even s, 0 for odd s; its weight is ``filter((t + delta) / width)``
    (width = s when antialiased, 1 when not), normalised."""
    if name not in RESIZERS:
        raise ValueError(f"resizer must be one of {', '.join(RESIZERS)}, not {name!r}")
    f, support, aa = RESIZERS[name]
    width = float(scale) if aa else 1.0
    delta = 0.5 if scale % 2 == 0 else 0.0
    m = int(math.ceil(support * width + delta))
    t = np.arange(-m, m + 1, dtype=np.float64)
    taps = f((t + delta) / width)
    taps = taps / taps.sum()
    return np.outer(taps, taps)


def resizer_named(kernel, scale):
    """The name of the resizer whose taps ``kernel`` is at ``scale`` (to 1e-12, after
    normalising), or None: a saved resizer estimate (``--save-kernel``) read back as one."""
    k = np.asarray(kernel, np.float64)
    k = k / k.sum()
    for name in RESIZERS:
        r = resizer_kernel(name, scale)
        if r.shape == k.shape and np.abs(r - k).max() < 1e-12:
            return name
    return None


@dataclass(frozen=True)
class Degradation:
    """One description of how an LR image was made (module docstring)."""

    kernel: np.ndarray = field(repr=False, compare=False)
    name: str = "kernel"
    grid: str = "centre"
    noise: float = 0.0
    jpeg: int | None = None
    subsampling: int = 2

    def describe(self):
        """A JSON-able summary (what ``--json`` reports)."""
        return {"kernel": self.name, "kernel_size": int(self.kernel.shape[0]),
                "grid": self.grid, "noise": round(float(self.noise), 2),
                "jpeg": None if self.jpeg is None else int(self.jpeg),
                "subsampling": None if self.jpeg is None else
                {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}[self.subsampling]}


def make_lr(hr, deg, scale, rng=None):
    """The LR image ``deg`` makes of ``hr`` (uint8, or float in [0, 1]) at ``scale``: Eq. 1 with
    the kernel on the grid, noise of ``deg.noise`` levels from ``rng`` (required when noisy),
    rounding half up to 8 bits with clipping, then the JPEG round trip."""
    hr = np.asarray(hr)
    x = hr / 255.0 if hr.dtype == np.uint8 else hr
    lr = degrade(x, deg.kernel, scale, deg.grid) * 255.0
    if deg.noise > 0:
        lr = lr + rng.normal(0.0, deg.noise, lr.shape)
    lr = np.clip(np.floor(lr + 0.5), 0, 255).astype(np.uint8)
    if deg.jpeg is not None:
        lr = jpeg_roundtrip(lr, deg.jpeg, deg.subsampling)
    return lr


# The training distribution: which kernel families, how often, and the ranges of the rest.
# Resizers weighted by how often images meet them (Pillow/MATLAB bicubic most).
RESIZER_P = {"bicubic": 0.35, "bilinear": 0.15, "box": 0.2, "lanczos": 0.2, "cv2-cubic": 0.05,
             "cv2-linear": 0.05}
P_GAUSS = 0.45      # else a resizer
P_NOISE = 0.5       # noise sigma uniform in NOISE
NOISE = (0.5, 10.0)
P_JPEG = 0.5        # quality uniform in JPEG_Q (integers), 4:2:0 with P_420, else 4:4:4
JPEG_Q = (50, 95)
P_420 = 0.8


def gauss_sigma_range(scale):
    """Gaussian blur widths (HR pixels) for a scale: the paper's 0.6-3.2 at x4, narrower at x2."""
    return (0.6, 3.2) if scale >= 4 else (0.4, 2.4)


def random_degradation(rng, scale, clean=False, p_corner=0.0):
    """One draw of the real-input distribution (module constants); ``clean``: blur only.
    ``p_corner``: the share of Gaussian blurs sampled on the corner grid (a blur followed by
    plain decimation, e.g. ``img[::s, ::s]``; a resizer is centred by construction). With 0 the
    generator is not consulted for it, so earlier draws stay as they were."""
    grid = "centre"
    if rng.uniform() < P_GAUSS:
        s1, s2, th = random_gaussian(rng, gauss_sigma_range(scale))
        k, name = gaussian(s1, s2, th, size=max(7, kernel_size(s1))), "gauss"
        if p_corner > 0 and rng.uniform() < p_corner:
            grid = "corner"
    else:
        names = list(RESIZER_P)
        name = names[int(rng.choice(len(names), p=np.array(list(RESIZER_P.values()))))]
        k = resizer_kernel(name, scale)
    if clean:
        return Degradation(k, name, grid)
    noise = float(rng.uniform(*NOISE)) if rng.uniform() < P_NOISE else 0.0
    jpeg, sub = None, 2
    if rng.uniform() < P_JPEG:
        jpeg = int(rng.integers(JPEG_Q[0], JPEG_Q[1] + 1))
        sub = 2 if rng.uniform() < P_420 else 0
    return Degradation(k, name, grid, noise, jpeg, sub)
