"""The Gaussian blur family of blind mode, in float: the boundary where kernels are made.

A kernel is ``exp(-x^T C^-1 x / 2)`` normalised, ``x = (column, row)`` offsets from the centre
tap, ``C = R(theta) diag(sigma1^2, sigma2^2) R(theta)^T`` with ``sigma1 >= sigma2`` (HR pixels)
and ``theta`` the major axis's angle from the column axis towards +row. The kernel estimator
predicts the matrix logarithm of ``C`` as three numbers (a plane where distances are fair at
every size and shape), with ``a = ln sigma1``, ``b = ln sigma2``:

    u = a + b                  (size: ln of the geometric-mean sigma, twice)
    v = (a - b) cos(2 theta)   (shape and orientation)
    w = (a - b) sin(2 theta)

The same functions make the training kernels (training/estimator.py), the device's candidate
bank (intsr.blind) and the seeded evaluation kernels (benchmarks/blind_kernels.py).
"""
import math

import numpy as np


def kernel_size(sigma1):
    """Odd side covering +-3 sigma1, at least 3."""
    return max(3, 2 * math.ceil(3.0 * sigma1) + 1)


def gaussian(sigma1, sigma2=None, theta=0.0, size=None):
    """(size, size) float64 kernel summing to 1."""
    sigma2 = sigma1 if sigma2 is None else sigma2
    size = kernel_size(max(sigma1, sigma2)) if size is None else size
    r = np.arange(size) - (size - 1) / 2.0
    x, y = np.meshgrid(r, r, indexing="xy")
    c, s = math.cos(theta), math.sin(theta)
    # rotate the offsets into the kernel's axes: (p, q) along the major and minor axis
    p, q = c * x + s * y, -s * x + c * y
    k = np.exp(-0.5 * (p * p / (sigma1 * sigma1) + q * q / (sigma2 * sigma2)))
    return k / k.sum()


def log_cov(sigma1, sigma2, theta):
    """(u, v, w) of a kernel (module docstring)."""
    a, b = math.log(sigma1), math.log(sigma2)
    return a + b, (a - b) * math.cos(2 * theta), (a - b) * math.sin(2 * theta)


def from_log_cov(u, v, w):
    """(sigma1, sigma2, theta) of a point (u, v, w); theta in [0, pi)."""
    r = math.hypot(v, w)
    theta = (0.5 * math.atan2(w, v)) % math.pi
    return math.exp((u + r) / 2), math.exp((u - r) / 2), theta


def random_gaussian(rng, sigma=(0.6, 3.2), aniso=0.5, max_ratio=4.0):
    """(sigma1, sigma2, theta): isotropic with probability ``1 - aniso`` (sigma uniform in
    ``sigma``), else sigma1 uniform in ``sigma``, sigma2 uniform in [max(sigma[0], sigma1 /
    max_ratio), sigma1], theta uniform in [0, pi)."""
    s1 = float(rng.uniform(*sigma))
    if rng.uniform() >= aniso:
        return s1, s1, 0.0
    s2 = float(rng.uniform(max(sigma[0], s1 / max_ratio), s1))
    return s1, s2, float(rng.uniform(0.0, math.pi))


def log_cov_of(kernel):
    """(u, v, w) of any 2-D kernel from its second moments about its centre tap (a truncated
    Gaussian reads slightly narrower than its sigma): how evaluations measure estimate error."""
    k = np.asarray(kernel, np.float64)
    k = k / k.sum()
    y, x = np.mgrid[:k.shape[0], :k.shape[1]]
    x, y = x - (k.shape[1] - 1) / 2.0, y - (k.shape[0] - 1) / 2.0
    cov = np.array([[(k * x * x).sum(), (k * x * y).sum()], [(k * x * y).sum(), (k * y * y).sum()]])
    vals, vecs = np.linalg.eigh(cov)
    vals = np.maximum(vals, 1e-6)
    theta = math.atan2(vecs[1, 1], vecs[0, 1])  # the major axis (largest eigenvalue, last)
    return log_cov(math.sqrt(vals[1]), math.sqrt(vals[0]), theta)


def kernel_distance(a, b):
    """L2 distance of two kernels (each normalised to sum 1) centred on a common grid."""
    n = max(a.shape[0], b.shape[0], a.shape[1], b.shape[1])
    out = []
    for k in (a, b):
        k = np.asarray(k, np.float64) / np.sum(k)
        py, px = (n - k.shape[0]) // 2, (n - k.shape[1]) // 2
        out.append(np.pad(k, ((py, n - k.shape[0] - py), (px, n - k.shape[1] - px))))
    return float(np.sqrt(((out[0] - out[1]) ** 2).sum()))
