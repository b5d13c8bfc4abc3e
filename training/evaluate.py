"""Float measurement of the device protocol (Algorithm 2 without integers), in PyTorch.

``torch_fp_runner`` is a runner of the one evaluation harness, ``intsr.evaluate`` (config
"fp-torch"): the harness makes every case (LR = ``lr_image``, Eq. 1 rounded half up; the online
training pair (up(son), LR) exactly as the device makes it, son by the integer Eq. 1; up(LR)),
scores it (Y-PSNR BT.601 and SSIM, ``scale`` pixels shaved, SR rounded to 8 bits) and prints
the tables. The runner takes ``setup.steps`` plain SGD steps (rate ``setup.lr``, mean L1 on
(up(son) -> LR)), optionally with gradient masks (Eq. 6, carried through the backward pass as
Eq. 9 and the engine do), then SR = up(LR) + net(up(LR)).

    python -m training eval --weights W --images HR_DIR --kernels K.npy ... [--json OUT]
"""
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from intsr import evaluate as harness
from intsr.io import InputError, atomic_write, read_kernel
from intsr.weights import resolve_masks
from training import common
from training.net import SRNet, functional_forward

CONFIGS = ("bicubic", "fp-torch")


def _t(img_u8):
    """uint8 (H, W, 3) -> float32 NCHW tensor in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(
        (np.asarray(img_u8, np.float32) / np.float32(255)).transpose(2, 0, 1)[None]))


def _np(t):
    """NCHW tensor -> (H, W, 3) float64 in [0, 1]."""
    return t[0].detach().clamp(0, 1).numpy().transpose(1, 2, 0).astype(np.float64)


def torch_fp_runner(case, setup):
    """Harness runner ``fn(case, setup) -> (sr_init, sr, macs)``: ``setup.weights`` (float HWIO,
    as every runner gets them) in torch float32, ``setup.steps`` SGD steps on ``case.pair``,
    SR of ``case.up`` before and after, float64 in [0, 1]; macs are not counted (0)."""
    w = [torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float32).transpose(3, 2, 0, 1)))
         .requires_grad_(True) for a in setup.weights]
    x_te = _t(case.up)
    with torch.no_grad():
        sr0 = _np(functional_forward(x_te, w))
    if setup.steps == 0:
        return sr0, sr0.copy(), 0
    inp, tgt = case.pair
    x_tr, y_tr = _t(inp), _t(tgt)
    gm = None if setup.masks is None else [torch.from_numpy(np.asarray(m, np.float32))
                                           for m in setup.masks]
    opt = torch.optim.SGD(w, lr=setup.lr)
    for _ in range(setup.steps):
        opt.zero_grad()
        F.l1_loss(functional_forward(x_tr, w, gm), y_tr).backward()
        opt.step()
    with torch.no_grad():
        sr1 = _np(functional_forward(x_te, w))
    return sr0, sr1, 0


def load_hwio(path):
    """Weights for the harness (float32 HWIO) from anything ``--init`` accepts: a stage
    checkpoint, a state_dict .pt or an .npz."""
    model = SRNet()
    common.load_init_weights(model, path)
    return [c.weight.detach().numpy().transpose(2, 3, 1, 0).copy() for c in model.convs]


def _set_threads(n):
    torch.set_num_threads(n)
    try:  # the harness's integer kernels (case making) are Numba's
        import numba
        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    except ImportError:
        pass


def run(args):
    _set_threads(args.threads)
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise SystemExit(f"error: {args.json}: output folder does not exist")
    try:
        kernels = [(Path(k).stem, read_kernel(k)) for k in args.kernels]
        masks = resolve_masks(args.ratio, args.masks)
        weights = load_hwio(args.weights)
        records = []
        for r in harness.evaluate(args.images, kernels, weights=weights, masks=masks,
                                  lr=args.lr, scale=args.scale, steps=args.sgd_steps,
                                  configs=CONFIGS, runners={"fp-torch": torch_fp_runner},
                                  grid=args.grid):
            records.append(r)
            print(f"  {r['kernel']:20s} {r['image']:12s} {r['config']:9s} "
                  f"init {r['psnr_init']:.2f} after {args.sgd_steps} steps {r['psnr']:.2f} "
                  f"({r['seconds']:.1f} s)", flush=True)
    except InputError as e:
        raise SystemExit(f"error: {e}") from None
    print(harness.tables(records, args.sgd_steps), flush=True)
    if args.json:
        text = json.dumps({"args": vars(args), "records": records}, indent=1)
        atomic_write(args.json, lambda f: f.write(text), binary=False)
        print(f"wrote {args.json}", flush=True)
