"""Float measurement of the device protocol (Algorithm 2 without integers).

Per test image and kernel k: LR = Eq. 1 (8-bit rounded), son = Eq. 1 of the LR (8-bit rounded),
``n`` plain SGD steps with mean-L1 on (up(son) -> LR), optionally with gradient masks (Eq. 6,
carried through the backward pass as Eq. 9 and the engine do), then SR = up(LR) + net(up(LR)), rounded to 8 bits, Y-PSNR with ``scale`` pixels shaved.
"""
import glob
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from intsr.floatpath.degrade import bicubic_upsample, degrade
from training import common, data
from training.net import SRNet, functional_forward


def y_psnr(a, b, shave):
    """a, b: RGB float in [0, 1]; ITU-R BT.601 Y on the 0..255 scale."""
    def y(im):
        im = im * 255.0
        return 16.0 + (65.481 * im[..., 0] + 128.553 * im[..., 1] + 24.966 * im[..., 2]) / 255.0
    d = (y(a) - y(b))[shave:-shave, shave:-shave]
    return float(10 * np.log10(255.0 ** 2 / np.mean(d ** 2)))


def _t(img):
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)[None], np.float32))


def _np(t):
    return t[0].detach().numpy().transpose(1, 2, 0).astype(np.float64)


def adapt_and_sr(weights, lr_img, kernel, scale, steps, lr, masks=None):
    """Returns (SR before adaptation, SR after ``steps`` SGD steps) as float images."""
    w = [p.detach().clone().requires_grad_(True) for p in weights]
    x_te = _t(bicubic_upsample(lr_img, scale))
    with torch.no_grad():
        sr0 = _np(functional_forward(x_te, w).clamp(0, 1))
    if steps == 0:
        return sr0, sr0
    h, wd = (lr_img.shape[0] // scale) * scale, (lr_img.shape[1] // scale) * scale
    lr_c = lr_img[:h, :wd]
    son = data.quantize8(degrade(lr_c, kernel, scale))
    x_tr, y_tr = _t(bicubic_upsample(son, scale)), _t(lr_c)
    opt = torch.optim.SGD(w, lr=lr)
    gm = None if masks is None else [torch.from_numpy(m.astype(np.float32)) for m in masks]
    for _ in range(steps):
        opt.zero_grad()
        F.l1_loss(functional_forward(x_tr, w, gm), y_tr).backward()
        opt.step()
    with torch.no_grad():
        sr1 = _np(functional_forward(x_te, w).clamp(0, 1))
    return sr0, sr1


def load_test_images(folder, scale):
    out = []
    for f in sorted(glob.glob(os.path.join(folder, "*.png"))):
        im = np.asarray(Image.open(f).convert("RGB"), np.float64) / 255.0
        h, w = (im.shape[0] // scale) * scale, (im.shape[1] // scale) * scale
        out.append((os.path.basename(f), im[:h, :w]))
    return out


def evaluate(weights, images, kernels, scale, steps, lr, masks=None, log=print):
    """Mean Y-PSNR of bicubic, of the net before and after ``steps`` SGD steps, per kernel."""
    rows = []
    for kpath in kernels:
        k = np.load(kpath)
        for name, hr in images:
            lr_img = data.quantize8(degrade(hr, k, scale))
            bic = bicubic_upsample(lr_img, scale)
            sr0, sr1 = adapt_and_sr(weights, lr_img, k, scale, steps, lr, masks)
            r = {"kernel": os.path.basename(kpath), "image": name,
                 "bicubic": y_psnr(bic, hr, scale),
                 "net": y_psnr(data.quantize8(sr0), hr, scale),
                 "adapted": y_psnr(data.quantize8(sr1), hr, scale)}
            rows.append(r)
            log(f"  {r['kernel']:24s} {name:14s} bic {r['bicubic']:.2f} net {r['net']:.2f} "
                f"after {steps} steps {r['adapted']:.2f}")
    summary = {}
    for key in ("bicubic", "net", "adapted"):
        summary[key] = float(np.mean([r[key] for r in rows]))
    return summary, rows


def run(args):
    torch.set_num_threads(args.threads)
    model = SRNet()
    common.load_init_weights(model, args.weights)
    weights = [c.weight.detach() for c in model.convs]
    masks = None
    if args.masks:
        from intsr.floatpath.weights import load_masks
        masks = load_masks(args.masks)[args.ratio]
    t0 = time.time()
    summary, rows = evaluate(weights, load_test_images(args.images, args.scale), args.kernels,
                             args.scale, args.sgd_steps, args.lr, masks, log=print)
    summary.update(weights=args.weights, sgd_steps=args.sgd_steps, lr=args.lr,
                   masks=args.masks, ratio=args.ratio, seconds=time.time() - t0)
    print(json.dumps(summary), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "rows": rows}, f, indent=1)
