"""What the self-ensemble costs a user: blind `intsr adapt` (no option) and `intsr sr` on LR
images of a few sizes, with the default (auto) and with `--ensemble 1`, alternated call by call
in one process (machine.alternated); median seconds of the whole call, and how many passes auto
ran.

    python benchmarks/ensemble_cost.py --sizes 64 128 256 --repeats 5 [--json out.json]
"""
import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import intsr  # noqa: E402
from intsr.kernels import dispatch  # noqa: E402

from machine import alternated, cpu_name, finish  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def lr_of(side):
    """A ``side``-pixel LR image: the bundled butterfly, bicubic-shrunk to a quarter and tiled."""
    hr = np.asarray(Image.open(ROOT / "tests" / "data" / "butterfly.png").convert("RGB"))
    lr = np.asarray(Image.fromarray(hr).resize((hr.shape[1] // 4, hr.shape[0] // 4),
                                               Image.BICUBIC))
    reps = -(-side // lr.shape[0]), -(-side // lr.shape[1])
    return np.ascontiguousarray(np.tile(lr, (*reps, 1))[:side, :side])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 256])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for side in args.sizes:
        lr = lr_of(side)
        rep = {}
        fns = {"adapt_auto": lambda lr=lr, rep=rep: intsr.adapt(lr, report=rep),
               "adapt_one": lambda lr=lr: intsr.adapt(lr, ensemble=1),
               "sr_auto": lambda lr=lr: intsr.super_resolve(lr),
               "sr_one": lambda lr=lr: intsr.super_resolve(lr, ensemble=1)}
        # the dict is built in order: the calls have filled ``rep`` before it is read
        row = {"lr_side": side, "out_side": 4 * side, **alternated(fns, args.repeats)["idle"],
               "adapt_auto_passes": len(rep["ensemble"])}
        rows.append(row)
        print(f"LR {side} px -> {4 * side} px: adapt auto ({row['adapt_auto_passes']} passes) "
              f"{row['adapt_auto']:.3f} s, one pass {row['adapt_one']:.3f} s; sr auto "
              f"{row['sr_auto']:.3f} s, one pass {row['sr_one']:.3f} s", flush=True)
    finish(rows, f"CPU: {cpu_name()}, kernels {dispatch.PATH}", args.json)


if __name__ == "__main__":
    main()
