"""The noise-level estimate (intsr.blind.estimate_noise) on held-out training images: LR made
by `realdeg.make_lr` (x4, a bicubic resize or a Gaussian of sigma 1.6, white noise of 0-10
levels before rounding, JPEG quality 85 or none after), central 256 px HR crops. Prints a
Markdown table: median estimate, 10-90 % range, share read as clean.

    python benchmarks/noise_estimate.py --data ../shared/data/train/bsds500 \
        ../shared/data/train/t91
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_inputs import load_hr  # noqa: E402

from intsr.blind import estimate_noise  # noqa: E402
from intsr.floatpath.gaussian import gaussian  # noqa: E402
from intsr.floatpath.realdeg import Degradation, make_lr, resizer_kernel  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    imgs = load_hr(args.data, True, 256)
    rng = np.random.default_rng(args.seed)
    print("| LR made by | noise (levels) | JPEG | median estimate | 10-90 % | read as clean |")
    print("|---|---|---|---|---|---|")
    for name, k in (("bicubic x4", resizer_kernel("bicubic", 4)),
                    ("Gaussian 1.6 x4", gaussian(1.6))):
        for noise in (0, 3, 5, 10):
            for jpeg in (None, 85):
                deg = Degradation(k, name, "centre", noise, jpeg)
                est = np.array([estimate_noise(make_lr(hr, deg, 4, rng)) / 256
                                for _, hr in imgs])
                print(f"| {name} | {noise} | {jpeg or '-'} | {np.median(est):.2f} | "
                      f"{np.percentile(est, 10):.2f}-{np.percentile(est, 90):.2f} | "
                      f"{np.mean(est == 0) * 100:.0f} % |")
    print(f"{len(imgs)} held-out images")


if __name__ == "__main__":
    main()
