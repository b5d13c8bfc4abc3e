"""Markdown table of ``eval --json`` results: mean Y-PSNR per kernel and overall.

    python -m training.report NAME=results.json [NAME=results.json ...]
"""
import json
import sys
from collections import defaultdict


def table(named):
    kernels = None
    lines = []
    for name, path in named:
        with open(path) as f:
            res = json.load(f)
        per = defaultdict(lambda: defaultdict(list))
        for r in res["rows"]:
            for key in ("bicubic", "net", "adapted"):
                per[r["kernel"]][key].append(r[key])
        if kernels is None:
            kernels = sorted(per)
            head = " | ".join(k.replace("gauss_iso_", "").replace("_15.npy", "") for k in kernels)
            lines.append(f"| model | steps | {head} | mean |")
            lines.append("|---" * (len(kernels) + 3) + "|")
            bic = [sum(per[k]["bicubic"]) / len(per[k]["bicubic"]) for k in kernels]
            lines.append("| bicubic | - | " + " | ".join(f"{v:.2f}" for v in bic)
                         + f" | {sum(bic) / len(bic):.2f} |")
        n = res["summary"]["sgd_steps"]
        for key, steps in (("net", 0), ("adapted", n)):
            vals = [sum(per[k][key]) / len(per[k][key]) for k in kernels]
            lines.append(f"| {name} | {steps} | " + " | ".join(f"{v:.2f}" for v in vals)
                         + f" | {sum(vals) / len(vals):.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table([a.split("=", 1) for a in sys.argv[1:]]))
