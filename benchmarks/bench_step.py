"""One adaptation step (forward, L1, backward, SGD) side by side in one run: the integer engine
(at each --precision profile), the NumPy float32 reference and PyTorch FP32 (channels_last;
optional), at several image sizes and pruning ratios. The engines alternate step by step (a
slow stretch of a noisy machine lands on all of them); medians of the repeats; ratios are
against the integer engine.

``--target avx2|avxvnni|avx512|native`` runs the whole benchmark as if on another x86 CPU: Numba
compiles for that target (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES, a separate kernel cache) and
the engine dispatches by it (intsr.kernels.dispatch), PyTorch limits itself likewise
(ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA). avx2: Haswell-class, no AVX-512; avxvnni: Alder
Lake-class, AVX2 with the VEX-encoded VNNI, no AVX-512; avx512: Skylake-server-class, AVX-512
without VNNI.

Working memory: the integer engine's peak traced allocations during one step (tracemalloc
sees NumPy arrays: every transient buffer counts), next to Eq. 16 for the same size and masks
in both readings (intsr.cost); PyTorch's is the bytes autograd saves for backward plus the
gradients (saved-tensor hooks: its transient buffers are not counted, which favours it).

``--threading`` adds the integer engine (first profile) at fixed settings beside the policy's
own: two threads, one thread, and one thread with the side thread (intsr.threads.side_on), so
the threading choices are compared under each --load in the same run.

    python benchmarks/bench_step.py [--sizes 64 128 256] [--prune 0 0.5 0.85] [--threads 2]
        [--precision int8 mixed] [--target avx2] [--load idle busy] [--threading]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import tracemalloc
from functools import partial

import numba
import numpy as np

from intsr import cost, threads
from intsr.floatpath.convert import lr_to_fixed, weights_to_int
from intsr.floatpath.network import FloatNet
from intsr.model import IntNet
from intsr.weights import load_model, shipped_precision

from machine import alternated, cpu_name, finish

# environment of each emulated target (empty NUMBA_CPU_FEATURES: otherwise Numba passes the
# host's features, AVX-512 VNNI included, whatever the CPU name)
TARGETS = {"native": {},
           "avx2": {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "",
                    "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
           "avxvnni": {"NUMBA_CPU_NAME": "alderlake", "NUMBA_CPU_FEATURES": "",
                       "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2_VNNI"},
           "avx512": {"NUMBA_CPU_NAME": "skylake-avx512", "NUMBA_CPU_FEATURES": "",
                      "ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}}


def alternated_medians(fns, repeats):
    """{name: median seconds}, idle, one call of each in turn (machine.alternated)."""
    return alternated(fns, repeats)["idle"]


def traced_peak(fn):
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def torch_sr_net(ws, x):
    """The network in PyTorch: 8 convs (ReLU between), plus the input (global residual)."""
    import torch.nn.functional as F
    h = x
    for i, w in enumerate(ws):
        h = F.conv2d(h, w, padding=1)
        if i < len(ws) - 1:
            h = F.relu(h)
    return x + h


def torch_step(weights, masks, x, y, threads):
    """A PyTorch FP32 step of the same network; None if torch is not installed."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.set_num_threads(threads)
    ws = [torch.tensor(np.ascontiguousarray(w.transpose(3, 2, 0, 1)), requires_grad=True)
          for w in weights]
    xt = torch.tensor(x.transpose(2, 0, 1)[None].copy()).contiguous(
        memory_format=torch.channels_last)
    yt = torch.tensor(y.transpose(2, 0, 1)[None].copy()).contiguous(
        memory_format=torch.channels_last)
    ms = None if masks is None else [torch.tensor(m, dtype=torch.float32)[:, None, None, None]
                                      for m in masks]

    def forward():
        return F.l1_loss(torch_sr_net(ws, xt), yt)

    def step():
        loss = forward()
        grads = torch.autograd.grad(loss, ws)
        with torch.no_grad():
            for i, (w, g) in enumerate(zip(ws, grads, strict=True)):
                w -= 0.01 * (g if ms is None else g * ms[i])

    def memory():
        saved = []

        def pack(t):
            saved.append(t.numel() * t.element_size())
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = forward()
        grads = torch.autograd.grad(loss, ws)
        return sum(saved) + sum(g.numel() * g.element_size() for g in grads)
    return step, memory


FIXED = [("2 threads", 2, False), ("1 thread", 1, False), ("1 + side", 1, True)]


def fixed_step(net, n_threads, side, *args):
    """One step at a fixed thread count (the policy sets its own again before its next step),
    with or without the side thread."""
    numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
    with threads.side_on(side):
        return net.step(*args)


def _line(row, precision):
    line = (f"{row['size']:4d} px  prune {row['prune']:4.2f} {row['load']:4s} | int "
            f"{row['int_ms']:8.1f} ms")
    if row["numpy_ms"] is not None:
        line += f" | numpy fp32 {row['numpy_ms']:8.1f} ms ({row['numpy_ms'] / row['int_ms']:.2f}x)"
    for p in precision[1:]:
        line += f" | {p} {row['precision_ms'][p]:7.1f} ms"
    if "torch_ms" in row:
        line += f" | torch fp32 {row['torch_ms']:7.1f} ms ({row['torch_ms'] / row['int_ms']:.2f}x)"
    if "int_vs_own_idle" in row:
        line += f" | int {row['int_vs_own_idle']:.2f}x its idle time"
    for name, ms in row.get("threading_ms", {}).items():
        line += f" | {name} {ms:.1f} ms"
    line += (f" | memory: int {row['int_peak_kb']:7.0f} KB = "
             f"{row['int_peak_kb'] / row['eq16_printed_kb']:.2f}x Eq.16 printed "
             f"({row['eq16_printed_kb']:.0f} KB), "
             f"{row['int_peak_kb'] / row['eq16_int_kb']:.2f}x Table-5 reading")
    if "torch_kb" in row:
        line += (f"; torch {row['torch_kb']:9.0f} KB "
                 f"({row['torch_kb'] / row['int_peak_kb']:.2f}x int)")
    return line


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--prune", type=float, nargs="+", default=[0.0, 0.5, 0.85])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", default="auto",
                    help="the engine's threads: a count (PyTorch gets as many), or auto: the "
                         "engine's threading policy (intsr.threads), PyTorch its default")
    ap.add_argument("--load", nargs="+", choices=["idle", "busy"], default=["idle"],
                    help="busy: another process holds one core (a bounded busy loop); with "
                         "both, rounds alternate the loads and every engine runs under each")
    ap.add_argument("--per-phase", type=int, default=3,
                    help="steps of every engine per load and round")
    ap.add_argument("--no-numpy", action="store_true",
                    help="leave out the NumPy float reference (slow; busy runs take long)")
    ap.add_argument("--precision", nargs="+", default=["int8"],
                    help="shipped precision profiles of the integer engine (the first is int_ms)")
    ap.add_argument("--target", choices=sorted(TARGETS), default="native")
    ap.add_argument("--threading", action="store_true",
                    help="also time fixed settings: 2 threads, 1 thread, 1 thread + side thread")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.target != "native" and os.environ.get("INTSR_BENCH_TARGET") != args.target:
        env = dict(os.environ, INTSR_BENCH_TARGET=args.target, **TARGETS[args.target])
        env.setdefault("NUMBA_CACHE_DIR", tempfile.mkdtemp(prefix=f"intsr-{args.target}-"))
        sys.exit(subprocess.call([sys.executable] + sys.argv, env=env))
    from intsr.kernels.dispatch import PATH
    policy = threads.configure(args.threads)
    torch_threads = policy.max if policy.fixed is None else policy.fixed
    rng = np.random.default_rng(0)
    rows = []
    for ratio in args.prune:
        weights, masks, _ = load_model(prune=ratio or None)
        for n in args.sizes:
            inp = rng.integers(0, 256, (n, n, 3), dtype=np.uint8)
            tgt = rng.integers(0, 256, (n, n, 3), dtype=np.uint8)
            mult, shift = lr_to_fixed(0.01, tgt.size)
            fns = {}
            for name in args.precision:
                net = IntNet(weights_to_int(weights), masks, precision=shipped_precision(name))
                fns[name] = partial(policy.step, net.step, inp, tgt, mult, shift)
            if args.threading:
                for name, n_threads, side in FIXED:
                    fns[name] = partial(fixed_step, IntNet(weights_to_int(weights), masks,
                                        precision=shipped_precision(args.precision[0])),
                                        n_threads, side, inp, tgt, mult, shift)
            xf, yf = inp / np.float32(255), tgt / np.float32(255)
            if not args.no_numpy:
                fns["numpy"] = partial(FloatNet(weights, masks).step, xf, yf, 0.01)
            torch_fns = torch_step(weights, masks, xf, yf, torch_threads)
            if torch_fns is not None:
                fns["torch"] = torch_fns[0]
            by_load = alternated(fns, args.repeats, args.load, args.per_phase)
            first = args.precision[0]
            peaks = {p: traced_peak(fns[p]) / 1000 for p in args.precision}
            for ld, med in by_load.items():
                row = dict(size=n, prune=ratio, load=ld, int_ms=1e3 * med[first],
                           numpy_ms=1e3 * med["numpy"] if "numpy" in med else None,
                           precision_ms={p: 1e3 * med[p] for p in args.precision},
                           int_peak_kb=peaks[first], precision_peak_kb=peaks,
                           eq16_int_kb=cost.memory_kb(n, 8, 32, masks),
                           eq16_printed_kb=cost.memory_kb(n, 8, 32, masks, reading="printed"),
                           eq16_fp32_kb=cost.memory_kb(n, 32, 32, masks),
                           cpu=cpu_name(), target=args.target, path=PATH,
                           threads=policy.report(), torch_threads=torch_threads)
                if args.threading:
                    row["threading_ms"] = {name: 1e3 * med[name] for name, _, _ in FIXED}
                if "idle" in by_load and ld != "idle":
                    row["int_vs_own_idle"] = med[first] / by_load["idle"][first]
                if torch_fns is not None:
                    row["torch_ms"] = 1e3 * med["torch"]
                    row["torch_kb"] = torch_fns[1]() / 1000
                rows.append(row)
                print(_line(row, args.precision), flush=True)
    finish(rows, f"CPU: {cpu_name()}, target {args.target}, kernels {PATH}, engine threads "
                 f"{policy.report()}, PyTorch {torch_threads} threads", args.json)


if __name__ == "__main__":
    main()
