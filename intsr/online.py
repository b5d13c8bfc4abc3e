"""Algorithm 2: online adaptation of the network to one low-resolution image, integers only.

    theta_32  <- Eq. 14 of the float weights (boundary, once)
    I_son     <- (I_LR * k) downsampled by s, Eq. 1 on integers
    n times:  one SGD step of IntNet on (bicubic_up(I_son) -> I_LR), Eq. 10-15, masks Eq. 6
    I_SR      <- IntNet(bicubic_up(I_LR))

The training pair uses I_LR cropped to a multiple of s, so that the upsampled son and the
target have the same size; the final pass super-resolves the whole image.
"""
import json
import time
import tracemalloc
from pathlib import Path

import numpy as np

from intsr.io import InputError, validate_kernel
from intsr.floatpath.convert import KERNEL_BITS, kernel_to_fixed, lr_to_fixed, weights_to_int
from intsr.kernels.resample import bicubic_upsample_u8, degrade_u8
from intsr.model import IntNet

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
MIN_SON = 4  # the son must be at least this many pixels on each side
SR_TILE = 256  # output pixels per tile side in the final SR pass: bounded memory at any size
TRAIN_MAX = 256  # LR pixels per side the online steps train on (central window beyond that)


def defaults():
    """The shipped configuration: weights file, masks file, learning rate, default pruning."""
    with open(WEIGHTS_DIR / "default.json") as f:
        cfg = json.load(f)
    return cfg


def select_masks(ratio, path=None):
    """The masks of one pruning ratio from a masks file (default: the shipped one); None for
    ratio 0 (nothing pruned) unless a file is named."""
    from intsr.floatpath.weights import MASK_RATIOS, load_masks

    if not any(abs(ratio - r) < 1e-9 for r in MASK_RATIOS.values()):
        raise InputError(f"no shipped mask for pruning ratio {ratio}; choose one of "
                         f"{sorted(MASK_RATIOS.values())}")
    if ratio == 0 and path is None:
        return None
    table = load_masks(path or WEIGHTS_DIR / defaults()["masks"])
    match = [r for r in table if abs(r - ratio) < 1e-9]
    if not match:
        raise InputError(f"no mask for pruning ratio {ratio}; the file has {sorted(table)}")
    return table[match[0]]


def load_model_files(weights=None, prune=None):
    """(float HWIO weights, masks or None, default lr) for a weights path (or None: shipped)."""
    from intsr.floatpath.weights import load_weights

    cfg = defaults()
    ratio = cfg.get("prune", 0.0) if prune is None else prune
    masks = select_masks(ratio)
    w = load_weights(Path(weights) if weights is not None else WEIGHTS_DIR / cfg["weights"])
    return w, masks, float(cfg["lr"])


def _load_net(weights, prune):
    if weights is None or isinstance(weights, (str, Path)):
        wf, masks, default_lr = load_model_files(weights, prune)
    else:
        wf, masks, default_lr = weights, None, defaults()["lr"]
        if prune is not None:
            masks = select_masks(prune)
    return IntNet(weights_to_int(wf), masks), default_lr


def _finish(net, rgb, gray, scale):
    out = net.predict(bicubic_upsample_u8(rgb, scale), tile=SR_TILE)
    if gray:
        # The three output channels are three estimates of the same grey level: average them.
        out = ((out.astype(np.int32).sum(axis=2) + 1) // 3).astype(np.uint8)
    return out


def super_resolve(image, *, scale=4, weights=None):
    """Plain SR without adaptation (the same as ``adapt(..., steps=0)``, no kernel needed)."""
    rgb, gray = _as_rgb(image)
    check_inputs(rgb.shape, np.ones((1, 1)), scale, 0)
    return _finish(_load_net(weights, None)[0], rgb, gray, scale)


def _as_rgb(image):
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise InputError(f"image must be uint8, not {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2), True
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image), False
    raise InputError(f"image must be HxW or HxWx3, not shape {image.shape}")


def check_inputs(shape, kernel, scale, steps):
    """Validate sizes and hyper-parameters; raise InputError (a ValueError) with one line."""
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 2:
        raise InputError(f"scale must be an integer >= 2, not {scale}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise InputError(f"steps must be a non-negative integer, not {steps}")
    h, w = shape[:2]
    if h // scale < MIN_SON or w // scale < MIN_SON:
        raise InputError(f"image {w}x{h} is too small for scale {scale}: the son would be "
                         f"under {MIN_SON} pixels (need at least {MIN_SON * scale} px a side)")
    if kernel.shape[0] > h or kernel.shape[1] > w:
        raise InputError(f"kernel {kernel.shape[1]}x{kernel.shape[0]} is larger than the "
                         f"image {w}x{h}")


def make_training_pair(lr_rgb, k_fixed, scale, max_side=TRAIN_MAX):
    """(network input, target) for the online steps: bicubic_up(son) and I_LR cropped to a
    multiple of ``scale``; both (H', W', 3) uint8.

    Images wider or taller than ``max_side`` train on their central ``max_side`` window (the
    son is still made from the whole image), which bounds a step's time and memory; Set5-sized
    inputs (LR up to 128 px) are never cropped."""
    h, w, _ = lr_rgb.shape
    h, w = h - h % scale, w - w % scale
    son = degrade_u8(np.ascontiguousarray(lr_rgb[:h, :w]), k_fixed, KERNEL_BITS, scale)
    side = max_side - max_side % scale
    y0 = (h - side) // 2 // scale * scale if h > side else 0
    x0 = (w - side) // 2 // scale * scale if w > side else 0
    th, tw = min(h, side), min(w, side)
    son = np.ascontiguousarray(son[y0 // scale:(y0 + th) // scale, x0 // scale:(x0 + tw) // scale])
    return bicubic_upsample_u8(son, scale), np.ascontiguousarray(lr_rgb[y0:y0 + th, x0:x0 + tw])


def adapt(image, kernel, *, scale=4, steps=10, prune=None, weights=None, lr=None, seed=0,
          progress=None, report=None):
    """Adapt the network to ``image`` with its blur ``kernel`` and super-resolve it.

    image: (H, W, 3) or (H, W) uint8; kernel: 2-D float array (normalised to sum 1).
    Returns (scale*H, scale*W[, 3]) uint8. ``steps=0`` is plain SR. ``prune`` picks a shipped
    mask by pruning ratio (None: the shipped default). ``weights``: a weights file path or a list
    of float HWIO arrays (None: the shipped weights). ``lr``: SGD step (None: the weights'
    default). ``seed`` is accepted for API stability: with round-to-nearest every step is
    deterministic and the seed changes nothing.
    ``progress(step, n_steps, loss)`` is called after each step; ``report`` (a dict) receives
    per-step losses, per-phase seconds, counted MACs and, if report['trace_memory'] is true,
    the peak traced memory in bytes."""
    del seed
    rgb, gray = _as_rgb(image)
    kernel = validate_kernel(kernel)
    check_inputs(rgb.shape, kernel, scale, steps)
    timings = {}
    trace = bool(report and report.get("trace_memory"))
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    net, default_lr = _load_net(weights, prune)
    k_fixed = kernel_to_fixed(kernel)
    timings["load"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    losses = []
    if steps:
        inp, target = make_training_pair(rgb, k_fixed, scale)
        mult, shift = lr_to_fixed(default_lr if lr is None else lr, target.size)
        for i in range(steps):
            num, exp = net.step(inp, target, mult, shift)
            # Reporting boundary: the loss in the float network's units (pixels / 255).
            losses.append(float(np.ldexp(float(num), exp)) / target.size * 256 / 255)
            if progress:
                progress(i + 1, steps, losses[-1])
    timings["adapt"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    out = _finish(net, rgb, gray, scale)
    timings["sr"] = time.perf_counter() - t0
    if report is not None:
        report.update(losses=losses, seconds=timings, macs=int(net.macs))
        if trace:
            report["peak_bytes"] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    return out
