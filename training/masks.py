"""Stage 3: gradient masks (Eq. 6-9) for the frozen (meta-learned) weights.

D_gp = D_meta tasks. For each task the device's own loss is used: mean L1 of
F(up(son)) against the LR image, the loss whose gradients the masks will prune. The per-output-
filter L2 norms of the weight gradients are summed over tasks (and over ``--steps`` SGD steps of
adaptation with rate alpha, when > 1, because the device masks every one of its steps); the
selection itself (Eq. 7-8) is ``intsr.pruning``, shared with the engine.
"""
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from intsr import pruning
from intsr.io import atomic_write
from intsr.weights import save_masks_npz
from training import common, data
from training.net import SRNet, functional_forward


def gradient_norms(weights, tasks, steps, alpha):
    """Sum over tasks (and adaptation steps) of per-output-filter L2 norms of dL_tr/dW."""
    acc = [np.zeros(w.shape[0]) for w in weights]
    for x_tr, y_tr in tasks:
        w = [p.detach().clone().requires_grad_(True) for p in weights]
        for _ in range(steps):
            loss = F.l1_loss(functional_forward(x_tr, w), y_tr)
            grads = torch.autograd.grad(loss, w)
            for a, g in zip(acc, grads, strict=True):
                a += g.flatten(1).norm(dim=1).double().numpy()
            with torch.no_grad():
                w = [(p - alpha * g).requires_grad_(True) for p, g in zip(w, grads, strict=True)]
    return acc


def run(args):
    torch.set_num_threads(args.threads)
    model = SRNet()
    common.load_init_weights(model, args.weights)
    weights = [c.weight.detach() for c in model.convs]
    rng = np.random.default_rng(args.seed)
    sampler = data.CropSampler(data.load_images(args.data), rng)
    t0 = time.time()
    tasks = []
    for _ in range(args.tasks):
        k = data.random_kernel(rng)
        x_tr, y_tr, _, _ = data.task(sampler.crop(args.crop), k, args.scale, args.grid)
        tasks.append((torch.from_numpy(data.to_nchw([x_tr])),
                      torch.from_numpy(data.to_nchw([y_tr]))))
    norms = gradient_norms(weights, tasks, args.steps, args.alpha)
    masks, taus, report = {}, {}, {}
    for r in args.ratios:
        m, counts, tau = pruning.masks_for_ratio(norms, r, objective=args.objective)
        masks[r], taus[r] = m, tau
        report[str(r)] = {"counts": counts, "tau": tau,
                          "achieved_ratio": pruning.pruning_ratio(counts)}
        print(f"ratio {r:.2f}: kept filters per layer {counts}, tau {tau:.0f}, "
              f"achieved ratio {pruning.pruning_ratio(counts):.4f}", flush=True)
    save_masks_npz(args.out, masks, taus)
    info = {"weights": args.weights, "tasks": args.tasks, "crop": args.crop, "steps": args.steps,
            "alpha": args.alpha, "seed": args.seed, "objective": args.objective,
            "seconds": time.time() - t0, "ratios": report,
            "importance_norms": [n.tolist() for n in norms]}
    text = json.dumps(info, indent=1)
    atomic_write(args.out.rsplit(".", 1)[0] + ".json", lambda f: f.write(text), binary=False)
    print(f"wrote {args.out} ({time.time() - t0:.0f} s)", flush=True)
