"""The SR pass of a full frame, side by side in one run: the integer engine (``Adapter.
super_resolve``: bicubic upsampling, then the network tile by tile, SR_TILE) against PyTorch
FP32 inference of the same network on the same upsampled input (channels_last, no_grad, the
upsampling not timed: in PyTorch's favour), alternated call by call, medians of the repeats.

Frames: 480x270 -> 1920x1080 at x4 and 960x540 -> 1920x1080 at x2 (the shipped direct-SR
weights of each scale; timing does not depend on them). GOPS = 2 x 224,640 MACs per output
pixel / seconds (the halos that tiles recompute are not counted), next to the VNNI register
tile's own peak measured in the same run (bench_core.int8_peak_gops, all threads).
``--load idle busy``: rounds alternate an idle machine and another process busy on one core.
``--unfused``: also the engine with each layer's output copied into the next conv's padded
input (the path before model.requantize_padded), alternated with the others; ``--precision
P ...``: also the SR pass with those profiles (the engine "intsr" is the scale's default).

    python benchmarks/bench_sr.py [--scales 4 2] [--repeats 5] [--load idle busy]
        [--threads auto|N] [--unfused] [--precision P ...] [--json docs/data/bench_sr.json]
"""
import argparse
import os

import numba
import numpy as np
from bench_core import int8_peak_gops
from PIL import Image

from intsr import model, threads
from intsr.arch import num_weights
from intsr.kernels.dispatch import PATH
from intsr.kernels.resample import bicubic_upsample_u8
from intsr.online import Adapter

from bench_step import torch_sr_net
from machine import alternated, cpu_name, finish

FRAME = (1920, 1080)
EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "intsr", "data", "example_lr.png")


def torch_sr(weights, up, n_threads):
    """PyTorch FP32 inference of the network on the upsampled frame; None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(n_threads)
    ws = [torch.tensor(np.ascontiguousarray(w.transpose(3, 2, 0, 1), np.float32)) for w in weights]
    x = torch.tensor(up.transpose(2, 0, 1)[None] / np.float32(255)).contiguous(
        memory_format=torch.channels_last)

    def run():
        with torch.no_grad():
            return torch_sr_net(ws, x)
    return run


def _unfused(ad, lr):
    saved = model.takes_padded
    model.takes_padded = lambda w: False  # every layer output through requantize + padding
    try:
        return ad.super_resolve(lr)
    finally:
        model.takes_padded = saved


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scales", type=int, nargs="+", default=[4, 2])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--load", nargs="+", choices=["idle", "busy"], default=["idle"])
    ap.add_argument("--threads", default="auto",
                    help="a count (PyTorch gets as many), or auto: the engine's policy "
                         "(intsr.threads), PyTorch its default")
    ap.add_argument("--unfused", action="store_true",
                    help="also time the SR pass without requantizing into padded inputs")
    ap.add_argument("--precision", nargs="+", default=[],
                    help="also the SR pass with these shipped precision profiles (e.g. "
                         "mixed-x2 grouped-x2 int8), alternated with the others")
    ap.add_argument("--json")
    args = ap.parse_args()
    policy = threads.configure(args.threads)
    n_threads = policy.max if policy.fixed is None else policy.fixed
    numba.set_num_threads(n_threads)
    peak = int8_peak_gops(args.repeats)
    print(f"int8 peak (VNNI register tile, L1-resident, {n_threads} threads): "
          + ("n/a (no AVX512-VNNI)" if peak is None else f"{peak:.0f} GOPS"), flush=True)
    photo = Image.open(EXAMPLE).convert("RGB")
    rows = []
    for scale in args.scales:
        size = (FRAME[0] // scale, FRAME[1] // scale)
        lr = np.asarray(photo.resize(size, Image.BICUBIC))
        ad = Adapter(scale=scale, adapting=False)
        up = ad.super_resolve(lr)  # warm: compiles, and the output's shape
        fns = {"intsr": lambda ad=ad, lr=lr: ad.super_resolve(lr)}
        if args.unfused:
            fns["unfused"] = lambda ad=ad, lr=lr: _unfused(ad, lr)
        for name in args.precision:
            other = Adapter(scale=scale, adapting=False, precision=name)
            other.super_resolve(lr)
            fns[name] = lambda other=other, lr=lr: other.super_resolve(lr)
        run = torch_sr([w.dequantize() for w in ad.net.weights],
                       bicubic_upsample_u8(lr, scale, "centre"), n_threads)
        if run is not None:
            fns["torch"] = run
        ops = 2 * num_weights() * up.shape[0] * up.shape[1]
        for ld, med in alternated(fns, args.repeats, args.load).items():
            row = dict(scale=scale, lr=list(size), out=[up.shape[1], up.shape[0]], load=ld,
                       intsr_s=med["intsr"], intsr_gops=ops / med["intsr"] / 1e9,
                       peak_gops=peak, cpu=cpu_name(), path=PATH, threads=policy.report(),
                       torch_threads=n_threads)
            line = (f"x{scale} {size[0]}x{size[1]} -> {up.shape[1]}x{up.shape[0]} {ld:4s} | "
                    f"intsr {med['intsr']:.3f} s, {row['intsr_gops']:.0f} GOPS")
            if peak:
                row["fraction_of_peak"] = row["intsr_gops"] / peak
                line += f" ({100 * row['fraction_of_peak']:.0f} % of the tile peak)"
            if "unfused" in med:
                row["unfused_s"] = med["unfused"]
                line += f" | unfused {med['unfused']:.3f} s ({med['unfused'] / med['intsr']:.3f}x)"
            for name in args.precision:
                row[f"{name}_s"] = med[name]
                gops = ops / med[name] / 1e9
                line += f" | {name} {med[name]:.3f} s, {gops:.0f} GOPS"
                if peak:
                    line += f" ({100 * gops / peak:.0f} %)"
            if "torch" in med:
                row["torch_s"] = med["torch"]
                line += f" | torch fp32 {med['torch']:.3f} s ({med['torch'] / med['intsr']:.2f}x)"
            rows.append(row)
            print(line, flush=True)
    finish(rows, f"CPU: {cpu_name()}, kernels {PATH}, engine threads {policy.report()}, "
                 f"PyTorch {n_threads} threads", args.json)


if __name__ == "__main__":
    main()
