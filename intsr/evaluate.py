"""The evaluation harness, above the engine: the paper's tables. For every HR image and kernel,
the LR image by Eq. 1 (floatpath.degrade.lr_image), then each configuration adapts on the LR
image alone and super-resolves it; Y-PSNR (BT.601, ``scale`` pixels shaved) and SSIM before
adaptation ("Init") and after ``steps`` steps.

Configurations (``RUNNERS``):
  bicubic            Pillow bicubic of the LR image
  fp                 float32 reference (floatpath.network.FloatNet), same pruned back-prop
  int8-ours          IntNet, 32-bit masters (Eq. 14-15), dynamic scales, the paper's widths: what
                     `intsr adapt --precision int8` runs
  shipped            int8-ours with the scale's default precision (weights.default_precision):
                     what `intsr adapt` runs without --precision (at x4 the same as int8-ours,
                     at x2 the profile grouped-x2)
  int8-ours-static   the same with static scales
  int8-standard      8-bit weights (Eq. 12-13), dynamic scales
  int8-standard-static
  int8-blind         int8-ours on a kernel the device estimated from the LR image alone
                     (intsr.blind): `intsr adapt` without --kernel
  int8-forward       forward gradients, no backward pass (intsr.forwardgrad, its defaults):
                     `intsr adapt --method forward`
  int8-mest          back-propagation with masks mutating at a fixed Eq. 9 cost (intsr.mest):
                     `intsr adapt --method mest`
  int8-mixed, int16, int8-small
                     int8-ours with the shipped precision profile mixed / int16 / small
                     (intsr.precision, weights/precision.json): `intsr adapt --precision P`
Static scales are calibrated leave-one-out on the other images of the evaluated set (the paper
calibrates on training data, which a device does not have).

A runner is ``fn(case, setup) -> (sr_init, sr, macs[, extra])`` with [0, 1] float images and
``extra`` a dict of fields for the record; other runners plug in through
``evaluate(..., runners=...)`` (the trainer's PyTorch float path does).
"""
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from intsr.floatpath.convert import kernel_to_fixed, weights_to_int
from intsr.floatpath.degrade import lr_image
from intsr.floatpath.gaussian import from_log_cov, kernel_distance, log_cov_of
from intsr.floatpath.metrics import psnr_y, ssim_y
from intsr.floatpath.network import FloatNet
from intsr.io import InputError
from intsr.kernels.resample import bicubic_upsample_u8
from intsr.model import IntNet, calibrate
from intsr.online import SR_TILE, estimate_kernel, learn_steps, make_learner, make_training_pair
from intsr.quant import QTensor
from intsr.state import State
from intsr.weights import default_precision, shipped_precision

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class Case:
    """One test image under one kernel: HR, its LR (uint8), the online training pair
    (bicubic_up(son), LR) as adapt() makes it, and bicubic_up(LR), the network's SR input."""
    name: str
    hr: np.ndarray
    lr: np.ndarray
    pair: tuple
    up: np.ndarray


@dataclass
class Setup:
    """What every runner of one evaluation shares; ``cases`` are all images under the current
    kernel (static calibration takes the others). ``weights``: float HWIO arrays, or a saved
    State (its int32 masters start the 32-bit-master configurations as they are)."""
    weights: object
    masks: list
    lr: float
    scale: int
    steps: int
    cases: list
    kernel: np.ndarray = None
    grid: str = "centre"


def float_weights(weights):
    """Float HWIO arrays of ``weights`` (a State is dequantized: Eq. 14 read backwards)."""
    if isinstance(weights, State):
        return [w.dequantize().astype(np.float32) for w in weights.weights]
    return weights


def int_weights(weights, mode):
    """Integer starting weights for ``mode``: a State's masters as they are, else Eq. 14."""
    if isinstance(weights, State) and mode == "ours":
        return [QTensor(w.value.copy(), w.scale) for w in weights.weights]
    return weights_to_int(float_weights(weights), mode)


def run_bicubic(case, setup):
    return case.up / 255.0, case.up / 255.0, 0


def run_fp(case, setup):
    net = FloatNet(float_weights(setup.weights), setup.masks)
    x = case.up / np.float32(255)
    sr0 = net.predict(x)
    inp, tgt = case.pair
    for _ in range(setup.steps):
        net.step(inp / np.float32(255), tgt / np.float32(255), setup.lr)
    return sr0, net.predict(x), 0


def _int_runner(mode, static, profile=None, method="backprop"):
    def run(case, setup):
        # The same calls, tiles and rounding as intsr.adapt: int8-ours is `intsr adapt
        # --precision int8`.
        scales = None
        if static:
            others = [c.pair for c in setup.cases if c is not case] or [case.pair]
            scales = calibrate(IntNet(int_weights(setup.weights, mode), setup.masks,
                                      mode=mode), others)
        net = IntNet(int_weights(setup.weights, mode), setup.masks, mode=mode, static=scales,
                     precision=shipped_precision(profile))
        sr0 = net.predict(case.up, tile=SR_TILE)
        learn_steps(make_learner(net, method), [case.pair], setup.steps, setup.lr)
        return sr0 / 255.0, net.predict(case.up, tile=SR_TILE) / 255.0, net.macs
    return run


def run_shipped(case, setup):
    return _int_runner("ours", False, default_precision(setup.scale))(case, setup)


def run_blind(case, setup):
    """int8-ours on the kernel estimated from ``case.lr`` (intsr.blind), with the estimate's
    error against the true kernel: size as the geometric-mean sigma, log-covariance distance,
    L2 distance of the kernels."""
    t0 = time.perf_counter()
    est = estimate_kernel(case.lr, scale=setup.scale)
    seconds = time.perf_counter() - t0
    case = Case(case.name, case.hr, case.lr,
                make_training_pair(case.lr, est.k_fixed, setup.scale, grid=setup.grid), case.up)
    sr0, sr, macs = RUNNERS["int8-ours"](case, setup)
    got = est.describe()
    u, v, w = log_cov_of(setup.kernel)
    eu, ev, ew = log_cov_of(est.kernel())
    true_s1, true_s2, _ = from_log_cov(u, v, w)
    return sr0, sr, macs, {
        "estimate": got, "estimate_seconds": seconds,
        "true_sigma1": true_s1, "true_sigma2": true_s2,
        "sigma_error": float(np.exp(eu / 2) - np.exp(u / 2)),
        "logcov_error": float(np.sqrt((eu - u) ** 2 + (ev - v) ** 2 + (ew - w) ** 2)),
        "kernel_l2": kernel_distance(est.kernel(), setup.kernel)}


RUNNERS = {"bicubic": run_bicubic, "fp": run_fp,
           "int8-ours": _int_runner("ours", False), "shipped": run_shipped,
           "int8-ours-static": _int_runner("ours", True),
           "int8-standard": _int_runner("standard", False),
           "int8-standard-static": _int_runner("standard", True), "int8-blind": run_blind,
           "int8-forward": _int_runner("ours", False, method="forward"),
           "int8-mest": _int_runner("ours", False, method="mest"),
           "int8-mixed": _int_runner("ours", False, "mixed"),
           "int16": _int_runner("ours", False, "int16"),
           "int8-small": _int_runner("ours", False, "small")}
# the default: the paper's configurations; the scale's shipped default, blind, the other learners
# and the other precision profiles are asked for
CONFIGS = tuple(c for c in RUNNERS if c not in ("shipped", "int8-blind", "int8-forward",
                                                "int8-mest", "int8-mixed", "int16",
                                                "int8-small"))


def load_hr(folder, scale):
    """HR images of a folder, RGB uint8, cropped to a multiple of ``scale``: [(stem, image)]."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of images")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise InputError(f"no images in {folder}")
    out = []
    for p in paths:
        im = np.asarray(Image.open(p).convert("RGB"))
        out.append((p.stem, im[:im.shape[0] - im.shape[0] % scale,
                               :im.shape[1] - im.shape[1] % scale]))
    return out


def make_cases(images, kernel, scale, grid="centre"):
    """[Case] of every (name, HR) image under ``kernel``, LR images and sons on ``grid``."""
    k_fixed = kernel_to_fixed(kernel)
    cases = []
    for name, hr in images:
        lr = lr_image(hr, kernel, scale, grid)
        cases.append(Case(name, hr, lr, make_training_pair(lr, k_fixed, scale, grid=grid),
                          bicubic_upsample_u8(lr, scale, grid)))
    return cases


def evaluate(hr_dir, kernels, *, weights, masks=None, lr, scale=4, steps=10, configs=CONFIGS,
             runners=None, progress=None, grid="centre"):
    """Yield one record per (kernel, image, configuration):
    dict(kernel, image, config, psnr_init, psnr, ssim_init, ssim, seconds, macs).

    ``kernels``: [(name, 2-D kernel)]; ``runners``: extra {config: runner}; ``grid``: the
    sampling grid of Eq. 1 for the LR images and the sons (intsr.kernels.resample);
    ``progress(done, total)`` after each record."""
    runners = {**RUNNERS, **(runners or {})}
    unknown = [c for c in configs if c not in runners]
    if unknown:
        raise InputError(f"unknown config {unknown[0]!r}; choose from {', '.join(runners)}")
    images = load_hr(hr_dir, scale)
    total, done = len(images) * len(kernels) * len(configs), 0
    for kname, kernel in kernels:
        setup = Setup(weights, masks, lr, scale, steps, make_cases(images, kernel, scale, grid),
                      np.asarray(kernel), grid)
        for case in setup.cases:
            ref = case.hr / 255.0
            for cfg in configs:
                t0 = time.perf_counter()
                sr0, sr, macs, *extra = runners[cfg](case, setup)
                seconds = time.perf_counter() - t0
                done += 1
                if progress:
                    progress(done, total)
                yield dict(kernel=kname, image=case.name, config=cfg,
                           psnr_init=psnr_y(sr0, ref, scale), psnr=psnr_y(sr, ref, scale),
                           ssim_init=ssim_y(sr0, ref, scale), ssim=ssim_y(sr, ref, scale),
                           seconds=seconds, macs=int(macs), **(extra[0] if extra else {}))


def markdown_table(header, rows):
    """A Markdown table from a header list and rows of cells (already formatted)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def summary_table(records, steps):
    """One row per configuration: mean Y-PSNR at Init and after ``steps`` steps, one column per
    kernel (after ``steps``), mean SSIM after ``steps``, seconds per image."""
    configs = list(dict.fromkeys(r["config"] for r in records))
    kernels = list(dict.fromkeys(r["kernel"] for r in records))
    rows = []
    for c in configs:
        rs = [r for r in records if r["config"] == c]
        per_k = [np.mean([r["psnr"] for r in rs if r["kernel"] == k]) for k in kernels]
        rows.append([c, f"{np.mean([r['psnr_init'] for r in rs]):.2f}",
                     f"{np.mean([r['psnr'] for r in rs]):.2f}"] + [f"{v:.2f}" for v in per_k]
                    + [f"{np.mean([r['ssim'] for r in rs]):.4f}",
                       f"{np.mean([r['seconds'] for r in rs]):.2f}"])
    return markdown_table(["config", "Init", f"{steps} steps"] + kernels
                          + [f"SSIM {steps} steps", "s / image"], rows)


def detail_table(records, steps):
    """Per image and kernel: bicubic, then Init / after ``steps`` / seconds of each config."""
    configs = [c for c in dict.fromkeys(r["config"] for r in records) if c != "bicubic"]
    by = {(r["kernel"], r["image"], r["config"]): r for r in records}
    rows = []
    for (k, img) in dict.fromkeys((r["kernel"], r["image"]) for r in records):
        bic = by.get((k, img, "bicubic"))
        cells = [k, img, f"{bic['psnr']:.2f}" if bic else ""]
        for c in configs:
            r = by[(k, img, c)]
            cells += [f"{r['psnr_init']:.2f}", f"{r['psnr']:.2f}", f"{r['seconds']:.1f}"]
        rows.append(cells)
    return markdown_table(["kernel", "image", "bicubic"] + [
        f"{c} {col}" for c in configs for col in ("Init", str(steps), "s")], rows)


def tables(records, steps):
    """Both tables, as `intsr eval` prints them."""
    return summary_table(records, steps) + "\n\n" + detail_table(records, steps)
