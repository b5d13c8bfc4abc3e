"""What the self-ensemble costs a user: blind `intsr adapt` (no option) on LR images of a few
sizes with `--ensemble 1` and with the default (auto), alternated call by call in one process;
median seconds of the whole call and of its final pass, and how many passes auto ran; and
`intsr sr` (all eight turns where the budget allows) likewise.

    python benchmarks/ensemble_cost.py --sizes 64 128 256 --repeats 5 [--json out.json]
"""
import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import intsr  # noqa: E402
from intsr.io import atomic_write  # noqa: E402

from machine import cpu_name  # noqa: E402

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
        for setting in ("auto", 1):  # warm: compiles
            intsr.adapt(lr, ensemble=setting)
        times = {"auto": [], 1: []}
        passes = None
        for _ in range(args.repeats):
            for setting in ("auto", 1):
                rep = {}
                intsr.adapt(lr, ensemble=setting, report=rep)
                times[setting].append((sum(rep["seconds"].values()), rep["seconds"]["sr"]))
                if setting == "auto":
                    passes = len(rep["ensemble"])
        sr_times = {"auto": [], 1: []}
        for _ in range(args.repeats):
            for setting in ("auto", 1):
                t0 = time.perf_counter()
                intsr.super_resolve(lr, ensemble=setting)
                sr_times[setting].append(time.perf_counter() - t0)
        row = {"lr_side": side, "out_side": 4 * side, "auto_passes": passes,
               "sr_auto_s": statistics.median(sr_times["auto"]),
               "sr_one_s": statistics.median(sr_times[1])}
        for setting, name in (("auto", "auto"), (1, "one")):
            row[name + "_total_s"] = statistics.median(t[0] for t in times[setting])
            row[name + "_sr_s"] = statistics.median(t[1] for t in times[setting])
        rows.append(row)
        print(f"LR {side} px -> {4 * side} px: auto ({passes} passes) "
              f"{row['auto_total_s']:.3f} s (final pass {row['auto_sr_s']:.3f} s), one pass "
              f"{row['one_total_s']:.3f} s ({row['one_sr_s']:.3f} s); sr auto "
              f"{row['sr_auto_s']:.3f} s, one pass {row['sr_one_s']:.3f} s", flush=True)
    if args.json:
        payload = {"cpu": cpu_name(), "machine": platform.machine(), "rows": rows}
        atomic_write(args.json, lambda f: f.write(json.dumps(payload, indent=1).encode()))


if __name__ == "__main__":
    main()
