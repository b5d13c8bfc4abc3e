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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from intsr.floatpath.gaussian import gaussian, log_cov, random_gaussian
from intsr.io import atomic_write
from intsr.kernels.resample import grid_offset
from training import common, data

class KernelNet(nn.Module):
    def __init__(self, width=32, layers=6):
        super().__init__()
        chans = [3] + [width] * layers
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1, bias=False)
                                   for a, b in zip(chans[:-1], chans[1:]))
        for c in self.convs:
            nn.init.kaiming_normal_(c.weight, nonlinearity="relu")
        self.head = nn.Linear(width, 3)

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
    for hr, k, g in zip(crops, kernels, grids):
        x = torch.from_numpy(np.ascontiguousarray(hr.transpose(2, 0, 1), np.float32))[None]
        p = k.shape[0] // 2
        x = F.pad(x, (p, p, p, p), mode="reflect")
        kt = torch.from_numpy(k.astype(np.float32))[None, None].repeat(3, 1, 1, 1)
        y = F.conv2d(x, kt, groups=3)
        off = grid_offset(g, scale)
        y = y[:, :, off::scale, off::scale]
        out.append(torch.clamp(torch.floor(y + 0.5), 0, 255))
    return torch.cat(out) / 256.0


def make_batch(sampler, args, rng):
    sampler.rng = rng
    crops, kernels, grids, targets = [], [], [], []
    for _ in range(args.batch):
        crops.append(sampler.crop(args.crop))
        s1, s2, th = random_gaussian(rng, (args.sigma_min, args.sigma_max), args.aniso)
        kernels.append(gaussian(s1, s2, th))
        grids.append("corner" if rng.integers(2) else "centre")
        targets.append(log_cov(s1, s2, th))
    return lr_batch(crops, kernels, args.scale, grids), torch.tensor(targets, dtype=torch.float32)


def loss_fn(pred, target, over):
    d = pred - target
    w = torch.ones_like(d)
    w[:, 0] = torch.where(d[:, 0] > 0, torch.full_like(d[:, 0], over), w[:, 0])
    return (w * d.abs()).mean()


def validate(model, images, args, n=256):
    """Mean |error| of u, v, w and of sigma1, sigma2 (HR px) on held-out crops (fixed seed)."""
    sampler = data.CropSampler(images, None)
    errs = []
    with torch.no_grad():
        for b in range(0, n, args.batch):
            x, t = make_batch(sampler, args, np.random.default_rng([args.seed, 999, b]))
            errs.append((model(x) - t).abs())
    e = torch.cat(errs).mean(0)
    return {"u": float(e[0]), "v": float(e[1]), "w": float(e[2])}


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
    model = KernelNet(args.width, args.layers)
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
