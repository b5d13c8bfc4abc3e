"""Blind `adapt` against `adapt` told the kernel, side by side in one warm process: per image,
the two runs alternate (told, blind, told, blind, ...) and each keeps its median; the report
splits blind mode's time into the estimate, the steps and the SR pass.

    python benchmarks/blind_time.py --images ../shared/data/set5 [--repeats 5] [--json out.json]
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from intsr.evaluate import IMAGE_SUFFIXES
from intsr.floatpath.degrade import lr_image
from intsr.floatpath.gaussian import gaussian
from intsr.kernels import dispatch
from intsr.online import adapt

from machine import cpu_name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", required=True)
    ap.add_argument("--sigma", type=float, default=1.6)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    k = gaussian(args.sigma, args.sigma, 0.0, 15)
    rows = []
    for p in sorted(q for q in Path(args.images).iterdir() if q.suffix.lower() in IMAGE_SUFFIXES):
        hr = np.asarray(Image.open(p).convert("RGB"))
        lr = lr_image(hr[:hr.shape[0] // 4 * 4, :hr.shape[1] // 4 * 4], k, 4)
        adapt(lr, k, steps=1)  # warm: kernels compiled, weights cached
        adapt(lr, steps=1)
        told, blind, parts = [], [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            adapt(lr, k)
            told.append(time.perf_counter() - t0)
            rep = {}
            t0 = time.perf_counter()
            adapt(lr, report=rep)
            blind.append(time.perf_counter() - t0)
            parts.append(rep["seconds"])
        row = {"image": p.stem, "lr_size": [lr.shape[1], lr.shape[0]],
               "told_s": statistics.median(told), "blind_s": statistics.median(blind),
               **{f"blind_{k}_s": statistics.median(s[k] for s in parts)
                  for k in ("estimate", "load", "adapt", "sr")}}
        row["ratio"] = row["blind_s"] / row["told_s"]
        rows.append(row)
        print(f"{p.stem:10s} LR {lr.shape[1]}x{lr.shape[0]}: told {row['told_s']:.3f} s, blind "
              f"{row['blind_s']:.3f} s (x{row['ratio']:.2f}; estimate "
              f"{row['blind_estimate_s']:.3f}, steps {row['blind_adapt_s']:.3f}, SR "
              f"{row['blind_sr_s']:.3f})", flush=True)
    told, blind = sum(r["told_s"] for r in rows), sum(r["blind_s"] for r in rows)
    print(f"Set total: told {told:.2f} s, blind {blind:.2f} s, x{blind / told:.2f} "
          f"({cpu_name()}, kernels {dispatch.PATH})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_name(), "kernels": dispatch.PATH, "args": vars(args),
                       "rows": rows, "ratio_total": blind / told}, f, indent=1)


if __name__ == "__main__":
    main()
