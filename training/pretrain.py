"""Stage 1: supervised pretraining with L1 (Eq. 2), Adam, on D_bic or on D_meta (random
Gaussian kernels)."""
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from training import common, data


def make_batch(sampler, args, rng):
    sampler.rng = rng
    inps, tgts = [], []
    for _ in range(args.batch):
        hr = sampler.crop(args.crop)
        k = None if args.degradation == "bic" else data.random_kernel(
            rng, (args.sigma_min, args.sigma_max))
        i, t = data.sr_pair(hr, args.scale, k)
        inps.append(i)
        tgts.append(t)
    return (torch.from_numpy(data.to_nchw(inps)), torch.from_numpy(data.to_nchw(tgts)))


def run(args):
    rank, world = common.setup(args.threads)
    model, opt, step, wall, history = common.build_and_resume(args, args.lr, rank)
    net = DDP(model) if world > 1 else model
    sampler = data.CropSampler(data.load_images(args.data), None)
    stop = common.StopFlag(args)
    prog = common.Progress(args.steps, step, args.log_every, rank, f"pretrain-{args.degradation}")
    t_last_ck = time.time()
    t_seg = time.time()

    def checkpoint():
        if rank == 0:
            common.save_atomic({"stage": "pretrain", "model": model.state_dict(),
                                "opt": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                                "step": step, "wall": wall + time.time() - t_seg,
                                "history": history, "args": vars(args)}, args.ckpt)

    window = []
    while step < args.steps and not common.agreed(stop.stop):
        lr = common.cosine_lr(args.lr, step, args.steps) if args.cosine else args.lr
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = make_batch(sampler, args, common.step_rng(args.seed, rank, step))
        x = x.contiguous(memory_format=torch.channels_last)
        loss = F.l1_loss(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        stop.tick()
        window.append(loss.item())
        if step % args.log_every == 0 or step == args.steps:
            history.append((step, float(np.mean(window))))
            window = []
        prog.update(step, loss.item(), lr=lr)
        if time.time() - t_last_ck > args.ckpt_every:
            checkpoint()
            t_last_ck = time.time()
    checkpoint()
    if rank == 0:
        print(f"saved {args.ckpt} at step {step}", flush=True)
    common.teardown()
