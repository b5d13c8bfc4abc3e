"""Integer core speed, measured side by side in one run (medians of repeats):
conv forward / activation-gradient / weight-gradient throughput (im2col included) on the middle layer's shape
(64 -> 64 channels, 3x3) and one full adaptation step (forward, L1, backward, SGD) of the
integer engine next to the NumPy float32 im2col reference, at 64, 128 and 256 px.

    python benchmarks/bench_core.py [--sizes 64 128 256] [--repeats 5] [--json out.json]

GOPS counts a multiply-accumulate as 2 operations."""
import argparse
import json
import time

import numpy as np

from intsr.floatpath.convert import lr_to_fixed, weights_to_int
from intsr.floatpath.network import FloatNet
from intsr.kernels.backward import agrad_s32, wgrad_s64
from intsr.kernels.conv import conv3x3_s32
from intsr.kernels.im2col import im2col
from intsr.model import IntNet
from intsr.online import load_model_files


def median_time(fn, repeats):
    fn()  # JIT compile / warm caches
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    weights = load_model_files()[0]
    rows = []
    for n in args.sizes:
        x = rng.integers(0, 128, (n, n, 64), dtype=np.int8)
        g = rng.integers(-128, 128, (n, n, 64), dtype=np.int8)
        w = rng.integers(-128, 128, (3, 3, 64, 64), dtype=np.int8)
        kept = np.arange(64)
        macs = n * n * 576 * 64
        t_fwd = median_time(lambda: conv3x3_s32(x, w), args.repeats)
        t_ag = median_time(lambda: agrad_s32(g, w, kept, kept), args.repeats)
        t_wg = median_time(lambda: wgrad_s64(im2col(x), g.reshape(n * n, 64)), args.repeats)

        inp = rng.integers(0, 256, (n, n, 3), dtype=np.uint8)
        tgt = rng.integers(0, 256, (n, n, 3), dtype=np.uint8)
        net = IntNet(weights_to_int(weights))
        mult, shift = lr_to_fixed(0.01, tgt.size)
        t_int = median_time(lambda: net.step(inp, tgt, mult, shift), args.repeats)
        fnet = FloatNet(weights)
        xf, yf = inp / np.float32(255), tgt / np.float32(255)
        t_float = median_time(lambda: fnet.step(xf, yf, 0.01), args.repeats)
        row = dict(size=n, conv_fwd_gops=2 * macs / t_fwd / 1e9,
                   agrad_gops=2 * macs / t_ag / 1e9, wgrad_gops=2 * macs / t_wg / 1e9,
                   int_step_ms=1e3 * t_int, float_step_ms=1e3 * t_float,
                   float_over_int=t_float / t_int)
        rows.append(row)
        print(f"{n:4d} px  conv fwd {row['conv_fwd_gops']:6.1f} GOPS  agrad "
              f"{row['agrad_gops']:6.1f}  wgrad {row['wgrad_gops']:6.1f}  |  step: int "
              f"{row['int_step_ms']:7.1f} ms  numpy fp32 {row['float_step_ms']:7.1f} ms  "
              f"(fp32 / int = {row['float_over_int']:.2f}x)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
