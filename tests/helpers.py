"""Shared test data: the bundled test images and a Gaussian kernel maker."""
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"
WEIGHTS = Path(__file__).parent.parent / "weights"


def gaussian(sigma, size=15):
    ax = np.arange(size) - size // 2
    g = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma ** 2))
    return g / g.sum()
