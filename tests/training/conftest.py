import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory):
    """A few smooth synthetic RGB images: enough texture for SR losses, no external data."""
    d = tmp_path_factory.mktemp("hr")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:72, 0:80]
    for i in range(3):
        img = np.zeros((72, 80, 3))
        for c in range(3):
            f = rng.uniform(0.05, 0.4, size=2)
            img[..., c] = 0.5 + 0.4 * np.sin(f[0] * xx + i) * np.cos(f[1] * yy + c)
        Image.fromarray((img * 255).round().astype(np.uint8)).save(d / f"im{i}.png")
    return str(d)


@pytest.fixture(scope="session")
def kernel_file(tmp_path_factory):
    """A 7x7 Gaussian (sigma 1) saved as .npy."""
    r = np.arange(7) - 3.0
    g = np.exp(-(r[:, None] ** 2 + r[None] ** 2) / 2.0)
    path = tmp_path_factory.mktemp("k") / "gauss_s1.0_7.npy"
    np.save(path, g / g.sum())
    return str(path)
