"""Does pruned work shrink as Eq. 17 predicts? One integer step per pruning ratio in turn (the
ratios alternated step by step, so a slow stretch of the machine lands on all of them), per
size; the measured speed-up over the unpruned step next to the MAC ratio the kernels execute
(cost.step_macs, Eq. 17's count).

    python benchmarks/pruned_scaling.py --sizes 128 256 --prune 0.5 0.85 --repeats 15 \
        --json docs/data/pruned_scaling.json
"""
import argparse
import json
from functools import partial

import numpy as np

from intsr import cost
from intsr.floatpath.convert import lr_to_fixed, weights_to_int
from intsr.kernels.dispatch import PATH
from intsr.model import IntNet
from intsr.weights import load_model

from bench_step import alternated_medians
from machine import cpu_name


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--prune", type=float, nargs="+", default=[0.5, 0.85])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for size in a.sizes:
        inp = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        tgt = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        lrf = lr_to_fixed(0.01, tgt.size)
        steps, macs = {}, {}
        for p in [0.0] + a.prune:
            w, masks, _ = load_model(None, prune=p)
            net = IntNet(weights_to_int(w), masks)
            steps[p] = partial(net.step, inp, tgt, *lrf)
            macs[p] = cost.step_macs(size, size, masks)
        med = alternated_medians(steps, a.repeats)
        for p in a.prune:
            row = {"size": size, "prune": p, "ms": 1000 * med[p], "ms_unpruned": 1000 * med[0.0],
                   "speedup": med[0.0] / med[p], "predicted": macs[0.0] / macs[p],
                   "cpu": cpu_name(), "path": PATH}
            row["of_prediction"] = row["speedup"] / row["predicted"]
            rows.append(row)
            print(f"{size:4d} px, {p:.0%} masks: {row['ms']:.1f} vs {row['ms_unpruned']:.1f} ms, "
                  f"x{row['speedup']:.2f} measured, x{row['predicted']:.2f} Eq. 17 "
                  f"({row['of_prediction']:.0%} of it)", flush=True)
    print(f"CPU: {cpu_name()}, kernels {PATH}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
