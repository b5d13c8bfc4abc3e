"""The on-device learners side by side on the same integer engine (docs/results.md, "Learners"):
back-propagation (Algorithm 2), forward gradients (intsr.forwardgrad) and mutating masks
(intsr.mest), from both shipped starting points, on Set5 x4.

  quality  Set5 Y-PSNR after a budget of steps per method: 10 steps; the steps of the same MACs
           as 10 back-propagation steps; the steps of the same wall time; and, for forward
           gradients, the steps it needs to match back-propagation's 10 (checkpoints up to
           --max-steps; stops at the first match).
  masks    back-propagation with the shipped static masks at each pruning ratio, and MEST
           mutating them at the same Eq. 9 cost, after 10 and 50 steps.
  time     one step of each method on each Set5 pair, methods alternated step by step.
  memory   peak traced memory of one step per method at 128/256/512 px (random images), next
           to Eq. 16 (both readings) and the forward method's own formula (intsr.cost).

    python benchmarks/learners.py --data ../shared/data/set5 \
        --kernel ../shared/data/kernels/gauss_iso_s1.6_15.npy \
        --kernel ../shared/data/kernels/gauss_iso_s2.4_15.npy --json docs/data/learners.json
"""
import argparse
import json
import os
import time
import tracemalloc

import numpy as np

from intsr import cost, threads
from intsr.arch import HALO, layer_shapes
from intsr.evaluate import load_hr, make_cases
from intsr.floatpath.convert import lr_to_fixed, weights_to_int
from intsr.floatpath.metrics import psnr_y
from intsr.forwardgrad import TILE
from intsr.model import IntNet
from intsr.online import SR_TILE, make_learner
from intsr.pruning import RATIOS
from intsr.weights import WEIGHTS_DIR, load_model

from machine import cpu_name

STARTS = ("meta.npz", "pretrained_gauss.npz")
CHECKPOINTS = (1, 2, 3, 5, 10, 20, 50, 100, 200, 300, 500, 700, 1000)


class Run:
    """One learner adapting on one case."""

    def __init__(self, case, weights, masks, lr, method, options, seed=0):
        self.case, self.net = case, IntNet(weights_to_int(weights), masks)
        self.learner = make_learner(self.net, method, seed, options)
        tgt = case.pair[1]
        self.lr = lr_to_fixed(lr / self.learner.lr_divisor(), tgt.size)
        self.done = 0

    def advance(self, to):
        while self.done < to:
            self.learner.step(*self.case.pair, *self.lr)
            self.done += 1

    def psnr(self):
        sr = self.net.predict(self.case.up, tile=SR_TILE)
        return psnr_y(sr / 255.0, self.case.hr / 255.0, 4)


def set_psnr(runs, steps):
    for r in runs:
        r.advance(steps)
    return float(np.mean([r.psnr() for r in runs]))


def forward_passes_macs(h, w, options):
    """MACs of one forward-gradient step on an h x w pair: its loss passes, each on tiles with
    a HALO margin."""
    tile = options.get("tile", TILE)
    per_px = sum(int(np.prod(s)) for s in layer_shapes())
    area = 0
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            area += (min(h, y + tile + HALO) - max(0, y - HALO)) * \
                (min(w, x + tile + HALO) - max(0, x - HALO))
    n = options.get("directions", 4)
    passes = 2 * n if options.get("estimate", "central") == "central" else n + 1
    return passes * area * per_px


def quality(cases_by_kernel, start, lr, fw_configs, step_seconds, max_steps, log):
    weights, masks, _ = load_model(WEIGHTS_DIR / start)
    all_cases = [c for cases in cases_by_kernel for c in cases]
    bp = [Run(c, weights, masks, lr, "backprop", {}) for c in all_cases]
    init = set_psnr(bp, 0)
    bp10 = set_psnr(bp, 10)
    bp_macs = float(np.mean([cost.step_macs(*c.pair[0].shape[:2]) for c in all_cases]))
    out = {"start": start, "init": init, "backprop_10": bp10, "backprop_macs": bp_macs,
           "forward": []}
    log(f"{start}: init {init:.3f}, backprop 10 steps {bp10:.3f}")
    eq_time = max(1, int(round(10 * step_seconds["backprop"] / step_seconds["forward"])))
    for options in fw_configs:
        fw_macs = float(np.mean([forward_passes_macs(*c.pair[0].shape[:2], options)
                                 for c in all_cases]))
        eq_macs = max(1, int(round(10 * bp_macs / fw_macs)))
        fw = [Run(c, weights, masks, lr, "forward", options) for c in all_cases]
        curve, matched = {}, None
        for s in sorted(set(CHECKPOINTS + (eq_macs, eq_time))):
            if s > max_steps:
                break
            t0 = time.perf_counter()
            curve[s] = set_psnr(fw, s)
            log(f"{start} forward {options} {s} steps: {curve[s]:.3f} dB "
                f"({time.perf_counter() - t0:.0f} s)")
            if curve[s] >= bp10 and matched is None:
                matched = s
            if matched is not None and s >= max(eq_macs, eq_time, 10):
                break
        out["forward"].append({"options": options, "macs": fw_macs, "equal_macs_steps": eq_macs,
                               "equal_time_steps": eq_time, "curve": curve,
                               "steps_to_match": matched})
    return out


def masks_compare(cases_by_kernel, start, lr, log, steps=(10, 50)):
    weights = load_model(WEIGHTS_DIR / start)[0]
    all_cases = [c for cases in cases_by_kernel for c in cases]
    rows = []
    for ratio in RATIOS:
        masks = load_model(prune=ratio)[1]
        methods = ("backprop", "mest") if 0 < ratio else ("backprop",)
        for method in methods:
            runs = [Run(c, weights, masks, lr, method, {}) for c in all_cases]
            row = {"start": start, "ratio": ratio, "method": method,
                   "psnr": {s: set_psnr(runs, s) for s in steps}}
            log(f"{start} {method} prune {ratio}: {row['psnr']}")
            rows.append(row)
    return rows


def step_times(cases, lr, fw_options, repeats, log):
    """Seconds per step of each method on each pair, methods alternated step by step so that a
    slow stretch of the machine lands on all of them."""
    weights, masks, _ = load_model()
    methods = {"backprop": {}, "forward": fw_options, "mest": {}}
    times = {m: [] for m in methods}
    for c in cases:
        runs = {m: Run(c, weights, masks, lr, m, o) for m, o in methods.items()}
        for r in runs.values():
            r.advance(1)  # compile, warm the caches
        for _ in range(repeats):
            for m, r in runs.items():
                t0 = time.perf_counter()
                r.advance(r.done + 1)
                times[m].append(time.perf_counter() - t0)
    out = {m: float(np.median(v)) for m, v in times.items()}
    log(f"median step seconds over Set5 pairs: {out}")
    return out


def memory(sizes, fw_options, log):
    rng = np.random.default_rng(0)
    weights = load_model()[0]
    rows = []
    for size in sizes:
        inp = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        tgt = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        for ratio in RATIOS:
            masks = load_model(prune=ratio)[1]
            for method in ("backprop", "mest") if ratio else ("backprop", "forward"):
                net = IntNet(weights_to_int(weights), masks)
                learner = make_learner(net, method, 0, fw_options if method == "forward" else
                                       {"every": 1} if method == "mest" else {})
                lrf = lr_to_fixed(0.01, tgt.size)
                learner.step(inp, tgt, *lrf)
                tracemalloc.start()
                learner.step(inp, tgt, *lrf)
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                row = {"size": size, "ratio": ratio, "method": method, "peak_kb": peak / 1000,
                       "eq16_printed_kb": cost.memory_kb(size, masks=masks, reading="printed"),
                       "eq16_table5_kb": cost.memory_kb(size, masks=masks)}
                if method == "forward":
                    row["formula_kb"] = cost.forward_memory_kb(
                        size, fw_options.get("tile", TILE), learner.layers, masks)
                log(f"memory {size} px {method} prune {ratio}: {row['peak_kb']:.0f} KB")
                rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--kernel", action="append", required=True)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--forward", action="append", default=None,
                    help="LAYERS:DIRECTIONS of a forward-gradient configuration (repeatable; "
                         "default all:4 and 8:4); the first is timed and traced")
    ap.add_argument("--max-steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--parts", nargs="+", default=["quality", "masks", "time", "memory"])
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    fw_configs = [{"layers": f.split(":")[0], "directions": int(f.split(":")[1])}
                  for f in (a.forward or ["all:4", "8:4"])]
    images = load_hr(a.data, 4)
    cases = [make_cases(images, np.load(k), 4) for k in a.kernel]
    out = json.load(open(a.json)) if os.path.exists(a.json) else {}
    out.update(cpu=cpu_name(), threads=threads.POLICY.report(),
               kernels=[os.path.basename(k) for k in a.kernel], lr=a.lr)

    def log(msg):
        print(msg, flush=True)

    def save():
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)

    if "time" in a.parts:
        out["step_seconds"] = step_times(cases[0], a.lr, fw_configs[0], a.repeats, log)
        save()
    if "memory" in a.parts:
        out["memory"] = memory(a.sizes, fw_configs[0], log)
        save()
    if "masks" in a.parts:
        out["masks"] = [r for s in STARTS for r in masks_compare(cases, s, a.lr, log)]
        save()
    if "quality" in a.parts:
        out["quality"] = [quality(cases, s, a.lr, fw_configs, out["step_seconds"], a.max_steps,
                                  log) for s in STARTS]
        save()


if __name__ == "__main__":
    main()
