"""``python -m training <stage> ...``: one subcommand per offline stage."""
import argparse
import importlib

from intsr.pruning import RATIOS
from training.estimator import add_arguments as add_estimator_arguments


def _common(p):
    p.add_argument("--data", nargs="+", required=False, default=[],
                   help="HR training image folders (e.g. .../train/bsds500 .../train/t91)")
    p.add_argument("--ckpt", required=True, help="checkpoint file; resumed from if it exists")
    p.add_argument("--steps", type=int, required=True, help="total steps of this stage")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads per process")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--ckpt-every", type=float, default=300.0, help="seconds between checkpoints")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--init", default=None, help="initial weights (.pt/.npz/checkpoint) for a "
                   "fresh run; ignored when --ckpt exists")
    p.add_argument("--stop-after", type=int, default=0,
                   help="end this invocation after N steps (checkpointed; rerun to continue)")
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="end this invocation after this wall time (checkpointed)")
    p.add_argument("--sigma-min", type=float, default=0.8)
    p.add_argument("--sigma-max", type=float, default=3.0)
    p.add_argument("--grid", choices=["centre", "corner"], default="centre",
                   help="sampling grid of Eq. 1 for LR images and sons (intsr.kernels.resample)")


def build_parser():
    ap = argparse.ArgumentParser(prog="python -m training")
    sub = ap.add_subparsers(dest="stage", required=True)

    p = sub.add_parser("pretrain", help="Eq. 2: L1 + Adam on D_bic or D_meta")
    _common(p)
    p.add_argument("--degradation", choices=["bic", "gauss", "real"], default="bic",
                   help="bic: Pillow bicubic; gauss: random Gaussians (Eq. 1); real: the "
                        "real-input model (intsr.floatpath.realdeg), held-out images excluded")
    p.add_argument("--corner", type=float, default=0.0,
                   help="with --degradation real: the share of Gaussian blurs on the corner "
                        "grid (the network input stays the centred upsampling)")
    p.add_argument("--batch", type=int, default=16, help="crops per process per step")
    p.add_argument("--crop", type=int, default=96, help="HR crop size (multiple of scale)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--cosine", action=argparse.BooleanOptionalAction, default=True)

    p = sub.add_parser("meta", help="Eq. 3-5: MAML from a pretrained model")
    _common(p)
    p.add_argument("--tasks", type=int, default=4, help="tasks per process per meta step")
    p.add_argument("--crop", type=int, default=192, help="HR task patch (multiple of scale^2)")
    p.add_argument("--inner-steps", type=int, default=5)
    p.add_argument("--alpha", type=float, default=0.01, help="inner SGD rate (Eq. 3)")
    p.add_argument("--beta", type=float, default=1e-4, help="outer Adam rate (Eq. 5)")
    p.add_argument("--first-order", action="store_true", help="first-order MAML")
    p.add_argument("--cosine", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--degradation", choices=["gauss", "blind"], default="gauss",
                   help="gauss: random Gaussians, the son made with the true kernel (the "
                        "paper); blind: the real-input model, the son made as blind mode makes "
                        "it (the estimated kernel and noise), held-out images excluded")
    p.add_argument("--told", type=float, default=0.0,
                   help="with --degradation blind: the share of tasks that are the paper's "
                        "(a Gaussian, the son made with the true kernel)")
    p.add_argument("--corner", type=float, default=0.0,
                   help="with --degradation blind: the share of Gaussian blurs on the corner grid")
    p.add_argument("--clean", action="store_true",
                   help="with --degradation blind: blur only, no noise or JPEG (blind mode "
                        "adapts only an image that reads clean from the meta-learned point)")

    p = sub.add_parser("masks", help="Eq. 6-9: gradient masks for several pruning ratios")
    p.add_argument("--weights", required=True)
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--out", required=True, help="masks .npz")
    p.add_argument("--tasks", type=int, default=64, help="|D_gp|: number of D_meta tasks")
    p.add_argument("--crop", type=int, default=256, help="HR patch per task (multiple of 16)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--alpha", type=float, default=0.01)
    p.add_argument("--steps", type=int, default=1, help="adaptation steps per task")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS),
                   help="pruning ratios (default: intsr.pruning.RATIOS, the shipped ones)")
    p.add_argument("--grid", choices=["centre", "corner"], default="centre",
                   help="sampling grid of Eq. 1 for LR images and sons (intsr.kernels.resample)")
    p.add_argument("--objective", choices=["eq8", "kept"], default="kept",
                   help="per-layer value: I_(c), the kept share (default), or Eq. 8 read "
                        "literally, sum_s I_(s) (intsr.pruning)")

    p = sub.add_parser("estimator", help="blind mode's kernel estimator (training/estimator.py)")
    _common(p)
    add_estimator_arguments(p)

    p = sub.add_parser("export", help="checkpoint -> .pt state_dict and/or .npz")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--pt", default=None)
    p.add_argument("--npz", default=None)
    p.add_argument("--blend", default=None,
                   help="weights (.npz/.pt) to blend the checkpoint with (see --share)")
    p.add_argument("--share", type=float, default=1.0,
                   help="with --blend: the checkpoint's share T of T * ckpt + (1 - T) * blend")

    p = sub.add_parser("eval", help="float PSNR on a test set with n SGD steps (device protocol, "
                       "through the intsr.evaluate harness)")
    p.add_argument("--weights", required=True, help=".pt/.npz/checkpoint")
    p.add_argument("--images", required=True, help="folder of HR test images (e.g. Set5)")
    p.add_argument("--kernels", nargs="+", required=True, help="kernel files (.npy/.mat)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--sgd-steps", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--masks", default=None, help="masks .npz (default with --ratio > 0: the "
                   "shipped masks)")
    p.add_argument("--ratio", type=float, default=0.0,
                   help="pruning ratio of the masks (one of intsr.pruning.RATIOS)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--grid", choices=["centre", "corner"], default="centre",
                   help="sampling grid of Eq. 1 for the LR images and sons")
    p.add_argument("--json", default=None, help="write the records and the arguments here")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    mod = {"pretrain": "pretrain", "meta": "meta", "masks": "masks", "export": "export",
           "eval": "evaluate", "estimator": "estimator"}[args.stage]
    importlib.import_module(f"training.{mod}").run(args)
