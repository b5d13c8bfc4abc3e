"""Write docs/results.md and its plots (docs/img/) from the JSON files in docs/data/.

    pip install -e ".[docs]" && python docs/make_results.py

Each section names the command that produced its JSON; rerun those to refresh the numbers,
then this script. Paper numbers are quoted from Lee et al. (IEEE Access 2023) for comparison.
"""
import json
from pathlib import Path

import numpy as np

from intsr import cost

DOCS = Path(__file__).resolve().parent
DATA, IMG = DOCS / "data", DOCS / "img"
KERNELS = " ".join(f"--kernel ../shared/data/kernels/gauss_iso_s{s}_15.npy"
                   for s in ("1.2", "1.6", "2.0", "2.4"))
EVAL = f"NUMBA_NUM_THREADS=1 intsr eval ../shared/data/set5 {KERNELS}"
RATIOS = (0.27, 0.5, 0.67, 0.85)
LAYERWISE = (1, 3, 4, 5)


def load(name):
    path = DATA / name
    return json.loads(path.read_text()) if path.is_file() else None


def mean(records, config, key):
    return float(np.mean([r[key] for r in records if r["config"] == config]))


def eval_tables(records, steps):
    from intsr.floatpath.evaluate import detail_table, summary_table
    return summary_table(records, steps) + "\n\n" + detail_table(records, steps)


def section_main(out):
    d = load("eval_set5_pretrained_gauss.json")
    if d is None:
        return
    r = d["records"]
    bic, i0, i10 = mean(r, "bicubic", "psnr"), mean(r, "int8-ours", "psnr_init"), \
        mean(r, "int8-ours", "psnr")
    out += ["## Set5 x4, the shipped default: `weights/pretrained_gauss.npz` (Pretrain D_meta)", "",
            "```", f"{EVAL} --config bicubic --config int8-ours --config fp \\",
            "  --json docs/data/eval_set5_pretrained_gauss.json", "```", "",
            f"After {d['steps']} integer steps: {i10:.2f} dB, {i10 - bic:+.2f} dB over bicubic "
            f"({bic:.2f}) and {i10 - i0:+.2f} dB over its own 0-step output ({i0:.2f}); "
            f"{mean(r, 'fp', 'psnr') - i10:.2f} dB below the float path.", "",
            eval_tables(r, d["steps"]), ""]
    b = load("eval_set5_pretrained_bic.json")
    if b is not None:
        out += ["## Set5 x4, `weights/pretrained_bic.npz` (Pretrain D_bic, the baseline)", "",
                "Same command with `--weights weights/pretrained_bic.npz`.", "",
                eval_tables(b["records"], b["steps"]), ""]


def section_pruning(out, plt):
    base = load("eval_set5_pretrained_gauss.json")
    rows = [(0.0, base)] + [(r, load(f"eval_set5_pretrained_gauss_prune{r}.json")) for r in RATIOS]
    rows = [(r, d) for r, d in rows if d is not None]
    if len(rows) < 2:
        return
    masks = json.loads((DOCS.parent / "weights" / "masks.json").read_text())["ratios"]
    out += ["## Gradient pruning (Eq. 6-9), Set5 x4, default weights, int8-ours", "",
            "```", f"{EVAL} --config int8-ours --prune R --json "
            "docs/data/eval_set5_pretrained_gauss_pruneR.json", "```", "",
            "Pruning ratio = fraction of the Eq. 9 back-propagation cost removed. Seconds per "
            "image include the SR pass, which pruning does not touch.", "",
            "| prune ratio | kept filters, layers 1-7 | Init | 10 steps | s / image |",
            "|---|---|---|---|---|"]
    psnr_masks = []
    for r, d in rows:
        rec = d["records"]
        counts = " ".join(map(str, masks[str(r)]["counts"]))
        p = mean(rec, "int8-ours", "psnr")
        psnr_masks.append((r, p))
        out.append(f"| {r:.0%} | {counts} | {mean(rec, 'int8-ours', 'psnr_init'):.2f} | {p:.2f} "
                   f"| {mean(rec, 'int8-ours', 'seconds'):.2f} |")
    out += ["", "Paper (Table 1, MAML + 8-bit): 29.89 / 29.87 / 29.85 / 29.84 / 29.79 for 0-85 %.", ""]
    lw = [(n, load(f"eval_set5_pretrained_gauss_layerwise{n}.json")) for n in LAYERWISE]
    lw = [(n, d) for n, d in lw if d is not None]
    psnr_lw = []
    if lw:
        from intsr.pruning import layerwise_masks, pruning_ratio
        out += ["### Layer-wise baseline (Table 6)", "",
                "`... --config int8-ours --layerwise N`: the first N layers frozen.", "",
                "| layers frozen | ratio | 10 steps |", "|---|---|---|"]
        for n, d in lw:
            ratio = pruning_ratio([int(m.sum()) for m in layerwise_masks(n)[:-1]])
            p = mean(d["records"], "int8-ours", "psnr")
            psnr_lw.append((ratio, p))
            out.append(f"| {n} | {ratio:.1%} | {p:.2f} |")
        out.append("")
    if plt:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(*zip(*psnr_masks), "o-", label="knapsack masks (Eq. 8)")
        if psnr_lw:
            ax.plot(*zip(*([(0.0, psnr_masks[0][1])] + psnr_lw)), "s--", label="layer-wise")
        ax.set_xlabel("pruning ratio (Eq. 9 cost removed)")
        ax.set_ylabel("Set5 Y-PSNR after 10 steps (dB)")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(IMG / "psnr_vs_pruning.png", dpi=110)
        out += ["![PSNR vs pruning ratio](img/psnr_vs_pruning.png)", ""]


def section_quant(out, plt):
    d = load("quant_modes.json")
    if d is None:
        return
    rows = list(d.values())
    keys = [k for k in rows[0] if "/" in k]
    out += ["## Integer semantics, measured (Set5 x4, sigma 1.6 and 2.4, default weights)", "",
            "```", "NUMBA_NUM_THREADS=1 python benchmarks/quant_modes.py --data ../shared/data/set5 "
            "--kernels ../shared/data/kernels/gauss_iso_s1.6_15.npy "
            "../shared/data/kernels/gauss_iso_s2.4_15.npy --json docs/data/quant_modes.json", "```", "",
            "`ours` = 32-bit master weights (Eq. 14-15), `standard` = 8-bit weights (Eq. 12-13), "
            "`-u8` = uint8 post-ReLU store; rounding `nearest` (the engine) or `floor` (as printed); "
            "static scales calibrated leave-one-out on the other Set5 images. Update cosine: "
            "total 10-step weight update against the float32 one from the same start.", "",
            "| config | PSNR 0 steps | PSNR 10 steps | update cosine vs float | L1 drop |",
            "|---|---|---|---|---|",
            f"| bicubic | {np.mean([r['bicubic'] for r in rows]):.2f} | | | |"]
    p = np.mean([r["float"] for r in rows], axis=0)
    out.append(f"| float32 | {p[0]:.2f} | {p[1]:.2f} | 1 | "
               f"{np.mean([r['float_loss'][0] - r['float_loss'][1] for r in rows]):.5f} |")
    for k in keys:
        p = np.mean([r[k]["psnr"] for r in rows], axis=0)
        out.append(f"| {k} | {p[0]:.2f} | {p[1]:.2f} | {np.mean([r[k]['cos'] for r in rows]):.3f} "
                   f"| {np.mean([r[k]['loss'][0] - r[k]['loss'][1] for r in rows]):.5f} |")
    out.append("")
    if plt and "curve" in rows[0][keys[0]]:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        steps = np.arange(1, len(rows[0]["float_curve"]) + 1)
        ax.plot(steps, np.mean([r["float_curve"] for r in rows], axis=0), "k-", label="float32")
        for k in ("ours/nearest/dynamic", "ours/nearest/static", "standard/nearest/dynamic",
                  "ours/floor/dynamic"):
            if k in rows[0]:
                ax.plot(steps, np.mean([r[k]["curve"] for r in rows], axis=0), ".-", label=k)
        ax.set_xlabel("online step")
        ax.set_ylabel("L1 loss on (son -> LR), mean")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(IMG / "loss_vs_step.png", dpi=110)
        out += ["![loss vs step](img/loss_vs_step.png)", ""]


def section_speed(out, plt):
    rows = load("bench_step_contended.json")
    if rows is None:
        return
    out += ["## One adaptation step: speed and memory (preliminary)", "",
            "```", "NUMBA_NUM_THREADS=1 python benchmarks/bench_step.py --sizes 32 64 128 "
            "--prune 0 0.5 0.85 --threads 1 --json docs/data/bench_step_contended.json", "```", "",
            "Measured with the trainer busy on the other core (noisy, +-30 %), one thread for every "
            "engine. Memory: peak traced by tracemalloc during one integer step; Eq. 16 in the "
            "Table-5 reading (8-bit activations, 32-bit weights); PyTorch: bytes autograd saves "
            "plus the gradients.", "",
            "| px | prune | int ms | NumPy fp32 ms | PyTorch fp32 ms | int peak KB | Eq. 16 KB "
            "| PyTorch KB |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['size']} | {r['prune']:.0%} | {r['int_ms']:.1f} | {r['numpy_ms']:.1f} | "
                   f"{r.get('torch_ms', float('nan')):.1f} | {r['int_peak_kb']:,.0f} | "
                   f"{r['eq16_int_kb']:,.0f} | {r.get('torch_kb', float('nan')):,.0f} |")
    out.append("")
    if plt:
        un = [r for r in rows if r["prune"] == 0]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.2))
        sizes = [r["size"] for r in un]
        for key, label in (("int_ms", "intsr int8"), ("numpy_ms", "NumPy fp32"),
                           ("torch_ms", "PyTorch fp32")):
            if key in un[0]:
                a1.plot(sizes, [r[key] for r in un], "o-", label=label)
        a1.set_xlabel("image side (px)")
        a1.set_ylabel("ms per step")
        a1.set_yscale("log")
        a1.legend()
        a2.plot(sizes, [r["int_peak_kb"] / 1000 for r in un], "o-", label="intsr, measured")
        a2.plot(sizes, [r["eq16_int_kb"] / 1000 for r in un], "s--", label="Eq. 16 (8/32 bit)")
        if "torch_kb" in un[0]:
            a2.plot(sizes, [r["torch_kb"] / 1000 for r in un], "^-", label="PyTorch fp32")
        a2.set_xlabel("image side (px)")
        a2.set_ylabel("MB")
        a2.legend(fontsize=8)
        for a in (a1, a2):
            a.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(IMG / "step_time_memory.png", dpi=110)
        out += ["![time and memory per step](img/step_time_memory.png)", ""]


def section_table5(out):
    rows = [("Original (FP32)", 32, 32, 19371), ("8-bit", 8, 8, 4840), ("8-bit (ours)", 8, 32, 5517)]
    out += ["## Table 5: back-propagation memory, Eq. 16 (`intsr cost`)", "",
            "h = w = 32, all 8 layers, k^2 on the weight and im2col-input terms, KB = 1000 bytes.", "",
            "| method | Eq. 16 (Table-5 reading) KB | Eq. 16 as printed KB | paper KB |", "|---|---|---|---|"]
    for name, bf, bw, paper in rows:
        out.append(f"| {name} | {cost.memory_kb(32, bf, bw):,.2f} | "
                   f"{cost.memory_kb(32, bf, bw, reading='printed'):,.2f} | {paper:,} |")
    out.append("")


def main():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        IMG.mkdir(exist_ok=True)
    except ImportError:
        plt = None
    out = ["# Results", "",
           "Generated by `python docs/make_results.py` from `docs/data/*.json`; do not edit by hand. "
           "Y-PSNR is BT.601 with 4 pixels shaved; LR by Eq. 1 rounded to 8 bits; 10 online steps "
           "at lr 0.01. `int8-ours` is exactly `intsr adapt` (tested); `fp` the NumPy float32 "
           "reference of the same steps. Paper Table 1 (its own kernels): bicubic 27.41, Pretrain "
           "(D_bic) 29.26 -> 29.76, Pretrain (D_meta) 29.26 -> 29.76, + MAML 16.25 -> 30.11.", ""]
    section_main(out)
    section_pruning(out, plt)
    section_quant(out, plt)
    section_speed(out, plt)
    section_table5(out)
    (DOCS / "results.md").write_text("\n".join(out) + "\n")
    print(f"wrote {DOCS / 'results.md'}" + ("" if plt else " (no plots: matplotlib missing)"))


if __name__ == "__main__":
    main()
