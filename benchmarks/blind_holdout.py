"""Blind mode on held-out training images: what the estimator was chosen and checked on,
never a test image. Images: every 10th image of the training folders (training/data.py's
HOLDOUT, never trained on), central crop of at most 256 x 256 HR pixels; kernels: seeded
``random_gaussian`` draws (sigma 1.0-2.8, half anisotropic), x4, centre grid. For each case:
bicubic, told (10 integer steps on the true kernel) and blind (the same on the estimate), Y-PSNR,
and the estimate's size error.

    python benchmarks/blind_holdout.py --data ../shared/data/train/bsds500 \
        ../shared/data/train/t91 [--estimator E.npz] [--cases 60] [--json out.json]
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # training/

from intsr.floatpath.convert import kernel_to_fixed  # noqa: E402
from intsr.floatpath.degrade import lr_image  # noqa: E402
from intsr.floatpath.gaussian import gaussian, log_cov_of, random_gaussian  # noqa: E402
from intsr.floatpath.metrics import psnr_y  # noqa: E402
from intsr.kernels.resample import bicubic_upsample_u8  # noqa: E402
from intsr.online import Adapter, estimate_kernel  # noqa: E402
from training.data import HOLDOUT, load_images  # noqa: E402

SCALE = 4


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--estimator", default=None)
    ap.add_argument("--cases", type=int, default=60)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    images = [im for i, im in enumerate(load_images(args.data)) if i % HOLDOUT == 0]
    rng = np.random.default_rng(args.seed)
    rows = []
    for c in range(args.cases):
        hr = images[c % len(images)]
        h, w = (min(256, n) // SCALE * SCALE for n in hr.shape[:2])
        y0, x0 = (hr.shape[0] - h) // 2, (hr.shape[1] - w) // 2
        hr = np.ascontiguousarray(hr[y0:y0 + h, x0:x0 + w])
        s1, s2, th = random_gaussian(rng, (1.0, 2.8))
        k = gaussian(s1, s2, th, 21)
        lr = lr_image(hr, k, SCALE)
        row = {"case": c, "sigma1": s1, "sigma2": s2, "theta": th,
               "bicubic": psnr_y(bicubic_upsample_u8(lr, SCALE) / 255, hr / 255, SCALE)}
        t0 = time.perf_counter()
        est = estimate_kernel(lr, scale=SCALE, estimator=args.estimator)
        row["estimate_seconds"] = time.perf_counter() - t0
        for name, kf in (("told", kernel_to_fixed(k)), ("blind", est.k_fixed)):
            ad = Adapter(scale=SCALE)
            ad.learn([ad._pair(lr, kf)], 10)
            row[name] = psnr_y(ad.super_resolve(lr) / 255, hr / 255, SCALE)
        u, eu = log_cov_of(k)[0], log_cov_of(est.kernel())[0]
        row["sigma_error"] = float(np.exp(eu / 2) - np.exp(u / 2))
        row["estimate"] = est.describe()
        rows.append(row)
        print(f"{c:3d} true {s1:.2f}x{s2:.2f} est {row['estimate']['sigma1']:.2f}x"
              f"{row['estimate']['sigma2']:.2f}  bic {row['bicubic']:.2f} told {row['told']:.2f} "
              f"blind {row['blind']:.2f} ({row['blind'] - row['told']:+.2f})", flush=True)
    d = np.array([r["blind"] - r["told"] for r in rows])
    e = np.array([r["sigma_error"] for r in rows])
    below = sum(r["blind"] < r["bicubic"] for r in rows)
    print(f"blind - told: mean {d.mean():+.3f} dB, worst {d.min():+.2f}; |sigma error| mean "
          f"{np.abs(e).mean():.3f}, bias {e.mean():+.3f}; below bicubic: {below}/{len(rows)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
