"""Integer core speed, measured side by side in one run (medians of repeats):
conv forward / activation-gradient / weight-gradient throughput on the middle layer's shape
(64 -> 64 channels, 3x3; padding, packing and im2col included) for the kernels the engine uses
(VNNI implicit GEMM where available) and the portable ones, against the machine's int8 peak
as measured here (the VNNI register tile on L1-resident operands, all threads); and one full
adaptation step (forward, L1, backward, SGD) of the integer engine next to the NumPy float32
im2col reference, at 64, 128 and 256 px.

    python benchmarks/bench_core.py [--sizes 64 128 256] [--repeats 5] [--json out.json]

GOPS counts a multiply-accumulate as 2 operations."""
import argparse
import json
import time
from functools import partial

import numpy as np
from numba import njit, prange

from intsr.floatpath.convert import lr_to_fixed, weights_to_int
from intsr.floatpath.network import FloatNet
from intsr.kernels import igemm_emit
from intsr.kernels.dispatch import PATH, agrad3x3, agrad_weights, conv3x3_u8s8, wgrad3x3_u8s8
from intsr.kernels.gemm_x8s8 import conv3x3_portable, wgrad3x3_portable
from intsr.model import IntNet
from intsr.weights import load_model


def median_time(fn, repeats):
    fn()  # JIT compile / warm caches
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


@njit(parallel=True)
def _peak_loop(a, segs, b, out, reps):
    for t in prange(out.shape[0]):
        for _ in range(reps):
            igemm_emit.tile(a, 0, 4, segs, 16, b, 256, out[t], 0, 64, 4, 8, False)


def int8_peak_gops(repeats):
    """One 4 x 64 register tile over K = 576 (9 segments of 64 bytes, B 36 KB: L1-resident),
    repeated on every thread: what vpdpbusd delivers here when memory is not in the way."""
    if PATH != "vnni":
        return None
    from numba import get_num_threads
    a = np.ones(4 * 64, np.uint8)
    segs = np.zeros(9, np.int64)
    b = np.ones(9 * 16 * 256, np.int8)
    out = np.zeros((max(2, get_num_threads()) * 8, 256), np.int32)
    reps = 2000
    t = median_time(lambda: _peak_loop(a, segs, b, out, reps), repeats)
    return 2 * out.shape[0] * reps * 4 * 64 * 576 / t / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    weights = load_model()[0]
    rows = []
    peak = int8_peak_gops(args.repeats)
    print("int8 peak (VNNI register tile, L1-resident, all threads): "
          + ("n/a (no AVX512-VNNI)" if peak is None else f"{peak:.0f} GOPS"), flush=True)
    for n in args.sizes:
        x = rng.integers(0, 128, (n, n, 64), dtype=np.uint8)  # post-ReLU, as the engine passes it
        g = rng.integers(-128, 128, (n, n, 64), dtype=np.int8)
        w = rng.integers(-128, 128, (3, 3, 64, 64), dtype=np.int8)
        kept = np.arange(64)
        macs = n * n * 576 * 64

        def gops(fn, macs=macs):
            return 2 * macs / median_time(fn, args.repeats) / 1e9

        wf = agrad_weights(w, kept, kept)
        row = dict(size=n, conv_fwd_gops=gops(partial(conv3x3_u8s8, x, w)),
                   agrad_gops=gops(partial(agrad3x3, g, w, kept, kept)),
                   wgrad_gops=gops(partial(wgrad3x3_u8s8, x, g)),
                   portable_conv_fwd_gops=gops(partial(conv3x3_portable, x, w)),
                   portable_agrad_gops=gops(partial(conv3x3_portable, g, wf)),
                   portable_wgrad_gops=gops(partial(wgrad3x3_portable, x, g)))

        inp = rng.integers(0, 256, (n, n, 3), dtype=np.uint8)
        tgt = rng.integers(0, 256, (n, n, 3), dtype=np.uint8)
        net = IntNet(weights_to_int(weights))
        mult, shift = lr_to_fixed(0.01, tgt.size)
        t_int = median_time(partial(net.step, inp, tgt, mult, shift), args.repeats)
        fnet = FloatNet(weights)
        xf, yf = inp / np.float32(255), tgt / np.float32(255)
        t_float = median_time(partial(fnet.step, xf, yf, 0.01), args.repeats)
        row.update(int_step_ms=1e3 * t_int, float_step_ms=1e3 * t_float,
                   float_over_int=t_float / t_int)
        rows.append(row)
        print(f"{n:4d} px  GOPS conv fwd {row['conv_fwd_gops']:6.1f} agrad "
              f"{row['agrad_gops']:6.1f} wgrad {row['wgrad_gops']:6.1f} (portable "
              f"{row['portable_conv_fwd_gops']:.0f} / {row['portable_agrad_gops']:.0f} / "
              f"{row['portable_wgrad_gops']:.0f})  |  step: int "
              f"{row['int_step_ms']:7.1f} ms  numpy fp32 {row['float_step_ms']:7.1f} ms  "
              f"(fp32 / int = {row['float_over_int']:.2f}x)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"int8_peak_gops": peak, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
