"""Stage 5 (blind mode): the kernel estimator, a small CNN that reads an LR image and predicts
the log-covariance (u, v, w) of its Gaussian blur kernel (intsr.floatpath.gaussian).

    h = ReLU(conv3x3(h)) x L      (no biases: positively homogeneous, like the SR net)
    f = sum over pixels of h      (C numbers)
    f = C * f / sum(f)            (contrast and size drop out)
    (u, v, w) = head(f)           (linear, with bias)

The device runs it in integers (intsr.blind). Data: random crops of the training folders,
every 10th image held out for validation, a random kernel of ``random_gaussian`` per crop, LR by
Eq. 1 on a random grid (centre or corner), 8 bits; the network reads pixels as p / 256 like the
integer engine. Loss: L1 on (u, v, w), with an overestimate of the size u weighted by
``--over`` (a blur estimated too wide costs more PSNR than one too narrow: docs/blind.md).

    python -m training estimator --data D... --ckpt C --steps N --scale 4
    python -m training estimator --data D... --ckpt C --steps N --export weights/estimator_x4.npz
"""
import argparse
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from intsr.floatpath.gaussian import gaussian, log_cov, random_gaussian
from intsr.floatpath.realdeg import RESIZERS, random_degradation, resizer_kernel
from intsr.io import atomic_write, jpeg_roundtrip
from intsr.kernels.resample import grid_offset
from training import common, data


class KernelNet(nn.Module):
    def __init__(self, width=32, layers=6, outputs=3):
        super().__init__()
        chans = [3] + [width] * layers
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1, bias=False)
                                   for a, b in zip(chans[:-1], chans[1:], strict=True))
        for c in self.convs:
            nn.init.kaiming_normal_(c.weight, nonlinearity="relu")
        self.head = nn.Linear(width, outputs)

    def forward(self, x):
        h = x
        for c in self.convs:
            h = F.relu(c(h))
        f = h.sum((2, 3))
        f = f.shape[1] * f / (f.sum(1, keepdim=True) + 1e-12)
        return self.head(f)


def lr_batch(crops, kernels, scale, grids):
    """Eq. 1 in float32 torch (reflect padding, the grid's pixels kept), rounded half up to 8
    bits: the trainer's fast twin of intsr.floatpath.degrade.lr_image."""
    out = []
    for hr, k, g in zip(crops, kernels, grids, strict=True):
        x = torch.from_numpy(np.ascontiguousarray(hr.transpose(2, 0, 1), np.float32))[None]
        p = k.shape[0] // 2
        x = F.pad(x, (p, p, p, p), mode="reflect")
        kt = torch.from_numpy(k.astype(np.float32))[None, None].repeat(3, 1, 1, 1)
        y = F.conv2d(x, kt, groups=3)
        off = grid_offset(g, scale)
        y = y[:, :, off::scale, off::scale]
        out.append(torch.clamp(torch.floor(y + 0.5), 0, 255))
    return torch.cat(out) / 256.0


def lr_batch_real(crops, degs, scale, rng):
    """The real-input model's LR images (intsr.floatpath.realdeg.make_lr) with the blur in
    float32 torch: Eq. 1 on the grid, noise, rounding half up, then Pillow's JPEG round trip."""
    out = []
    for hr, deg in zip(crops, degs, strict=True):
        x = torch.from_numpy(np.ascontiguousarray(hr.transpose(2, 0, 1), np.float32))[None]
        p = deg.kernel.shape[0] // 2
        x = F.pad(x, (p, p, p, p), mode="reflect")
        kt = torch.from_numpy(deg.kernel.astype(np.float32))[None, None].repeat(3, 1, 1, 1)
        off = grid_offset(deg.grid, scale)
        y = F.conv2d(x, kt, groups=3)[0, :, off::scale, off::scale].numpy().transpose(1, 2, 0)
        if deg.noise > 0:
            y = y + rng.normal(0.0, deg.noise, y.shape)
        lr = np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)
        if deg.jpeg is not None:
            lr = jpeg_roundtrip(lr, deg.jpeg, deg.subsampling)
        out.append(torch.from_numpy(lr.transpose(2, 0, 1).astype(np.float32))[None])
    return torch.cat(out) / 256.0


def family_draw(rng, args):
    """One draw for the family estimator: (Degradation, target row). Half Gaussians
    (random_gaussian with --aniso, either grid), half resizers (uniform over RESIZERS), each
    with the real-input model's noise and JPEG. Target: (u, v, w) of a Gaussian (NaN for a
    resizer), family (1 resizer, 0 Gaussian), the resizer's index (-1 for a Gaussian)."""
    deg = random_degradation(rng, args.scale)  # noise and JPEG as the weights see them
    if args.clean:  # blur only: the images blind mode adapts from a meta-learned point
        deg = replace(deg, noise=0.0, jpeg=None)
    if rng.uniform() < 0.5:
        s1, s2, th = random_gaussian(rng, (args.sigma_min, args.sigma_max), args.aniso)
        grid = "corner" if rng.integers(2) else "centre"
        return (replace(deg, kernel=gaussian(s1, s2, th), name="gauss", grid=grid),
                (*log_cov(s1, s2, th), 0.0, -1.0))
    i = int(rng.integers(len(RESIZERS)))
    name = list(RESIZERS)[i]
    return (replace(deg, kernel=resizer_kernel(name, args.scale), name=name, grid="centre"),
            (np.nan, np.nan, np.nan, 1.0, float(i)))


def make_batch(sampler, args, rng):
    sampler.rng = rng
    if args.family:
        crops, degs, targets = [], [], []
        for _ in range(args.batch):
            crops.append(sampler.crop(args.crop))
            deg, t = family_draw(rng, args)
            degs.append(deg)
            targets.append(t)
        return (lr_batch_real(crops, degs, args.scale, rng),
                torch.tensor(targets, dtype=torch.float32))
    crops, kernels, grids, targets = [], [], [], []
    for _ in range(args.batch):
        crops.append(sampler.crop(args.crop))
        s1, s2, th = random_gaussian(rng, (args.sigma_min, args.sigma_max), args.aniso)
        kernels.append(gaussian(s1, s2, th))
        grids.append("corner" if rng.integers(2) else "centre")
        targets.append(log_cov(s1, s2, th))
    return lr_batch(crops, kernels, args.scale, grids), torch.tensor(targets, dtype=torch.float32)


def loss_fn(pred, target, over):
    """L1 on (u, v, w), an overestimated size weighted by ``over``; with the family outputs
    (target rows of family_draw) the L1 counts Gaussians only, plus the family's logistic loss
    and the resizer's cross-entropy over resizers."""
    gauss = target[:, 3] == 0 if target.shape[1] > 3 else torch.ones(len(target), dtype=bool)
    d = pred[gauss, :3] - target[gauss, :3]
    w = torch.ones_like(d)
    w[:, 0] = torch.where(d[:, 0] > 0, torch.full_like(d[:, 0], over), w[:, 0])
    loss = (w * d.abs()).mean() if len(d) else pred.sum() * 0
    if target.shape[1] > 3:
        loss = loss + F.binary_cross_entropy_with_logits(pred[:, 3], target[:, 3])
        if (~gauss).any():
            loss = loss + F.cross_entropy(pred[~gauss, 4:], target[~gauss, 4].long())
    return loss


def validate(model, images, args, n=256):
    """Mean |error| of u, v, w and of sigma1, sigma2 (HR px) on held-out crops (fixed seed)."""
    sampler = data.CropSampler(images, None)
    preds, targets = [], []
    with torch.no_grad():
        for b in range(0, n, args.batch):
            x, t = make_batch(sampler, args, np.random.default_rng([args.seed, 999, b]))
            preds.append(model(x))
            targets.append(t)
    p, t = torch.cat(preds), torch.cat(targets)
    gauss = t[:, 3] == 0 if t.shape[1] > 3 else torch.ones(len(t), dtype=bool)
    e = (p[gauss, :3] - t[gauss, :3]).abs().mean(0)
    out = {"u": float(e[0]), "v": float(e[1]), "w": float(e[2])}
    if t.shape[1] > 3:
        fam = (p[:, 3] >= 0) == (t[:, 3] == 1)
        out.update(family_gauss=float(fam[gauss].float().mean()),
                   family_resizer=float(fam[~gauss].float().mean()),
                   resizer_named=float((p[~gauss, 4:].argmax(1) == t[~gauss, 4].long())
                                       .float().mean()))
    return out


def export(model, path, args):
    arrays = {f"conv{i + 1}": c.weight.detach().numpy().transpose(2, 3, 1, 0).astype(np.float32)
              for i, c in enumerate(model.convs)}
    arrays["head_w"] = model.head.weight.detach().numpy().T.astype(np.float32)  # (C, 3)
    arrays["head_b"] = model.head.bias.detach().numpy().astype(np.float32)
    arrays["scale"] = np.array(args.scale, np.int64)
    atomic_write(path, lambda f: np.savez(f, **arrays))
    print(f"wrote {path}")


def run(args):
    rank, _ = common.setup(args.threads)
    torch.manual_seed(args.seed)
    model = KernelNet(args.width, args.layers, 4 + len(RESIZERS) if args.family else 3)
    if args.init:
        z = np.load(args.init)
        with torch.no_grad():
            for i, c in enumerate(model.convs):
                c.weight.copy_(torch.from_numpy(z[f"conv{i + 1}"].transpose(3, 2, 0, 1)))
            model.head.weight[:3] = torch.from_numpy(z["head_w"][:, :3].T)
            model.head.bias[:3] = torch.from_numpy(z["head_b"][:3])
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    step, wall, history = 0, 0.0, []
    ck = common.load_checkpoint(args.ckpt)
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        torch.set_rng_state(ck["torch_rng"])
        step, wall, history = ck["step"], ck["wall"], ck.get("history", [])
        print(f"resumed {args.ckpt} at step {step} ({wall / 60:.1f} min so far)", flush=True)
    train, held = data.split(data.load_images(args.data))
    if args.export:
        print("validation (mean |error|):", validate(model, held, args))
        export(model, args.export, args)
        return
    sampler = data.CropSampler(train, None)

    def batch_loss(rng, logged):
        x, t = make_batch(sampler, args, rng)
        return loss_fn(model(x), t, args.over), {}

    common.train_loop(args, model, opt, step, wall, history, rank=rank, stage="estimator",
                      label="estimator", base_lr=args.lr, lr_name="lr", batch_loss=batch_loss)


def add_arguments(p):
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--crop", type=int, default=256, help="HR crop (LR = crop / scale)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--cosine", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--aniso", type=float, default=0.5, help="share of anisotropic kernels")
    p.add_argument("--over", type=float, default=1.5,
                   help="weight of an overestimated size u in the loss")
    p.add_argument("--export", default=None, help="write the estimator .npz and stop")
    p.add_argument("--clean", action="store_true",
                   help="with --family: blur only, no noise or JPEG")
    p.add_argument("--family", action="store_true",
                   help="also tell a resizer from a Gaussian and name the resizer (outputs 4..: "
                        "family logit, one logit per RESIZERS entry), on the real-input model's "
                        "noise and JPEG; --init: an estimator .npz to start from")
