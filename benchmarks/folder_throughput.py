"""Folder throughput of the batch modes (`intsr sr DIR OUT`, `intsr adapt DIR OUT` once over
windows, `--continual`): images/s and MP/s, from the job reports (intsr.jobs).

Two folders are made from the evaluation data: Set14 at x4 (Eq. 1, Gaussian sigma 1.6), and
ten 480x270 frames (x4 -> 1920x1080 output) cut from the centre of Urban100 images degraded
by Eq. 1 at x2.

    python benchmarks/folder_throughput.py --data ../shared/data --work throughput_work \\
        [--json out.json]
"""
import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from intsr.evaluate import load_hr, markdown_table
from intsr.floatpath.degrade import lr_image
from intsr.jobs import adapt_paths, sr_paths


def make_folders(data, work):
    k = np.load(data / "kernels" / "gauss_iso_s1.6_15.npy")
    set14, frames = work / "set14_lr", work / "frames270"
    set14.mkdir(parents=True, exist_ok=True)
    frames.mkdir(exist_ok=True)
    for name, hr in load_hr(data / "set14", 4):
        Image.fromarray(lr_image(hr, k, 4)).save(set14 / f"{name}.png")
    n = 0
    for name, hr in load_hr(data / "urban100", 2):
        lr = lr_image(hr, k, 2)
        if n < 10 and lr.shape[0] >= 270 and lr.shape[1] >= 480:
            y, x = (lr.shape[0] - 270) // 2, (lr.shape[1] - 480) // 2
            Image.fromarray(lr[y:y + 270, x:x + 480]).save(frames / f"{name}.png")
            n += 1
    return data / "kernels" / "gauss_iso_s1.6_15.npy", [set14, frames]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--json")
    args = ap.parse_args()
    kernel, folders = make_folders(args.data, args.work)
    rows = []
    for d in folders:
        runs = [("sr", lambda o, d=d: sr_paths([d], o)),
                ("adapt once (10 steps over windows)",
                 lambda o, d=d: adapt_paths([d], o, kernel)),
                ("adapt --continual (10 steps per image)",
                 lambda o, d=d: adapt_paths([d], o, kernel, continual=True))]
        for i, (name, run) in enumerate(runs):
            r = run(args.work / f"out_{d.name}_{i}")
            rows.append([d.name, name, len(r["images"]), f"{r['total_seconds']:.1f}",
                         f"{r['images_per_s']:.3f}", f"{r['input_mp_per_s']:.4f}",
                         f"{r['output_mp_per_s']:.3f}"])
            print(rows[-1], flush=True)
    print(markdown_table(["folder", "job", "images", "s", "images/s", "input MP/s",
                          "output MP/s"], rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
