"""Evaluation metrics (float, outside the online path): the project's protocol is PSNR on the
Y channel of ITU-R BT.601 with ``scale`` pixels shaved at every border."""
import numpy as np


def rgb_to_y(img):
    """BT.601 luma in [16, 235] from RGB in [0, 1]: Y = 16 + (65.481 R + 128.553 G + 24.966 B)."""
    img = np.asarray(img, np.float64)
    if img.ndim == 2:
        return 16.0 + 219.0 * img
    return 16.0 + img[..., 0] * 65.481 + img[..., 1] * 128.553 + img[..., 2] * 24.966


def psnr_y(pred, ref, shave):
    """PSNR in dB of the Y channels of two [0, 1] images, ``shave`` pixels off every border.

    ``pred`` is clipped to [0, 1] and rounded to 8-bit levels first, as a written image is."""
    pred = np.floor(np.clip(np.asarray(pred, np.float64), 0, 1) * 255 + 0.5) / 255
    a, b = rgb_to_y(pred), rgb_to_y(ref)
    if shave:
        a, b = a[shave:-shave, shave:-shave], b[shave:-shave, shave:-shave]
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def ssim_y(pred, ref, shave):
    """SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255)
    of the BT.601 Y channels, ``shave`` pixels off every border, ``pred`` rounded like psnr_y."""
    from scipy.ndimage import gaussian_filter

    pred = np.floor(np.clip(np.asarray(pred, np.float64), 0, 1) * 255 + 0.5) / 255
    a, b = rgb_to_y(pred), rgb_to_y(ref)
    if shave:
        a, b = a[shave:-shave, shave:-shave], b[shave:-shave, shave:-shave]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x):  # truncate=3.5 with sigma 1.5 gives the 11-tap window
        return gaussian_filter(x, 1.5, truncate=3.5, mode="constant")[5:-5, 5:-5]
    mu_a, mu_b = blur(a), blur(b)
    va = blur(a * a) - mu_a ** 2
    vb = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
    return float(s.mean())
