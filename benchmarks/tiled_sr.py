"""Tiled against untiled SR (issue: bounded-memory inference): for every image of a folder, LR by
Eq. 1, 10 online steps with the shipped weights, then the SR pass untiled and in tiles with a
HALO-pixel margin; prints the Y-PSNR of both, their difference and how many pixels differ.

    python benchmarks/tiled_sr.py ../shared/data/set14 \\
        --kernel ../shared/data/kernels/gauss_iso_s1.6_15.npy
"""
import argparse

import numpy as np

from intsr.evaluate import load_hr
from intsr.floatpath.convert import kernel_to_fixed, lr_to_fixed
from intsr.floatpath.degrade import lr_image
from intsr.floatpath.metrics import psnr_y
from intsr.kernels.resample import bicubic_upsample_u8
from intsr.online import SR_TILE, Adapter, make_training_pair


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("hr_dir")
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--tile", type=int, default=SR_TILE)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    k = np.load(args.kernel)
    diffs = []
    for name, hr in load_hr(args.hr_dir, 4):
        lr = lr_image(hr, k, 4)
        ad = Adapter()
        net, lr_rate = ad.net, ad.lr
        inp, tgt = make_training_pair(lr, kernel_to_fixed(k), 4)
        mult, shift = lr_to_fixed(lr_rate, tgt.size)
        for _ in range(args.steps):
            net.step(inp, tgt, mult, shift)
        up = bicubic_upsample_u8(lr, 4)
        full, tiled = net.predict(up), net.predict(up, tile=args.tile)
        a, b = psnr_y(full / 255.0, hr / 255.0, 4), psnr_y(tiled / 255.0, hr / 255.0, 4)
        diffs.append(b - a)
        print(f"{name:12s} {up.shape[1]}x{up.shape[0]}  untiled {a:.4f}  tiled {b:.4f}  "
              f"diff {b - a:+.5f} dB  pixels differing {(full != tiled).mean():.1%}  "
              f"max |diff| {np.abs(full.astype(int) - tiled).max()}", flush=True)
    print(f"mean diff {np.mean(diffs):+.5f} dB, max |diff| {np.max(np.abs(diffs)):.5f} dB")


if __name__ == "__main__":
    main()
