"""Blind `intsr adapt` (no option: kernel family and kernel estimated, noise estimated, safety
net) against the same adaptation told the true kernel, on the paper's inputs: HR test images,
Eq. 1 on the centre grid with the canonical kernels, 10 integer steps, Y-PSNR (shave = scale).

    python benchmarks/blind_vs_told.py --images ../shared/data/set5 \
        --kernels ../shared/data/kernels/*.npy [--estimator E.npz] [--json out.json]
    python benchmarks/blind_vs_told.py --scale 2 --images ../shared/data/set5 --kernels K.npy...
"""
import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import intsr  # noqa: E402
from intsr.evaluate import IMAGE_SUFFIXES  # noqa: E402
from intsr.floatpath.degrade import lr_image  # noqa: E402
from intsr.floatpath.metrics import psnr_y  # noqa: E402
from intsr.io import atomic_write, read_image, read_kernel  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", required=True, help="folder of HR images")
    ap.add_argument("--kernels", nargs="+", required=True)
    ap.add_argument("--estimator", default=None, help="estimator .npz (default: shipped)")
    ap.add_argument("--blind-weights", default=None,
                    help="weights the blind runs adapt from (default: the shipped choice)")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    scale, records = args.scale, []
    files = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    for kpath in args.kernels:
        k = read_kernel(kpath)
        for f in files:
            hr = read_image(f)[0]
            hr = hr if hr.ndim == 3 else np.repeat(hr[:, :, None], 3, axis=2)
            hr = hr[:hr.shape[0] // scale * scale, :hr.shape[1] // scale * scale]
            lr = lr_image(hr, k, scale)
            rep = {}
            told = intsr.adapt(lr, k, scale=scale)
            blind = intsr.adapt(lr, scale=scale, estimator=args.estimator, report=rep,
                                weights=args.blind_weights)
            rec = {"kernel": Path(kpath).stem, "image": f.name,
                   "told": psnr_y(told / 255.0, hr / 255.0, scale),
                   "blind": psnr_y(blind / 255.0, hr / 255.0, scale),
                   "estimate": rep["kernel_estimate"], "check": rep.get("check"),
                   "weights": rep["weights"]}
            records.append(rec)
            print(f"{rec['kernel']} {f.name} told {rec['told']:.2f} blind {rec['blind']:.2f} "
                  f"({rec['estimate'].get('family')}, "
                  f"{(rec['check'] or {}).get('chosen')})", flush=True)
    d = [r["blind"] - r["told"] for r in records]
    print(f"blind - told: mean {np.mean(d):+.3f} dB, worst {min(d):+.2f}, "
          f"{sum(r['estimate'].get('family') == 'resizer' for r in records)} of {len(records)} "
          f"read as a resizer")
    if args.json:
        payload = {"args": vars(args), "cpu": platform.processor() or platform.machine(),
                   "mean_blind_minus_told": float(np.mean(d)), "records": records}
        atomic_write(args.json, lambda f: f.write(json.dumps(payload, indent=1).encode()))


if __name__ == "__main__":
    main()
