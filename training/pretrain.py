"""Stage 1: supervised pretraining with L1 (Eq. 2), Adam, on D_bic, on D_meta (random
Gaussian kernels) or on real inputs (``real``: intsr.floatpath.realdeg's distribution of
resizers, Gaussians, noise and JPEG, on the training images that are not held out for
validation). The loop itself is ``common.train_loop``."""
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from training import common, data


def make_batch(sampler, args, rng):
    sampler.rng = rng
    inps, tgts = [], []
    for _ in range(args.batch):
        hr = sampler.crop(args.crop)
        if args.degradation == "real":
            i, t = data.real_pair(hr, args.scale, rng, args.corner)
            inps.append(i)
            tgts.append(t)
            continue
        k = None if args.degradation == "bic" else data.random_kernel(
            rng, (args.sigma_min, args.sigma_max))
        i, t = data.sr_pair(hr, args.scale, k, args.grid)
        inps.append(i)
        tgts.append(t)
    return (torch.from_numpy(data.to_nchw(inps)), torch.from_numpy(data.to_nchw(tgts)))


def run(args):
    rank, world = common.setup(args.threads)
    model, opt, step, wall, history = common.build_and_resume(args, args.lr, rank)
    net = DDP(model) if world > 1 else model
    images = data.load_images(args.data)
    if args.degradation == "real":
        images = data.split(images)[0]
    sampler = data.CropSampler(images, None)

    def batch_loss(rng, logged):
        x, y = make_batch(sampler, args, rng)
        x = x.contiguous(memory_format=torch.channels_last)
        return F.l1_loss(net(x), y), {}

    common.train_loop(args, model, opt, step, wall, history, rank=rank, stage="pretrain",
                      label=f"pretrain-{args.degradation}", base_lr=args.lr, lr_name="lr",
                      batch_loss=batch_loss)
