"""Evaluation like the paper's tables: for every HR image and kernel, LR by Eq. 1, then each
configuration adapts on the LR image alone and super-resolves it; Y-PSNR (BT.601, ``scale``
pixels shaved) before adaptation ("Init") and after ``steps`` steps.

Configurations (``CONFIGS``):
  bicubic            Pillow bicubic of the LR image
  fp                 float32 reference (floatpath.network.FloatNet), same pruned back-prop
  int8-ours          IntNet, 32-bit masters (Eq. 14-15), dynamic scales: what `intsr adapt` runs
  int8-ours-static   the same with static scales
  int8-standard      8-bit weights (Eq. 12-13), dynamic scales
  int8-standard-static
Static scales are calibrated leave-one-out on the other images of the evaluated set (the paper
calibrates on training data, which a device does not have).
"""
import time
from pathlib import Path

import numpy as np
from PIL import Image

from intsr.floatpath.convert import kernel_to_fixed, lr_to_fixed, weights_to_int
from intsr.floatpath.degrade import degrade
from intsr.floatpath.metrics import psnr_y, ssim_y
from intsr.floatpath.network import FloatNet
from intsr.kernels.resample import bicubic_upsample_u8
from intsr.model import IntNet, calibrate
from intsr.online import SR_TILE, make_training_pair

CONFIGS = ("bicubic", "fp", "int8-ours", "int8-ours-static", "int8-standard",
           "int8-standard-static")


def load_hr(folder, scale):
    """HR images of a folder (png/jpg/bmp), RGB uint8, cropped to a multiple of ``scale``."""
    paths = sorted(p for p in Path(folder).iterdir()
                   if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"))
    if not paths:
        raise ValueError(f"no images in {folder}")
    out = []
    for p in paths:
        im = np.asarray(Image.open(p).convert("RGB"))
        out.append((p.stem, im[:im.shape[0] - im.shape[0] % scale,
                               :im.shape[1] - im.shape[1] % scale]))
    return out


def make_lr(hr, kernel, scale):
    """Eq. 1 with the project's convention, rounded to 8-bit pixels like a real input."""
    lr = degrade(hr / 255.0, kernel, scale)
    return np.clip(np.floor(lr * 255 + 0.5), 0, 255).astype(np.uint8)


def _int_run(weights, masks, mode, static, lr_img, pair, up, scale, steps, lr):
    # The same calls, tiles and rounding as intsr.adapt: int8-ours is `intsr adapt`.
    net = IntNet(weights_to_int(weights, mode), masks, mode=mode, static=static)
    sr0 = net.predict(up, tile=SR_TILE)
    inp, tgt = pair
    mult, shift = lr_to_fixed(lr, tgt.size)
    for _ in range(steps):
        net.step(inp, tgt, mult, shift)
    return sr0 / 255.0, net.predict(up, tile=SR_TILE) / 255.0, net.macs


def _fp_run(weights, masks, pair, up, steps, lr):
    net = FloatNet(weights, masks)
    x = up / np.float32(255)
    sr0 = net.predict(x)
    inp, tgt = pair
    for _ in range(steps):
        net.step(inp / np.float32(255), tgt / np.float32(255), lr)
    return sr0, net.predict(x), 0


def evaluate(hr_dir, kernels, *, weights, masks=None, lr, scale=4, steps=10,
             configs=CONFIGS, progress=None):
    """Yield one record per (kernel, image, configuration):
    dict(kernel, image, config, psnr_init, psnr, ssim_init, ssim, seconds, macs)."""
    images = load_hr(hr_dir, scale)
    for kname, kernel in kernels:
        k_fixed = kernel_to_fixed(kernel)
        cases = []
        for name, hr in images:
            lr_img = make_lr(hr, kernel, scale)
            cases.append((name, hr, lr_img, make_training_pair(lr_img, k_fixed, scale),
                          bicubic_upsample_u8(lr_img, scale)))
        for i, (name, hr, lr_img, pair, up) in enumerate(cases):
            ref = hr / 255.0
            for cfg in configs:
                t0 = time.perf_counter()
                if cfg == "bicubic":
                    sr0 = sr = up / 255.0
                    macs = 0
                elif cfg == "fp":
                    sr0, sr, macs = _fp_run(weights, masks, pair, up, steps, lr)
                else:
                    mode = "standard" if "standard" in cfg else "ours"
                    static = None
                    if cfg.endswith("static"):
                        others = [c[3] for j, c in enumerate(cases) if j != i] or [pair]
                        static = calibrate(IntNet(weights_to_int(weights, mode), masks,
                                                  mode=mode), others)
                    sr0, sr, macs = _int_run(weights, masks, mode, static, lr_img, pair, up,
                                             scale, steps, lr)
                seconds = time.perf_counter() - t0
                rec = dict(kernel=kname, image=name, config=cfg,
                           psnr_init=psnr_y(sr0, ref, scale), psnr=psnr_y(sr, ref, scale),
                           ssim_init=ssim_y(sr0, ref, scale), ssim=ssim_y(sr, ref, scale),
                           seconds=seconds, macs=int(macs))
                if progress:
                    progress(rec)
                yield rec


def summary_table(records, steps):
    """Markdown: one row per configuration, mean Y-PSNR at Init and after ``steps`` steps,
    then one column per kernel (after ``steps``), mean SSIM after ``steps``."""
    configs = list(dict.fromkeys(r["config"] for r in records))
    kernels = list(dict.fromkeys(r["kernel"] for r in records))
    head = (f"| config | Init | {steps} steps | " + " | ".join(kernels)
            + f" | SSIM {steps} steps | s / image |")
    lines = [head, "|" + "---|" * (5 + len(kernels))]
    for c in configs:
        rs = [r for r in records if r["config"] == c]
        per_k = [np.mean([r["psnr"] for r in rs if r["kernel"] == k]) for k in kernels]
        lines.append(f"| {c} | {np.mean([r['psnr_init'] for r in rs]):.2f} | "
                     f"{np.mean([r['psnr'] for r in rs]):.2f} | "
                     + " | ".join(f"{v:.2f}" for v in per_k)
                     + f" | {np.mean([r['ssim'] for r in rs]):.4f}"
                     + f" | {np.mean([r['seconds'] for r in rs]):.2f} |")
    return "\n".join(lines)


def detail_table(records, steps):
    """Markdown: per image and kernel, bicubic / Init / after ``steps`` / seconds for each
    configuration."""
    configs = [c for c in dict.fromkeys(r["config"] for r in records) if c != "bicubic"]
    by = {(r["kernel"], r["image"], r["config"]): r for r in records}
    head = "| kernel | image | bicubic | " + " | ".join(
        f"{c} Init | {c} {steps} | {c} s" for c in configs) + " |"
    lines = [head, "|" + "---|" * (3 + 3 * len(configs))]
    for (k, img) in dict.fromkeys((r["kernel"], r["image"]) for r in records):
        bic = by.get((k, img, "bicubic"))
        cells = [k, img, f"{bic['psnr']:.2f}" if bic else ""]
        for c in configs:
            r = by[(k, img, c)]
            cells += [f"{r['psnr_init']:.2f}", f"{r['psnr']:.2f}", f"{r['seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
