"""Real inputs: LR images made the ways images reach a device (ordinary resizers, JPEG, sensor
noise, either sampling grid), super-resolved by plain PIL bicubic, ``intsr sr`` and blind
``intsr adapt`` (no option), scored by Y-PSNR against the HR image (shave = scale).

The six kinds (issue 28's table), each LR made from the HR image cropped to a multiple of the
scale (a central crop of at most ``--max-side`` HR pixels):

    bicubic-x4        PIL resize(BICUBIC) to 1/4
    bicubic-jpeg75    the same, saved as JPEG quality 75 (Pillow, 4:2:0)
    lanczos-jpeg90    PIL resize(LANCZOS) to 1/4, JPEG quality 90
    aniso-corner-n5   anisotropic Gaussian (seeded per image), Eq. 1 on the corner grid, noise 5
    aniso-n3-jpeg85   anisotropic Gaussian, centre grid, noise 3, JPEG quality 85
    box-x2            PIL resize(BOX) to 1/2 (OpenCV's INTER_AREA)

The methods are told nothing but the scale, as a user would run them (`adapt` is given the
JPEG quality of a JPEG kind, which `intsr adapt` reads from the file's tables); the HR
reference is never shifted (an image made on the corner grid is scored where the HR pixels
are).

    python benchmarks/real_inputs.py --data ../shared/data/train/bsds500 \
        ../shared/data/train/t91 --holdout --per-kind 18 --json real_val.json
    python benchmarks/real_inputs.py --data ../shared/data/set14 ../shared/data/bsd68 ...
"""
import argparse
import glob
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import intsr  # noqa: E402
from intsr.floatpath.gaussian import gaussian, random_gaussian  # noqa: E402
from intsr.floatpath.metrics import psnr_y  # noqa: E402
from intsr.floatpath.realdeg import Degradation, make_lr  # noqa: E402
from intsr.io import InputError, atomic_write, jpeg_roundtrip  # noqa: E402
from training.data import HOLDOUT  # noqa: E402  (the trainer's held-out images)

# kind -> (scale, PIL filter or None for a Gaussian, grid, noise, JPEG quality)
KINDS = {
    "bicubic-x4": (4, Image.BICUBIC, "centre", 0.0, None),
    "bicubic-jpeg75": (4, Image.BICUBIC, "centre", 0.0, 75),
    "lanczos-jpeg90": (4, Image.LANCZOS, "centre", 0.0, 90),
    "aniso-corner-n5": (4, None, "corner", 5.0, None),
    "aniso-n3-jpeg85": (4, None, "centre", 3.0, 85),
    "box-x2": (2, Image.BOX, "centre", 0.0, None),
}
_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def load_hr(dirs, holdout, max_side):
    """(name, uint8 RGB HR) of each image, central crop of at most ``max_side`` pixels a side;
    ``holdout``: only the training images the trainer holds out (every HOLDOUT-th per sorted
    folder listing, counted over all folders as training/data.py counts them)."""
    files = []
    for d in dirs:
        files += sorted(f for f in glob.glob(os.path.join(d, "*")) if f.lower().endswith(_EXTS))
    if holdout:
        files = [f for i, f in enumerate(files) if i % HOLDOUT == 0]
    out = []
    for f in files:
        with Image.open(f) as im:
            hr = np.asarray(im.convert("RGB"), np.uint8)
        h, w = hr.shape[:2]
        y, x = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
        out.append((os.path.basename(f), hr[y:y + max_side, x:x + max_side]))
    return out


def make_case(hr, kind, seed):
    """(LR uint8, HR uint8 cropped to a multiple of the scale, description) of one kind."""
    scale, pil, grid, noise, quality = KINDS[kind]
    h, w = hr.shape[:2]
    hr = np.ascontiguousarray(hr[:h - h % scale, :w - w % scale])
    rng = np.random.default_rng(seed)
    if pil is not None:
        lr = np.asarray(Image.fromarray(hr).resize((hr.shape[1] // scale, hr.shape[0] // scale),
                                                   pil), np.uint8)
        if quality is not None:
            lr = jpeg_roundtrip(lr, quality)
        return lr, hr, {"jpeg": quality}
    s1, s2, th = random_gaussian(rng, (1.0, 2.8), aniso=1.0)
    deg = Degradation(gaussian(s1, s2, th), "gauss", grid, noise, quality)
    return make_lr(hr, deg, scale, rng), hr, {"sigma1": s1, "sigma2": s2, "theta": th,
                                              "jpeg": quality}


def run_methods(lr, scale, methods, jpeg=None):
    """{method: (SR uint8, seconds, report)} for ``methods`` (a dict name -> callable taking
    the LR image, the scale and the JPEG quality the image was saved with, None if lossless)."""
    out = {}
    for name, fn in methods.items():
        t0 = time.perf_counter()
        try:
            sr, rep = fn(lr, scale, jpeg)
        except InputError as e:  # a refusal (e.g. no estimator for the scale) is a result
            out[name] = (None, 0.0, {"refused": str(e)})
            continue
        out[name] = (sr, time.perf_counter() - t0, rep)
    return out


def default_methods(sr_weights=None, adapt_weights=None, estimator=None):
    # an estimator reads one scale (its file says which): the others keep the shipped ones
    est_scale = None if estimator is None else int(np.load(estimator)["scale"])

    def bicubic(lr, scale, jpeg):
        h, w = lr.shape[:2]
        return np.asarray(Image.fromarray(lr).resize((w * scale, h * scale), Image.BICUBIC)), {}

    def sr(lr, scale, jpeg):
        return intsr.super_resolve(lr, scale=scale, weights=sr_weights), {}

    def adapt(lr, scale, jpeg):
        # `intsr adapt` reads a JPEG file's quality from its tables (exactly), and another
        # file's from its pixels if it was once a JPEG ("auto"): the same here
        rep = {}
        est = estimator if scale == est_scale else None
        return intsr.adapt(lr, scale=scale, weights=adapt_weights, report=rep, estimator=est,
                           jpeg="auto" if jpeg is None else jpeg), rep

    return {"bicubic": bicubic, "sr": sr, "adapt": adapt}


def save_crops(path, hr, outputs, crop):
    """The central ``crop`` x ``crop`` HR window of each output and of the HR image, side by side
    with a 4-pixel white gap, magnified 2x (nearest), as PNG."""
    h, w = hr.shape[:2]
    y, x = (h - crop) // 2, (w - crop) // 2
    tiles = [o[y:y + crop, x:x + crop] for o in outputs + [hr]]
    tiles = [t if t.ndim == 3 else np.repeat(t[:, :, None], 3, axis=2) for t in tiles]
    gap = np.full((crop, 4, 3), 255, np.uint8)
    row = np.concatenate(sum(([t, gap] for t in tiles), [])[:-1], axis=1)
    row = row.repeat(2, axis=0).repeat(2, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(row).save(path)


def summarise(records, methods):
    """Per kind: mean Y-PSNR of bicubic, mean difference of each method to bicubic, and how many
    images are below it."""
    rows = []
    for kind in KINDS:
        recs = [r for r in records if r["kind"] == kind]
        if not recs:
            continue
        row = {"kind": kind, "n": len(recs),
               "bicubic": float(np.mean([r["bicubic"] for r in recs]))}
        for m in methods:
            if m == "bicubic":
                continue
            d = [r[m] - r["bicubic"] for r in recs if m in r]
            row[m] = float(np.mean(d)) if d else None
            row[m + "_below"] = int(sum(x < 0 for x in d))
        rows.append(row)
    return rows


def print_table(rows, methods):
    others = [m for m in methods if m != "bicubic"]
    print("| kind | n | PIL bicubic | " + " | ".join(others) + " |")
    print("|---|---|---|" + "---|" * len(others))
    for r in rows:
        cells = [f"{r[m]:+.2f} ({r[m + '_below']})" if r.get(m) is not None else "-"
                 for m in others]
        print(f"| {r['kind']} | {r['n']} | {r['bicubic']:.2f} | " + " | ".join(cells) + " |")
    for m in others:
        vals = [r[m] for r in rows if r.get(m) is not None]
        if vals:
            print(f"{m}: mean over kinds {np.mean(vals):+.2f} dB, below bicubic on "
                  f"{sum(r[m + '_below'] for r in rows)} of {sum(r['n'] for r in rows)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", nargs="+", required=True, help="folders of HR images")
    ap.add_argument("--holdout", action="store_true",
                    help="only the held-out training images (validation: choosing weights)")
    ap.add_argument("--per-kind", type=int, default=18, help="images per kind (0: all)")
    ap.add_argument("--max-side", type=int, default=384, help="central HR crop, pixels a side")
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    ap.add_argument("--sr-weights", default=None, help="weights for `sr` (default: shipped)")
    ap.add_argument("--adapt-weights", default=None, help="weights for `adapt` (default: shipped)")
    ap.add_argument("--estimator", default=None,
                    help="kernel estimator .npz for `adapt` at its scale (default: shipped)")
    ap.add_argument("--methods", nargs="+", default=["bicubic", "sr", "adapt"])
    ap.add_argument("--seed", type=int, default=28)
    ap.add_argument("--json", default=None)
    ap.add_argument("--crops", default=None,
                    help="folder: one picture per kind of one image, side by side: "
                         "PIL bicubic | each method | HR (a CROP-pixel HR window, 2x nearest)")
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--crop-image", default=None,
                    help="the image (file name) --crops pictures (default: the first)")
    args = ap.parse_args()

    images = load_hr(args.data, args.holdout, args.max_side)
    all_methods = default_methods(args.sr_weights, args.adapt_weights, args.estimator)
    methods = {m: all_methods[m] for m in args.methods}
    records = []
    for kind in args.kinds:
        ki = list(KINDS).index(kind)  # the cases of a kind do not depend on which others run
        chosen = images if not args.per_kind else images[:args.per_kind]
        for ii, (name, hr) in enumerate(chosen):
            lr, ref, info = make_case(hr, kind, [args.seed, ki, ii])
            scale = KINDS[kind][0]
            rec = {"kind": kind, "image": name, **info}
            results = run_methods(lr, scale, methods, info["jpeg"])
            if args.crops and (name == args.crop_image if args.crop_image else ii == 0):
                save_crops(Path(args.crops) / f"real_{kind}.png", ref,
                           [results[m][0] for m in methods if results[m][0] is not None],
                           args.crop)
            for m, (sr, sec, rep) in results.items():
                if sr is None:
                    rec[m + "_refused"] = rep["refused"]
                    continue
                rec[m] = psnr_y(sr / 255.0, ref / 255.0, scale)
                rec[m + "_seconds"] = round(sec, 3)
                if rep.get("kernel_estimate"):
                    rec[m + "_estimate"] = rep["kernel_estimate"]
                for key in ("weights", "degradation"):
                    if key in rep:
                        rec[m + "_" + key] = rep[key]
            records.append(rec)
            print(kind, name, " ".join(f"{m} {rec[m]:.2f}" for m in methods if m in rec),
                  flush=True)
    rows = summarise(records, methods)
    print_table(rows, methods)
    if args.json:
        payload = {"args": vars(args), "cpu": platform.processor() or platform.machine(),
                   "summary": rows, "records": records}
        atomic_write(args.json, lambda f: f.write(json.dumps(payload, indent=1).encode()))


if __name__ == "__main__":
    main()
