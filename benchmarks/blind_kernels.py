"""The fresh kernel set of blind mode's evaluation, as .npy files for `intsr eval`:

  iso_{i}    isotropic Gaussians, sigma uniform in [1.0, 2.8]
  aniso_{i}  anisotropic, sigma1 uniform in [1.2, 3.0], sigma2 uniform in
             [max(0.8, sigma1 / 3), sigma1 - 0.3], theta uniform in [0, pi)

all 21 x 21 (intsr.floatpath.gaussian), drawn by ``np.random.default_rng(SEED)``: kernels no
part of blind mode was trained or tuned on (the estimator trains on its own stream,
training/estimator.py). Names carry the parameters: ``aniso_1_s2.41x1.20_t73``.

    python benchmarks/blind_kernels.py OUT_DIR [--seed 2026] [--n 3]
"""
import argparse
import math
from pathlib import Path

import numpy as np

from intsr.floatpath.gaussian import gaussian

SEED = 2026
SIZE = 21


def kernels(seed=SEED, n=3):
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        s = float(rng.uniform(1.0, 2.8))
        out[f"iso_{i}_s{s:.2f}"] = gaussian(s, s, 0.0, SIZE)
    for i in range(n):
        s1 = float(rng.uniform(1.2, 3.0))
        s2 = float(rng.uniform(max(0.8, s1 / 3), s1 - 0.3))
        th = float(rng.uniform(0, math.pi))
        out[f"aniso_{i}_s{s1:.2f}x{s2:.2f}_t{math.degrees(th):.0f}"] = gaussian(s1, s2, th, SIZE)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--n", type=int, default=3, help="kernels of each kind")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, k in kernels(args.seed, args.n).items():
        np.save(out / f"{name}.npy", k)
        print(out / f"{name}.npy")
