"""Stage 2: MAML (Eq. 3-5). Inner loop: ``inner_steps`` plain SGD steps with rate alpha and mean
L1 on D_tr = (up(son) -> LR); outer loop: Adam (rate beta) on the D_te = (up(LR) -> HR) loss of
the adapted weights, averaged over a batch of tasks (each task = one HR patch + one random
Gaussian kernel; with ``--degradation blind`` a draw of the real-input model and the son blind
mode would make of it, data.task_blind, and a share ``--told`` of the paper's tasks, so that the
point stays one the steps improve when the kernel is right). Second order by default;
``--first-order`` drops the inner Hessian terms.

The inner loop copies what the device does at test time (plain SGD, mean L1, rate alpha), so the
alpha used here is the engine's default learning rate. The loop itself is ``common.train_loop``.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from training import common, data
from training.net import functional_forward


def inner_adapt(weights, x_tr, y_tr, steps, alpha, first_order):
    """Eq. 3 applied ``steps`` times. With second order the graph is kept so that the outer
    gradient flows through the inner updates."""
    w = list(weights)
    for _ in range(steps):
        loss = F.l1_loss(functional_forward(x_tr, w), y_tr)
        grads = torch.autograd.grad(loss, w, create_graph=not first_order)
        w = [p - alpha * g for p, g in zip(w, grads, strict=True)]
    return w


class MetaObjective(nn.Module):
    """Eq. 4 for a batch of tasks as one module call, so DDP's hooks see a plain forward and a
    plain backward (the inner autograd.grad calls stay inside forward)."""

    def __init__(self, model, inner_steps, alpha, first_order):
        super().__init__()
        self.model = model
        self.inner_steps, self.alpha, self.first_order = inner_steps, alpha, first_order

    def forward(self, x_tr, y_tr, x_te, y_te):
        theta = [c.weight for c in self.model.convs]
        total = 0.0
        for i in range(x_tr.shape[0]):
            w = inner_adapt(theta, x_tr[i:i + 1], y_tr[i:i + 1], self.inner_steps, self.alpha,
                            self.first_order)
            total = total + F.l1_loss(functional_forward(x_te[i:i + 1], w), y_te[i:i + 1])
        return total / x_tr.shape[0]


def make_tasks(sampler, args, rng, estimator=None):
    sampler.rng = rng
    cols = ([], [], [], [])
    for _ in range(args.tasks):
        if args.degradation == "blind" and not (args.told > 0 and rng.uniform() < args.told):
            parts = data.task_blind(sampler.crop(args.crop), args.scale, rng, estimator,
                                    args.corner, args.clean)
        else:
            k = data.random_kernel(rng, (args.sigma_min, args.sigma_max))
            parts = data.task(sampler.crop(args.crop), k, args.scale, args.grid)
        for c, a in zip(cols, parts, strict=True):
            c.append(a)
    return [torch.from_numpy(data.to_nchw(c)) for c in cols]


@torch.no_grad()
def _unadapted_te_loss(model, x_te, y_te):
    return F.l1_loss(model(x_te), y_te).item()


def run(args):
    if args.crop % (args.scale * args.scale):
        raise SystemExit(f"--crop must be a multiple of scale^2 = {args.scale ** 2}")
    rank, world = common.setup(args.threads)
    model, opt, step, wall, history = common.build_and_resume(args, args.beta, rank)
    obj = MetaObjective(model, args.inner_steps, args.alpha, args.first_order)
    net = DDP(obj) if world > 1 else obj
    images = data.load_images(args.data)
    estimator = None
    if args.degradation == "blind":
        from intsr.blind import estimator as shipped_estimator
        images, estimator = data.split(images)[0], shipped_estimator(args.scale)
    sampler = data.CropSampler(images, None)

    def batch_loss(rng, logged):
        x_tr, y_tr, x_te, y_te = [t.contiguous(memory_format=torch.channels_last)
                                  for t in make_tasks(sampler, args, rng, estimator)]
        # Adaptation gain = unadapted minus adapted D_te loss on the same (logged) batch; the
        # unadapted loss is only a monitor and costs a forward, so only logged steps pay it.
        loss0 = _unadapted_te_loss(model, x_te, y_te) if logged else None
        loss = net(x_tr, y_tr, x_te, y_te)
        return loss, ({"adapt_gain_last": loss0 - loss.item()} if logged else {})

    common.train_loop(args, model, opt, step, wall, history, rank=rank, stage="meta",
                      label="maml-" + ("fo" if args.first_order else "so"), base_lr=args.beta,
                      lr_name="beta", batch_loss=batch_loss,
                      ckpt_extra={"alpha": args.alpha, "inner_steps": args.inner_steps,
                                  "first_order": args.first_order})
