"""Training data, made in NumPy with the project's own Eq. 1 and bicubic upsampler.

Every network input is ``bicubic_upsample(lr, s)`` (float, Pillow-compatible). LR images (and
sons) are 8-bit like real camera inputs: Eq. 1 ones come from
``intsr.floatpath.degrade.lr_image``, the one helper that makes 8-bit LR images everywhere
(rounded half up, as the engine rounds), D_bic ones from Pillow's uint8 downscale; they are
turned into floats in [0, 1] (``/ 255``) only where the network needs floats.
"""
import glob
import os
from dataclasses import replace

import numpy as np
from PIL import Image

from intsr.floatpath.degrade import bicubic_upsample, lr_image
from intsr.floatpath.gaussian import gaussian
from intsr.floatpath.realdeg import make_lr, random_degradation

_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Test sets must never be trained on; refusing them by name catches a wrong path early.
_FORBIDDEN = ("set5", "set14", "bsd68", "bsd100", "b100", "urban100")
HOLDOUT = 10  # every HOLDOUT-th training image is validation only (estimator, real inputs)


def split(images):
    """(training images, held-out validation images): every HOLDOUT-th one is held out."""
    return ([im for i, im in enumerate(images) if i % HOLDOUT],
            [im for i, im in enumerate(images) if i % HOLDOUT == 0])


def load_images(dirs):
    """All images under ``dirs`` as uint8 (H, W, 3) arrays, loaded once."""
    imgs = []
    for d in dirs:
        base = os.path.basename(os.path.normpath(d)).lower()
        if base in _FORBIDDEN:
            raise ValueError(f"refusing to train on test set directory {d!r}")
        files = sorted(f for f in glob.glob(os.path.join(d, "*")) if f.lower().endswith(_EXTS))
        if not files:
            raise ValueError(f"no images found in {d!r}")
        for f in files:
            with Image.open(f) as im:
                imgs.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
    return imgs


def random_kernel(rng, sigma=(0.8, 3.0), sizes=(7, 9, 11, 13, 15)):
    """Isotropic Gaussian of random size and sigma: the paper's p(k)."""
    size = int(rng.choice(sizes))
    return gaussian(float(rng.uniform(*sigma)), size=size)


def bicubic_downsample(hr_u8, scale):
    """D_bic's LR: Pillow BICUBIC (antialiased) downscale of the uint8 HR crop, as floats."""
    h, w = hr_u8.shape[:2]
    im = Image.fromarray(hr_u8).resize((w // scale, h // scale), Image.BICUBIC)
    return np.asarray(im, np.float64) / 255.0


class CropSampler:
    def __init__(self, images, rng):
        self.images = images
        self.rng = rng

    def crop(self, size):
        """Random ``size`` x ``size`` uint8 crop with a random flip/rot90 (8 dihedral variants)."""
        rng = self.rng
        for _ in range(1000):
            img = self.images[int(rng.integers(len(self.images)))]
            h, w = img.shape[:2]
            if h >= size and w >= size:
                break
        else:
            raise ValueError(f"no training image is at least {size} px")
        y = int(rng.integers(h - size + 1))
        x = int(rng.integers(w - size + 1))
        c = img[y:y + size, x:x + size]
        c = np.rot90(c, int(rng.integers(4)))
        if rng.integers(2):
            c = c[:, ::-1]
        return np.ascontiguousarray(c)


def sr_pair(hr_u8, scale, kernel=None, grid="centre"):
    """(network input, target) for one HR crop: D_bic if ``kernel`` is None, else Eq. 1 on
    ``grid`` (intsr.kernels.resample; D_bic is Pillow's downscale, always centred)."""
    hr = hr_u8.astype(np.float64) / 255.0
    if kernel is None:
        lr = bicubic_downsample(hr_u8, scale)
    else:
        lr = lr_image(hr_u8, kernel, scale, grid) / 255.0
    return bicubic_upsample(lr, scale, grid=grid if kernel is not None else "centre"), hr


def real_pair(hr_u8, scale, rng, p_corner=0.0):
    """(network input, target) for one HR crop under a draw of the real-input degradation model
    (intsr.floatpath.realdeg: resizer or Gaussian blur, noise, JPEG). The input is the centred
    bicubic upsampling whatever the grid, as the device makes it when not told the grid: a
    corner-grid draw (``p_corner`` of the Gaussians) teaches the network to hedge between grids,
    which it cannot tell apart (docs/real-inputs.md)."""
    deg = random_degradation(rng, scale, p_corner=p_corner)
    lr = make_lr(hr_u8, deg, scale, rng) / 255.0
    return bicubic_upsample(lr, scale), hr_u8.astype(np.float64) / 255.0


def task_blind(hr_u8, scale, rng, estimator, p_corner=0.0, clean=False):
    """One meta task as blind mode meets it on the device (``--degradation blind``): LR from a
    draw of the real-input model; the son made the way the device makes it without being told,
    with the kernel ``estimator`` (an intsr.blind.KernelEstimator, on integers) picks and the
    noise level intsr.blind.estimate_noise reads, then the image's own JPEG round trip (a JPEG
    file's quality is read exactly); ``clean``: blur only, as the images blind mode adapts from
    the meta-learned point read. D_tr = (up(son) -> LR), D_te = (up(LR) -> HR)."""
    from intsr.blind import estimate_noise

    deg = random_degradation(rng, scale, clean=clean, p_corner=p_corner)
    lr_u8 = make_lr(hr_u8, deg, scale, rng)
    est = estimator.estimate([lr_u8], max_size=min(lr_u8.shape[:2]))
    son_deg = replace(deg, kernel=est.kernel(), name="estimate", grid="centre",
                      noise=estimate_noise(lr_u8) / 256)
    son_u8 = make_lr(lr_u8, son_deg, scale, rng)
    hr, lr, son = (a.astype(np.float64) / 255.0 for a in (hr_u8, lr_u8, son_u8))
    return bicubic_upsample(son, scale), lr, bicubic_upsample(lr, scale), hr


def task(hr_u8, kernel, scale, grid="centre"):
    """One meta task: D_tr = (up(son) -> LR), D_te = (up(LR) -> HR).

    The HR crop must be a multiple of scale**2 so the son's upsampling has the LR's size. LR
    and son are 8-bit (``lr_image``: Eq. 1, rounded half up); the son is made from the 8-bit LR
    image, as the device makes it; both on ``grid``."""
    lr_u8 = lr_image(hr_u8, kernel, scale, grid)
    son_u8 = lr_image(lr_u8, kernel, scale, grid)
    hr, lr, son = (a.astype(np.float64) / 255.0 for a in (hr_u8, lr_u8, son_u8))
    return (bicubic_upsample(son, scale, grid=grid), lr, bicubic_upsample(lr, scale, grid=grid),
            hr)


def to_nchw(batch):
    return np.ascontiguousarray(np.stack(batch).transpose(0, 3, 1, 2), dtype=np.float32)
