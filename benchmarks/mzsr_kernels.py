"""The kernels of MZSR's protocol, as .npy files for `intsr eval --grid corner`:

  g_d_0.2  isotropic Gaussian, covariance 0.2 I (sigma 0.447)
  g_d_2.0  isotropic Gaussian, covariance 2.0 I (sigma 1.414)
  g_d_ani  anisotropic Gaussian, covariance eigenvalues 4.0 and 1.0, major axis at 45 degrees

all 21 x 21, centred on the middle tap, normalised to sum 1. The anisotropic parameters are
this project's choice (MZSR names the kernel, not its covariance, in its paper).

    python benchmarks/mzsr_kernels.py OUT_DIR
"""
import argparse
from pathlib import Path

import numpy as np

SIZE = 21


def gaussian(cov):
    r = np.arange(SIZE) - SIZE // 2
    xy = np.stack(np.meshgrid(r, r, indexing="xy"), -1).astype(np.float64)
    q = np.einsum("...i,ij,...j->...", xy, np.linalg.inv(cov), xy)
    k = np.exp(-0.5 * q)
    return k / k.sum()


def kernels():
    c, s = np.cos(np.pi / 4), np.sin(np.pi / 4)
    rot = np.array([[c, -s], [s, c]])
    return {"g_d_0.2": gaussian(0.2 * np.eye(2)), "g_d_2.0": gaussian(2.0 * np.eye(2)),
            "g_d_ani": gaussian(rot @ np.diag([4.0, 1.0]) @ rot.T)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    out = ap.parse_args().out_dir
    out.mkdir(parents=True, exist_ok=True)
    for name, k in kernels().items():
        np.save(out / f"{name}.npy", k)
        print(out / f"{name}.npy")
