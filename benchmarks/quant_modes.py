"""Measured effect of each integer-semantics choice against the float path, on Set5 x4:
rounding (nearest vs the paper's floor), 32-bit masters (Eq. 14-15) vs 8-bit weights
(Eq. 12-13), dynamic (Eq. 11) vs static scales (calibrated on the other Set5 images), and the
uint8 post-ReLU activation store ("ours-u8") against the paper's int8.

For each image and kernel: Y-PSNR of the 0-step and 10-step SR against HR, the cosine between
the integer and float total weight updates of 10 steps, and the L1 loss drop on the son pair.

    python benchmarks/quant_modes.py --data ../shared/data/set5 \\
        --kernels ../shared/data/kernels/gauss_iso_s1.6_15.npy \\
                  ../shared/data/kernels/gauss_iso_s2.4_15.npy
"""
import argparse
import json
from pathlib import Path

import numpy as np

from intsr.evaluate import load_hr, make_cases, markdown_table
from intsr.floatpath.convert import lr_to_fixed, weights_to_int
from intsr.floatpath.metrics import psnr_y
from intsr.floatpath.network import FloatNet
from intsr.io import read_kernel
from intsr.model import IntNet, calibrate
from intsr.weights import load_model

CONFIGS = [("ours", "nearest", False), ("ours", "floor", False), ("standard", "nearest", False),
           ("standard", "floor", False), ("ours", "nearest", True), ("standard", "nearest", True),
           ("ours-u8", "nearest", False)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--kernels", nargs="+", required=True)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--json")
    args = ap.parse_args()
    weights, _, default_lr = load_model()
    lr = args.lr or default_lr
    s = args.scale
    images = load_hr(args.data, s)
    results = {}
    for kpath in args.kernels:
        cases = make_cases(images, read_kernel(kpath), s)
        for case in cases:
            name, hr, up, (inp, tgt) = case.name, case.hr, case.up, case.pair
            fnet = FloatNet(weights)
            f0 = psnr_y(fnet.predict(up / 255.0), hr / 255.0, s)
            lf = [fnet.step(inp / 255.0, tgt / 255.0, lr) for _ in range(args.steps)]
            f10 = psnr_y(fnet.predict(up / 255.0), hr / 255.0, s)
            df = np.concatenate([(a - w).ravel()
                                 for a, w in zip(fnet.weights, weights, strict=True)])
            row = {"bicubic": psnr_y(up / 255.0, hr / 255.0, s), "float": [f0, f10],
                   "float_loss": [lf[0], lf[-1]], "float_curve": lf}
            for cfg_mode, rounding, static in CONFIGS:
                mode, unsigned = cfg_mode.split("-")[0], cfg_mode.endswith("-u8")
                start = weights_to_int(weights, mode, rounding)
                scales = None
                if static:  # calibrated on the other images of the set, never on this one
                    cal = IntNet(start, mode=mode, rounding=rounding)
                    scales = calibrate(cal, [c.pair for c in cases if c is not case])
                net = IntNet(start, mode=mode, rounding=rounding, static=scales,
                             unsigned=unsigned)
                p0 = psnr_y(net.predict(up) / 255.0, hr / 255.0, s)
                mult, shift = lr_to_fixed(lr, tgt.size)
                li = []
                for _ in range(args.steps):
                    num, e = net.step(inp, tgt, mult, shift)
                    li.append(np.ldexp(float(num), e) / tgt.size * 256 / 255)
                p10 = psnr_y(net.predict(up) / 255.0, hr / 255.0, s)
                di = np.concatenate([(q.dequantize() - w).ravel()
                                     for q, w in zip(net.weights, weights, strict=True)])
                cos = float(di @ df / (np.linalg.norm(di) * np.linalg.norm(df) + 1e-30))
                key = f"{cfg_mode}/{rounding}/{'static' if static else 'dynamic'}"
                row[key] = {"psnr": [p0, p10], "cos": cos, "loss": [li[0], li[-1]], "curve": li}
            results[f"{Path(kpath).stem}/{name}"] = row
            print(name, Path(kpath).stem, flush=True)
    keys = ["float"] + [f"{m}/{r}/{'static' if st else 'dynamic'}" for m, r, st in CONFIGS]
    rows = list(results.values())
    table = [["bicubic", f"{np.mean([r['bicubic'] for r in rows]):.2f}", "", "", ""]]
    for key in keys:
        if key == "float":
            p = np.mean([r["float"] for r in rows], axis=0)
            drop = np.mean([r["float_loss"][0] - r["float_loss"][1] for r in rows])
            table.append(["float32", f"{p[0]:.2f}", f"{p[1]:.2f}", "1", f"{drop:.5f}"])
            continue
        p = np.mean([r[key]["psnr"] for r in rows], axis=0)
        cos = np.mean([r[key]["cos"] for r in rows])
        drop = np.mean([r[key]["loss"][0] - r[key]["loss"][1] for r in rows])
        table.append([key, f"{p[0]:.2f}", f"{p[1]:.2f}", f"{cos:.3f}", f"{drop:.5f}"])
    print("\n" + markdown_table(["config", "PSNR 0 steps", f"PSNR {args.steps} steps",
                                 "update cosine vs float", "L1 drop"], table))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
