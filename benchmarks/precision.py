"""Multi-precision on-device training, measured (docs/results.md, "Multi-precision"):

  sensitivity  Set5 Y-PSNR after 10 steps when one tensor family of one layer changes width
               (activations, activation gradients or forward weights to 16 bits; masters to
               16), all else int8 as the paper; with the int8 and float references.
  timing       the step time of each single change against int8 (128 px, alternated step by
               step, medians): the time cost the allocation uses.
  allocate     intsr.precision.allocate on the sensitivity gains at several Eq. 16 budgets
               (32 px, Table-5 reading; extra memory over int8) and, with --time-budget, a
               step-time budget on the measured single-change times; each allocation's own
               time is measured and the time budget tightened until it fits. Each allocation
               is evaluated the same way: the PSNR-vs-memory curve; the +20 % one under +30 %
               time is the shipped "mixed" (x4; "mixed-x2" for x2: --scale 2 --grid corner).
  profiles     named precisions given as NAME=JSON, evaluated the same way.
  sr           the SR pass's activation widths (Precision.sr_act) on top of training widths
               (--sr-base, default the shipped "mixed"): after the 10 steps, SR with 16-bit
               activations in layers 1..k for every k (the same trained network for every k),
               Y-PSNR and the SR time of a 512 px image against k = 0 (alternated, medians);
               the longest prefix within --time-budget (default 30 %) is the shipped sr_act.
  adapt        the whole `intsr.adapt` (son, 10 steps, SR pass) per profile (--adapt-profiles)
               on each LR image of the first kernel, profiles alternated call by call, medians
               of 9: what a user waits for, SR pass included.

    python benchmarks/precision.py --data ../shared/data/set5 --kernel K.npy [...] \
        --parts sensitivity --json docs/data/precision_sensitivity.json
"""
import argparse
import json
import os
import time
from dataclasses import replace

import numpy as np

from intsr import cost, threads
from intsr.evaluate import load_hr, make_cases
from intsr.floatpath.convert import lr_to_fixed, weights_to_int
from intsr.floatpath.metrics import psnr_y
from intsr.floatpath.network import FloatNet
from intsr.model import IntNet
from intsr.online import SR_TILE
from intsr.precision import INT8, LENGTH, WIDTHS, Precision, allocate
from intsr.weights import load_model, shipped_precision

from bench_step import alternated_medians
from machine import cpu_name


def trained(case, weights, masks, lr, precision, steps):
    """An IntNet of ``precision`` after ``steps`` steps on the case's training pair."""
    inp, tgt = case.pair
    net = IntNet(weights_to_int(weights), masks, precision=precision)
    mult, shift = lr_to_fixed(lr, tgt.size)
    for _ in range(steps):
        net.step(inp, tgt, mult, shift)
    return net


def shave(case):
    """The scale of a case: the pixels Y-PSNR shaves."""
    return case.hr.shape[0] // case.lr.shape[0]


def mean_psnr(cases, weights, masks, lr, precision, steps):
    """Mean Y-PSNR after ``steps`` steps; None precision: the float reference."""
    out = []
    for c in cases:
        inp, tgt = c.pair
        if precision is None:
            net = FloatNet(weights, masks)
            for _ in range(steps):
                net.step(inp / np.float32(255), tgt / np.float32(255), lr)
            sr = net.predict(c.up / np.float32(255))
        else:
            net = trained(c, weights, masks, lr, precision, steps)
            sr = net.predict(c.up, tile=SR_TILE) / 255.0
        out.append(psnr_y(sr, c.hr / 255.0, shave(c)))
    return float(np.mean(out))


def step_time_ratio(precision, weights, masks, repeats=9, size=128):
    """Median step time of ``precision`` over int8's, the two alternated step by step."""
    rng = np.random.default_rng(0)
    inp = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    tgt = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    lrf = lr_to_fixed(0.01, tgt.size)
    nets = {k: IntNet(weights_to_int(weights), masks, precision=p)
            for k, p in (("int8", INT8), ("other", precision))}
    med = alternated_medians({k: (lambda n=n: n.step(inp, tgt, *lrf)) for k, n in nets.items()},
                             repeats)
    return med["other"] / med["int8"]


def sr_prefixes(cases, weights, masks, lr, base, steps, time_budget, repeats=9, size=512):
    """The ``sr`` part: [{layers, sr_act, psnr, time_ratio}] for 16-bit SR activations in
    layers 1..k, k = 0..7, after ``steps`` steps of ``base``; and the chosen row."""
    n = LENGTH["act"]
    widths = [tuple(16 if layer < k else b for layer, b in enumerate(base.act))
              for k in range(n + 1)]
    psnr = [[] for _ in widths]
    for c in cases:
        net = trained(c, weights, masks, lr, base, steps)
        for k, sr_act in enumerate(widths):
            net.prec = replace(base, sr_act=sr_act)
            psnr[k].append(psnr_y(net.predict(c.up, tile=SR_TILE) / 255.0, c.hr / 255.0,
                                  shave(c)))
    img = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    nets = {k: IntNet(weights_to_int(weights), masks, precision=replace(base, sr_act=sr_act))
            for k, sr_act in enumerate(widths)}
    med = alternated_medians({k: (lambda n=n: n.predict(img, tile=SR_TILE))
                              for k, n in nets.items()}, repeats)
    rows = [{"layers": k, "sr_act": list(w), "psnr": float(np.mean(p)),
             "time_ratio": med[k] / med[0]}
            for k, (w, p) in enumerate(zip(widths, psnr, strict=True))]
    chosen = max((r for r in rows if r["time_ratio"] - 1 <= time_budget / 100),
                 key=lambda r: r["layers"])
    return rows, chosen


def single_changes():
    """Every (family, layer, bits) one step away from INT8."""
    return [(fam, layer, [b for b in WIDTHS[fam] if b != getattr(INT8, fam)[layer]][0])
            for fam in WIDTHS for layer in range(LENGTH[fam])]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--kernel", action="append", required=True)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--scale", type=int, default=4, help="the shipped weights of this scale")
    ap.add_argument("--grid", choices=("centre", "corner"), default="centre",
                    help="sampling grid of Eq. 1 (docs/grid.md)")
    ap.add_argument("--parts", nargs="+", default=["sensitivity"])
    ap.add_argument("--profile", action="append", default=[],
                    help="NAME=JSON of a precision to evaluate (profiles part)")
    ap.add_argument("--budgets", type=float, nargs="+", default=[0, 5, 10, 20, 40, 90],
                    help="extra Eq. 16 memory over int8, in percent (allocate part)")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="extra step work over int8 in percent (cost.step_work), or none")
    ap.add_argument("--adapt-profiles", nargs="+", default=["int8", "mixed", "small", "int16"],
                    help="shipped profiles the adapt part times")
    ap.add_argument("--sr-base", default="mixed",
                    help="training widths under the sr part: a shipped profile or a JSON precision")
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    weights, masks, lr = load_model(scale=a.scale)
    images = load_hr(a.data, a.scale)
    cases = [c for k in a.kernel for c in make_cases(images, np.load(k), a.scale, a.grid)]
    out = json.load(open(a.json)) if os.path.exists(a.json) else {}
    out.update(cpu=cpu_name(), threads=threads.POLICY.report(),
               scale=a.scale, grid=a.grid, kernels=[os.path.basename(k) for k in a.kernel],
               steps=a.steps, lr=lr)

    def run(name, precision):
        t0 = time.perf_counter()
        p = mean_psnr(cases, weights, masks, lr, precision, a.steps)
        print(f"{name}: {p:.4f} dB ({time.perf_counter() - t0:.0f} s)", flush=True)
        return p

    def save():
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)

    if "sensitivity" in a.parts:
        out["fp"] = run("fp", None)
        out["int8"] = run("int8", INT8)
        out["sensitivity"] = []
        for fam, layer, bits in single_changes():
            p = run(f"{fam} layer {layer + 1} -> {bits}", INT8.with_bits(fam, layer, bits))
            out["sensitivity"].append({"family": fam, "layer": layer, "bits": bits, "psnr": p})
            save()
    if "timing" in a.parts:
        for r in out["sensitivity"]:
            r["time_ratio"] = step_time_ratio(
                INT8.with_bits(r["family"], r["layer"], r["bits"]), weights, masks)
            print(f"{r['family']} layer {r['layer'] + 1}: step time x{r['time_ratio']:.3f}",
                  flush=True)
        save()
    if "allocate" in a.parts:
        # costs of each single change: Eq. 16 bits (32 px, Table-5 reading) and, with a time
        # budget, its measured extra step time in units of 0.1 % (additive over single
        # changes, so each allocation's own time is measured and the budget tightened by 1 %
        # until it fits)
        base_bits = sum(cost.memory_bits(precision=INT8))
        base_work = cost.step_work(32, 32)
        items = []
        for r in out["sensitivity"]:
            prec = INT8.with_bits(r["family"], r["layer"], r["bits"])
            mem = sum(cost.memory_bits(precision=prec)) - base_bits
            slow = max(0, int(round(1000 * (r.get("time_ratio", 1) - 1))))
            items.append(((r["family"], r["layer"], r["bits"]), r["psnr"] - out["int8"],
                          mem if a.time_budget is None else (mem, slow)))
        key = "allocations" if a.time_budget is None else "allocations_timed"
        out[key] = []
        for pct in a.budgets:
            tpct = a.time_budget
            while True:
                budget = int(base_bits * pct / 100)
                if tpct is not None:
                    budget = (budget, int(10 * tpct))
                names, gain, _ = allocate(items, budget)
                prec = INT8
                for fam, layer, bits in names:
                    prec = prec.with_bits(fam, layer, bits)
                work = cost.step_work(32, 32, precision=prec) / base_work - 1
                if a.time_budget is None:
                    break
                time_ratio = step_time_ratio(prec, weights, masks)
                print(f"+{pct:g} % memory, time budget +{tpct:g} %: measured "
                      f"x{time_ratio:.3f}", flush=True)
                if time_ratio - 1 <= a.time_budget / 100:
                    break
                tpct -= 1
            row = {"budget_pct": pct, "time_budget_pct": a.time_budget,
                   "precision": prec.to_dict(), "predicted_gain": gain,
                   "memory_kb": cost.memory_kb(precision=prec),
                   "extra_pct": 100 * (sum(cost.memory_bits(precision=prec)) / base_bits - 1),
                   "work_pct": 100 * work,
                   "time_pct": None if a.time_budget is None else 100 * (time_ratio - 1),
                   "psnr": run(f"allocation at +{pct:g} % memory"
                               + ("" if tpct is None else f", +{tpct:g} % work"), prec)}
            out[key].append(row)
            save()
    if "sr" in a.parts:
        base = (Precision.from_dict(json.loads(a.sr_base)) if a.sr_base.startswith("{")
                else shipped_precision(a.sr_base))
        rows, chosen = sr_prefixes(cases, weights, masks, lr, replace(base, sr_act=None), a.steps,
                                   30 if a.time_budget is None else a.time_budget)
        for r in rows:
            print(f"SR activations 16-bit in layers 1..{r['layers']}: {r['psnr']:.4f} dB, "
                  f"SR time x{r['time_ratio']:.3f}", flush=True)
        out["sr"] = {"rows": rows, "chosen": chosen, "size": 512,
                     "kernels": [os.path.basename(k) for k in a.kernel]}
        save()
    if "adapt" in a.parts:
        from intsr.online import adapt
        names = a.adapt_profiles
        k = np.load(a.kernel[0])
        rows = []
        for c in cases[:len(images)]:
            med = alternated_medians({p: (lambda p=p, c=c: adapt(c.lr, k, steps=a.steps,
                                                                 precision=p, scale=a.scale,
                                                                 grid=a.grid))
                                      for p in names}, 9)
            rows.append({"image": c.name, "lr_shape": list(c.lr.shape[:2]),
                         "ms": {p: 1000 * med[p] for p in names}})
            print(c.name, {p: round(1000 * med[p]) for p in names}, flush=True)
        out["adapt"] = {"rows": rows, "kernel": os.path.basename(a.kernel[0]), "profiles": names}
        save()
    if "profiles" in a.parts:
        out.setdefault("profiles", {})
        for spec in a.profile:
            name, _, js = spec.partition("=")
            prec = Precision.from_dict(json.loads(js))
            out["profiles"][name] = {"precision": prec.to_dict(), "psnr": run(name, prec)}
            save()
    save()


if __name__ == "__main__":
    main()
