"""Stage 4: a checkpoint (or state_dict) -> ``torch.save`` state_dict (.pt) and/or .npz;
with ``--blend W --share T``, the weights T * checkpoint + (1 - T) * W (a straight line in
weight space between two fine-tunings of one model, which keeps some of each: how
weights/meta_blind.npz was made, weights/README.md)."""
import numpy as np
import torch

from intsr.io import atomic_write
from intsr.weights import load_weights, save_weights_npz
from training import common
from training.net import SRNet


def run(args):
    model = SRNet()
    common.load_init_weights(model, args.ckpt)
    sd = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    want = [v.numpy().transpose(2, 3, 1, 0) for v in sd.values()]
    if args.blend is not None:
        if not 0.0 <= args.share <= 1.0:
            raise SystemExit(f"--share {args.share}: a share in [0, 1]")
        other = load_weights(args.blend)
        # float32 arithmetic, in this order: the file is reproducible bit for bit
        want = [((1 - args.share) * b + args.share * a).astype(np.float32)
                for a, b in zip(want, other, strict=True)]
        sd = {k: torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
              for k, w in zip(sd, want, strict=True)}
    if args.pt:
        atomic_write(args.pt, lambda f: torch.save(sd, f))
        got = load_weights(args.pt)  # what the engine will see, read back without torch
        assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
        print(f"wrote {args.pt}")
    if args.npz:
        save_weights_npz(args.npz, want)
        assert all(np.array_equal(a, b) for a, b in zip(load_weights(args.npz), want, strict=True))
        print(f"wrote {args.npz}")
