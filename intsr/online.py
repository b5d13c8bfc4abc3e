"""Algorithm 2: online adaptation of the network to one low-resolution image, integers only.

    theta_32  <- Eq. 14 of the float weights (boundary, once)
    I_son     <- (I_LR * k) downsampled by s, Eq. 1 on integers
    n times:  one SGD step of IntNet on (bicubic_up(I_son) -> I_LR), Eq. 10-15, masks Eq. 6
    I_SR      <- IntNet(bicubic_up(I_LR))

The training pair uses I_LR cropped to a multiple of s, so that the upsampled son and the
target have the same size; the final pass super-resolves the whole image.
"""
from __future__ import annotations

import os
import time
import tracemalloc
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Union

import numpy as np

from intsr import blind, ensemble as self_ensemble, forwardgrad, mest, threads
from intsr.floatpath.convert import (
    KERNEL_BITS,
    kernel_to_fixed,
    lr_to_fixed,
    noise_to_fixed,
    weights_to_int,
)
from intsr.floatpath.realdeg import RESIZERS, resizer_kernel
from intsr.io import InputError, jpeg_roundtrip, validate_kernel
from intsr.kernels.noise_u8 import add_noise_u8
from intsr.kernels.resample import GRIDS, bicubic_upsample_u8, degrade_u8, grid_offset
from intsr.model import IntNet
from intsr.precision import Precision
from intsr.quant import QTensor
from intsr.state import State, is_state_file, kernel_digest, load_state
from intsr.weights import (
    default_precision,
    load_model,
    resolve_path,
    shipped_precision,
    shipped_start,
    trained_scales,
)

# Type aliases of the public API: weights (a file, float HWIO arrays or a saved state), a blur
# kernel (float taps, a resizer's name, or a blind estimate), a JPEG setting.
WeightsArg = Union[str, os.PathLike, list, State, None]
KernelArg = Union[np.ndarray, str, blind.Estimate]
JpegArg = Union[int, tuple, str, None]

MIN_SON = 4  # the son must be at least this many pixels on each side
SR_TILE = 256  # output pixels per tile side in the final SR pass: bounded memory at any size
TRAIN_MAX = 256  # LR pixels per side the online steps train on (central window beyond that)
CHECK_SHARE = 4  # the safety net holds out the last 1/CHECK_SHARE of the training window's rows
MIN_CHECK_ROWS = 8  # ... and at least this many (else it does not run)
METHODS = ("backprop", "forward", "mest")
# options each method takes (intsr.forwardgrad.ForwardGradient, intsr.mest.Mest)
METHOD_OPTIONS = {"backprop": (), "forward": ("layers", "directions", "estimate", "tile"),
                  "mest": ("every", "drop")}


class Backprop:
    """Algorithm 2's learner: IntNet.step, the learning rate as given."""

    def __init__(self, net):
        self.net = net

    def step(self, inp, target, lr_mult, lr_shift):
        return self.net.step(inp, target, lr_mult, lr_shift)

    def lr_divisor(self):
        return 1


def make_learner(net, method="backprop", seed=0, options=None):
    """The object whose ``step(inp, target, lr_mult, lr_shift)`` trains ``net`` by ``method``,
    with the learning rate divided by its ``lr_divisor()`` (at the float boundary, before
    lr_to_fixed). ``options``: that method's keyword arguments (METHOD_OPTIONS); ``layers`` may
    be a string like "6-8" (forwardgrad.parse_layers)."""
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    options = dict(options or {})
    bad = sorted(set(options) - set(METHOD_OPTIONS[method]))
    if bad:
        raise InputError(f"option {bad[0]!r} does not apply to method {method!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, not {seed}")
    try:
        if method == "forward":
            if isinstance(options.get("layers"), str):
                options["layers"] = forwardgrad.parse_layers(options["layers"])
            return forwardgrad.ForwardGradient(net, seed=seed, **options)
        if method == "mest":
            # mest swaps kept channels for frozen ones: with nothing frozen it would silently
            # be back-propagation
            if all(k.size == w.shape[3] for k, w in zip(net.kept[:-1], net.weights[:-1],
                                                         strict=True)):
                raise InputError("--method mest swaps frozen channels for kept ones: give "
                                 "--prune (a mask that freezes some), e.g. --prune 0.5")
            return mest.Mest(net, seed=seed, **options)
    except ValueError as e:
        raise InputError(str(e)) from None
    return Backprop(net)


class Adapter:
    """A network adapting on the device: IntNet (int32 masters, masks), its learning rate, its
    SR factor and the provenance a saved state carries (intsr.state).

    ``weights``: None (the shipped weights, weights.shipped_start: meta-learned when
    ``adapting``, blind mode's point if the kernel was ``estimated``, else the ones for direct
    SR), a file (float weights, or a saved state to continue from), float HWIO arrays, or
    a State. ``prune``: a shipped pruning ratio (not with a state: it carries its masks).
    ``lr``: None takes the state's or the shipped default. ``method``, ``seed``, ``options``:
    how the steps learn (make_learner); back-propagation unless told. ``precision``: a
    shipped profile name ("int8", "mixed", "mixed-x2", "grouped-x2", "int16", "small"), a
    precision.Precision, or None (weights.default_precision: the scale's shipped profile, int8
    at x4, grouped-x2 at x2)."""

    def __init__(self, weights: WeightsArg = None, *, scale: int = 4,
                 prune: float | None = None, lr: float | None = None, adapting: bool = True,
                 estimated: bool = False, grid: str = "centre", method: str = "backprop",
                 seed: int = 0, options: dict | None = None,
                 precision: str | Precision | None = None):
        check_scale(scale)
        grid_offset(grid, scale)  # refuses an unknown grid before any work
        if precision is None:
            precision = default_precision(scale, method)
        # the profile's name for reports (a Precision built by hand has none)
        self.precision = precision if isinstance(precision, str) else None
        prec = precision if isinstance(precision, Precision) else shipped_precision(precision)
        if isinstance(weights, (str, os.PathLike)):
            weights = resolve_path(weights)
            scales = trained_scales(weights)
            if scales and scale not in scales:  # allowed (the blur dominates), but said
                warnings.warn(f"{os.path.basename(weights)} was trained for "
                              f"x{'/x'.join(map(str, sorted(scales)))}, not x{scale}",
                              stacklevel=2)
            if is_state_file(weights):
                weights = load_state(weights)
        if isinstance(weights, State):
            if prune is not None:
                raise InputError("a saved state carries its own masks: --prune does not apply")
            if weights.scale != scale:
                raise InputError(f"the state was adapted for x{weights.scale}, not x{scale}")
            self.net = IntNet(weights.weights, weights.masks, precision=prec)
            self.lr = weights.lr if lr is None else lr
            self.base, self.kernels, self.steps = weights.base, list(weights.kernel_sha256), \
                weights.steps
        else:
            if weights is None:
                self.base = shipped_start(scale, adapting, estimated)
            else:
                self.base = "arrays" if isinstance(weights, list) else os.path.basename(weights)
            wf, masks, default_lr = load_model(weights, prune, adapting=adapting, scale=scale,
                                               estimated=estimated)
            self.net = IntNet(weights_to_int(wf), masks, precision=prec)
            self.lr = default_lr if lr is None else lr
            self.kernels, self.steps = [], 0
        self.scale, self.grid, self.method, self.seed = scale, grid, method, seed
        self.learner = make_learner(self.net, method, seed, options)

    def pair(self, image: np.ndarray, kernel: KernelArg, max_side: int = TRAIN_MAX,
             noise: float | str = 0.0, jpeg: JpegArg = None) -> tuple[np.ndarray, np.ndarray]:
        """The online training pair of an HxW(x3) uint8 image and its kernel: a 2-D float
        array, a resizer's name (RESIZERS), or a blind.Estimate (its fixed-point taps). The son
        is degraded like the image: ``noise`` levels of seeded noise ("auto": the image's own,
        noise_level), then a JPEG round trip at ``jpeg`` = quality or (quality, subsampling) if
        not None ("auto": read from the image's pixels, jpeg_setting) (make_training_pair)."""
        rgb, _ = _as_rgb(image)
        k_fixed = fixed_kernel(kernel, self.scale)
        check_inputs(rgb.shape, k_fixed, self.scale, 0)
        return self._pair(rgb, k_fixed, max_side, noise_level(rgb, noise),
                          jpeg_setting(jpeg, rgb))

    def _pair(self, rgb, k_fixed, max_side=TRAIN_MAX, noise_q8=0, jpeg=None):
        digest = kernel_digest(k_fixed)
        if digest not in self.kernels:
            self.kernels.append(digest)
        return make_training_pair(rgb, k_fixed, self.scale, max_side, self.grid, noise_q8, jpeg,
                                  self.seed)

    def learn(self, pairs: list, steps: int,
              progress: Callable[[int, int, float], None] | None = None) -> list[float]:
        """``steps`` SGD steps, step i on ``pairs[i % len(pairs)]``; returns the L1 losses in the
        float network's units (pixels / 255), a reporting boundary after each step."""
        losses = learn_steps(self.learner, pairs, steps, self.lr, progress)
        self.steps += steps
        return losses

    def super_resolve(self, image: np.ndarray, turns: tuple = (0,),
                      grid: str | None = None) -> np.ndarray:
        """(scale*H, scale*W[, 3]) uint8 SR of an HxW(x3) uint8 image with the current weights;
        ``turns``: the self-ensemble's transform codes (intsr.ensemble.choose; one pass by
        default), the outputs averaged in integers; ``grid``: the image's (None: the
        Adapter's, the one its steps learned; plain SR takes each image's own)."""
        rgb, gray = _as_rgb(image)
        check_inputs(rgb.shape, np.ones((1, 1)), self.scale, 0)
        grid = self.grid if grid is None else grid
        out = self_ensemble.average(self._turned_pass(rgb, c, grid) for c in turns)
        return _grey(out) if gray else out

    def _turned_pass(self, rgb, code, grid):
        up = bicubic_upsample_u8(self_ensemble.turn(rgb, code), self.scale, grid)
        return self_ensemble.unturn(self.net.predict(up, tile=SR_TILE), code)

    def held_out_l1(self, pair):
        """Sum of |network output - target| in 8-bit levels over a pair (an int): the safety
        net's score of this network on pixels it did not train on."""
        inp, target = pair
        return _l1(self.net.predict(inp, tile=SR_TILE), target)

    def state(self) -> State:
        # 16-bit masters (precision) widen to the file's int32 exactly: v << 16, same scale
        masters = [w if w.bits == 32 else
                   QTensor(w.value.astype(np.int32) << (32 - w.bits), w.scale)
                   for w in self.net.weights]
        return State(masters, [np.isin(np.arange(w.shape[3]), k) for w, k in
                               zip(self.net.weights, self.net.kept, strict=True)],
                     self.scale, self.lr, self.base, self.kernels, self.steps)


def learn_steps(learner, pairs, steps, lr, progress=None):
    """The online loop, once for every caller (Adapter.learn, the evaluation harness): ``steps``
    steps of ``learner`` (make_learner), step i on ``pairs[i % len(pairs)]`` at rate ``lr``
    (divided by the learner's lr_divisor, then lr_to_fixed: the float boundary); returns the L1
    losses in the float network's units (pixels / 255), a reporting boundary after each step."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise InputError(f"steps must be a non-negative integer, not {steps}")
    losses = []
    for i in range(steps):
        inp, target = pairs[i % len(pairs)]
        mult, shift = lr_to_fixed(lr / learner.lr_divisor(), target.size)
        # on the threading policy's count, chosen again after each step (intsr.threads)
        num, exp = threads.POLICY.step(learner.step, inp, target, mult, shift)
        losses.append(float(np.ldexp(float(num), exp)) / target.size * 256 / 255)
        if progress:
            progress(i + 1, steps, losses[-1])
    return losses


def super_resolve(image: np.ndarray, *, scale: int = 4, weights: WeightsArg = None,
                  grid: str | None = None, ensemble: int | str = "auto") -> np.ndarray:
    """Plain SR without adaptation (no kernel needed), with the shipped weights meant for direct
    SR unless ``weights`` is given (a saved state too). ``grid``: "centre", "corner" or "auto" /
    None (blind.grid_prior: the image's colour noise decides, resolve_grid). ``ensemble``:
    "auto" or 1, 2, 4, 8 passes of the self-ensemble (intsr.ensemble; without a kernel: all
    eight turns on the centre grid, the transpose on the corner grid)."""
    rgb, _ = _as_rgb(image)
    check_inputs(rgb.shape, np.ones((1, 1)), scale, 0)
    grid, _ = resolve_grid(grid, rgb, True)
    turns = sr_turns(None, scale, grid, ensemble, rgb.shape)
    return Adapter(weights, scale=scale, adapting=False, grid=grid).super_resolve(image, turns)


def resolve_grid(grid, images, blind_mode):
    """(grid, how it was chosen) for one HxWx3 uint8 image or a list sharing one degradation:
    ``grid`` "centre" or "corner" as given; "auto" from blind.grid_prior (the grid cannot be
    read from pixels: a prior on how such an image is made, docs/real-inputs.md); None: "auto"
    in blind mode and plain SR, "centre" with a kernel given (Eq. 1, the paper's protocol).
    How: {"grid_from": "given" | "default" | "prior"}, the prior's with its "colour_noise"."""
    if grid is None and not blind_mode:
        return "centre", {"grid_from": "default"}
    if grid is None or grid == "auto":
        images = [images] if isinstance(images, np.ndarray) else images
        grid, chroma = blind.grid_prior([_as_rgb(im)[0] for im in images])
        return grid, {"grid_from": "prior", "colour_noise": chroma / 256}
    if grid not in GRIDS:
        raise InputError(f"grid must be 'centre', 'corner' or 'auto', not {grid!r}")
    return grid, {"grid_from": "given"}


def sr_turns(k_fixed, scale, grid, setting, shape):
    """The self-ensemble's turns for an LR image of ``shape`` (intsr.ensemble.choose)."""
    pixels = shape[0] * shape[1] * scale * scale
    return self_ensemble.choose(k_fixed, scale, grid, setting, pixels)


def _grey(out):
    # The three output channels are three estimates of the same grey level: average.
    return ((out.astype(np.int32).sum(axis=2) + 1) // 3).astype(np.uint8)


def _l1(a, b):
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).sum(dtype=np.int64))


def start_flags(kernel, steps, degraded=False):
    """Adapter's ``adapting`` and ``estimated`` for the kernel an adaptation runs with (which
    shipped weights it starts from: weights.shipped_start)."""
    return {"adapting": adapts_from_meta(kernel, steps, degraded),
            "estimated": isinstance(kernel, blind.Estimate)}


def adapts_from_meta(kernel, steps, degraded=False):
    """Whether the steps start from the meta-learned weights (MAML over Gaussian blurs, the
    paper's: for a kernel given, and for an estimated Gaussian on a clean image) or from the
    shipped direct-SR weights, trained over real inputs: for an image a resizer made (``kernel``
    a resizer's name, or an estimate that names one), and in blind mode for an image
    ``degraded`` beyond blur (noisy or a JPEG), which the paper's point never saw
    (docs/real-inputs.md: measured better there, and a clean image may be the paper's)."""
    if isinstance(kernel, blind.Estimate):
        return steps > 0 and kernel.resizer is None and not degraded
    return steps > 0 and not isinstance(kernel, str)


def fixed_kernel(kernel, scale):
    """Fixed-point taps of a kernel given as a 2-D float array, a resizer's name
    (intsr.floatpath.realdeg.RESIZERS, at ``scale``) or a blind.Estimate."""
    if isinstance(kernel, blind.Estimate):
        return kernel.k_fixed
    if isinstance(kernel, str):
        if kernel not in RESIZERS:
            raise InputError(f"kernel must be an array, 'auto' or a resizer "
                             f"({', '.join(RESIZERS)}), not {kernel!r}")
        return kernel_to_fixed(resizer_kernel(kernel, scale))
    return kernel_to_fixed(validate_kernel(kernel))


def jpeg_setting(jpeg, rgb=None):
    """None, a quality 1-100, (quality, Pillow subsampling code 0/1/2), or "auto" (read from the
    pixels of ``rgb``: blind.estimate_jpeg) -> None or a pair."""
    if isinstance(jpeg, str) and jpeg == "auto":
        return blind.estimate_jpeg(rgb)
    if jpeg is None:
        return None
    q, sub = (jpeg, 2) if isinstance(jpeg, (int, np.integer)) else tuple(jpeg)
    if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or not 1 <= q <= 100:
        raise InputError(f"JPEG quality must be an integer from 1 to 100, not {q}")
    if sub not in (0, 1, 2):
        raise InputError(f"JPEG subsampling must be 0 (4:4:4), 1 (4:2:2) or 2 (4:2:0), not {sub}")
    return int(q), int(sub)


def _as_rgb(image):
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise InputError(f"image must be uint8, not {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2), True
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image), False
    raise InputError(f"image must be HxW or HxWx3, not shape {image.shape}")


def check_scale(scale):
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 2:
        raise InputError(f"scale must be an integer >= 2, not {scale}")


def check_inputs(shape, kernel, scale, steps):
    """Validate sizes and hyper-parameters; raise InputError (a ValueError) with one line."""
    check_scale(scale)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise InputError(f"steps must be a non-negative integer, not {steps}")
    h, w = shape[:2]
    if h // scale < MIN_SON or w // scale < MIN_SON:
        raise InputError(f"image {w}x{h} is too small for scale {scale}: the son would be "
                         f"under {MIN_SON} pixels (need at least {MIN_SON * scale} px a side)")
    if kernel.shape[0] > h or kernel.shape[1] > w:
        raise InputError(f"kernel {kernel.shape[1]}x{kernel.shape[0]} is larger than the "
                         f"image {w}x{h}")


def noise_level(image: np.ndarray, noise: float | str) -> int:
    """The son's noise, sigma in levels with 8 fractional bits: ``noise`` levels, or "auto":
    this (H, W[, 3]) uint8 image's own, estimated on the device (blind.estimate_noise)."""
    if isinstance(noise, str):
        if noise != "auto":
            raise InputError(f"noise must be a number of levels or 'auto', not {noise!r}")
        return blind.estimate_noise(_as_rgb(image)[0])
    return noise_to_fixed(noise)


def make_training_pair(lr_rgb, k_fixed, scale, max_side=TRAIN_MAX, grid="centre", noise_q8=0,
                       jpeg=None, seed=0):
    """(network input, target) for the online steps: bicubic_up(son) and I_LR cropped to a
    multiple of ``scale``; both (H', W', 3) uint8. The son is made, and upsampled, on ``grid``
    (the sampling grid the input image was made on: intsr.kernels.resample).

    The son is degraded like its image (issue 28): ``noise_q8`` (sigma in levels, 8 fractional
    bits) of noise seeded by ``seed`` (intsr.kernels.noise_u8), added to the 8-bit son, then a
    JPEG round trip at ``jpeg`` = (quality, subsampling) if not None (intsr.io.jpeg_roundtrip).

    Images wider or taller than ``max_side`` train on their central ``max_side`` window (the
    son is still made from the whole image), which bounds a step's time and memory; Set5-sized
    inputs (LR up to 128 px) are never cropped."""
    h, w, _ = lr_rgb.shape
    h, w = h - h % scale, w - w % scale
    son = degrade_u8(np.ascontiguousarray(lr_rgb[:h, :w]), k_fixed, KERNEL_BITS, scale, grid)
    side = max_side - max_side % scale
    y0 = (h - side) // 2 // scale * scale if h > side else 0
    x0 = (w - side) // 2 // scale * scale if w > side else 0
    th, tw = min(h, side), min(w, side)
    son = np.ascontiguousarray(son[y0 // scale:(y0 + th) // scale, x0 // scale:(x0 + tw) // scale])
    if noise_q8:
        noisy = np.empty(son.size, np.uint8)
        add_noise_u8(son.reshape(-1), noise_q8, seed, noisy)
        son = noisy.reshape(son.shape)
    if jpeg is not None:
        son = jpeg_roundtrip(son, *jpeg)
    return (bicubic_upsample_u8(son, scale, grid),
            np.ascontiguousarray(lr_rgb[y0:y0 + th, x0:x0 + tw]))


def estimate_kernel(images: np.ndarray | list[np.ndarray], *, scale: int = 4,
                    estimator: str | os.PathLike | None = None) -> blind.Estimate:
    """Blind mode: the blur kernel of ``images`` (one HxW(x3) uint8 image, or a list sharing
    one kernel) estimated on integers (intsr.blind). ``estimator``: an estimator .npz (None:
    the shipped one for ``scale``). Returns a blind.Estimate."""
    images = [images] if isinstance(images, np.ndarray) else list(images)
    rgbs = [_as_rgb(im)[0] for im in images]
    for rgb in rgbs:
        check_inputs(rgb.shape, np.zeros((1, 1), np.int32), scale, 0)
    side = min(min(r.shape[:2]) for r in rgbs)
    est = blind.estimator(scale) if estimator is None else blind.estimator(scale, str(estimator))
    return est.estimate(rgbs, max_size=side)


def adapt(image: np.ndarray, kernel: KernelArg | None = "auto", *, scale: int = 4,
          steps: int = 10, prune: float | None = None, weights: WeightsArg = None,
          lr: float | None = None, seed: int = 0,
          progress: Callable[[int, int, float], None] | None = None,
          report: dict | None = None, adapter: Adapter | None = None, grid: str | None = None,
          estimator: str | os.PathLike | None = None, method: str = "backprop",
          options: dict | None = None, precision: str | Precision | None = None,
          noise: float | str | None = None, jpeg: JpegArg = None,
          check: bool | None = None, ensemble: int | str = "auto") -> np.ndarray:
    """Adapt the network to ``image`` with its blur ``kernel`` and super-resolve it.

    image: (H, W, 3) or (H, W) uint8; kernel: 2-D float array (normalised to sum 1), a
    resizer's name ("bicubic", "bilinear", "box", "lanczos", "cv2-cubic", "cv2-linear": the
    antialiasing kernel of that resizer at ``scale``, intsr.floatpath.realdeg), a
    blind.Estimate, or "auto" / None: estimate it on the device (blind mode, estimate_kernel;
    ``estimator`` as there; the result's ``estimate`` describes it; at a scale with
    no estimator shipped, blind.ASSUMED_RESIZER is assumed).
    Returns (scale*H, scale*W[, 3]) uint8. ``steps=0`` is plain SR. ``prune`` picks a shipped
    mask by pruning ratio (None: the shipped default). ``weights``: a weights file path (or a
    saved state to continue from) or a list of float HWIO arrays (None: the shipped meta-learned
    weights, or with ``steps=0`` the shipped weights for direct SR). ``lr``: SGD step (None: the
    weights' default). ``method``: "backprop" (Algorithm 2), "forward" (forward gradients,
    intsr.forwardgrad) or "mest" (mutating masks, intsr.mest), with ``options`` for it
    (make_learner); ``seed`` seeds their integer random draws and the son's noise
    (back-propagation with round-to-nearest draws nothing: every step is deterministic).
    ``precision``: per-tensor bit widths, a shipped profile name or a precision.Precision (None:
    the scale's default, as Adapter). A resizer's kernel starts from the shipped direct-SR
    weights instead of the meta-learned ones (adapts_from_meta). ``grid``: the sampling grid the
    image was made on, "centre" (this project's Eq. 1), "corner" (MZSR / ZSSR / KernelGAN) or
    "auto" (blind.grid_prior); None: "auto" in blind mode, "centre" with a kernel given, the
    adapter's with ``adapter`` (resolve_grid; the result's degradation says which and why).
    ``adapter``: continue an existing Adapter; after the call it holds the adapted state. Its
    weights, prune, lr, method, options, precision and seed are its own: giving any of them
    too is an InputError, as is a scale or grid other than the adapter's.

    The son is degraded like the image (issue 28): ``noise`` levels of seeded noise ("auto":
    estimated on the device, blind.estimate_noise; None: "auto" in blind mode, else 0) and a
    JPEG round trip at ``jpeg`` (a quality, or (quality, subsampling); None: none; "auto": the
    quality read from the image's pixels if it reads as once saved as a JPEG, blind.estimate_jpeg).
    ``check``: the safety net (None: on in blind mode). The steps then train on the window
    without its last rows, and the adapted network, the shipped direct-SR weights and bicubic
    are scored on those held-out rows of the son pair; the best of the three makes the output
    (the result's ``check``). ``ensemble``: the final pass averages the network's outputs over
    the turns of the image that map its degradation (kernel, grid) onto itself, "auto" (as many
    as one 1080p frame's pixels allow) or at most 1, 2, 4 or 8 passes (intsr.ensemble).

    ``progress(step, n_steps, loss)`` is called after each step. ``report`` (a dict, kept for
    existing callers; adapt_result returns the same as an object) receives AdaptResult.report():
    per-step losses, per-phase seconds, counted MACs, the degradation the son was made with
    and, if report['trace_memory'] is true, the peak traced memory in bytes."""
    result = adapt_result(image, kernel, scale=scale, steps=steps, prune=prune, weights=weights,
                          lr=lr, seed=seed, progress=progress, adapter=adapter, grid=grid,
                          estimator=estimator, method=method, options=options,
                          precision=precision, noise=noise, jpeg=jpeg, check=check,
                          ensemble=ensemble,
                          trace_memory=bool(report and report.get("trace_memory")))
    if report is not None:
        report.update(result.report())
    return result.image


@dataclass
class AdaptResult:
    """One adaptation (adapt_result): the SR image and how it was made."""
    image: np.ndarray  # (scale*H, scale*W[, 3]) uint8
    losses: list  # L1 loss after each step, in the float network's units (pixels / 255)
    seconds: dict  # per phase: estimate (blind or noise), load, adapt, sr
    macs: int  # multiply-accumulates counted by the network
    weights: str  # the weights the steps started from
    degradation: dict  # what the son was made with: grid, noise, JPEG, a resizer's name
    estimate: dict | None = None  # blind mode's estimate described, or {"assumed": resizer}
    check: dict | None = None  # the safety net: chosen, held-out rows, L1 of each candidate
    ensemble: list | None = None  # the turns the final pass averaged (intsr.ensemble)
    peak_bytes: int | None = None  # peak traced memory, with trace_memory

    def report(self) -> dict:
        """The fields of `intsr adapt --json` for one image (no image)."""
        out = {} if self.estimate is None else {"kernel_estimate": self.estimate}
        out.update(losses=self.losses, seconds=self.seconds, macs=self.macs,
                   weights=self.weights, degradation=self.degradation)
        if self.check is not None:
            out["check"] = self.check
        if self.ensemble is not None:
            out["ensemble"] = self.ensemble
        if self.peak_bytes is not None:
            out["peak_bytes"] = self.peak_bytes
        return out


def _adapter_conflicts(adapter, scale, grid, given):
    """adapt_result's ``adapter`` against the arguments that would build another one."""
    if adapter is None:
        return
    named = [name for name, value in given.items() if value]
    if named:
        raise InputError(f"adapter= carries its own {', '.join(named)}: give them to the "
                         "Adapter, not to adapt")
    if scale != adapter.scale or grid != adapter.grid:
        raise InputError(f"scale {scale} / grid {grid} differ from the adapter's "
                         f"(x{adapter.scale}, {adapter.grid})")


def adapt_result(image: np.ndarray, kernel: KernelArg | None = "auto", *, scale: int = 4,
                 steps: int = 10, prune: float | None = None, weights: WeightsArg = None,
                 lr: float | None = None, seed: int = 0,
                 progress: Callable[[int, int, float], None] | None = None,
                 adapter: Adapter | None = None, grid: str | None = None,
                 estimator: str | os.PathLike | None = None, method: str = "backprop",
                 options: dict | None = None, precision: str | Precision | None = None,
                 noise: float | str | None = None, jpeg: JpegArg = None,
                 check: bool | None = None, ensemble: int | str = "auto",
                 trace_memory: bool = False) -> AdaptResult:
    """adapt() returning an AdaptResult: the image, per-step losses, per-phase seconds, MACs,
    the estimate, the degradation, the safety net's scores and, with ``trace_memory``, the
    peak traced memory. Arguments as adapt()'s."""
    ensemble = self_ensemble.check_setting(ensemble)  # a bad setting fails before any estimate
    rgb, gray = _as_rgb(image)
    blind_mode = kernel is None or isinstance(kernel, str) and kernel == "auto"
    t0 = time.perf_counter()
    if adapter is not None and grid is None:
        grid, grid_how = adapter.grid, {"grid_from": "adapter"}
    else:
        grid, grid_how = resolve_grid(grid, rgb, blind_mode)
    _adapter_conflicts(adapter, scale, grid, {
        "weights": weights is not None, "prune": prune is not None, "lr": lr is not None,
        "method": method != "backprop", "options": options is not None,
        "precision": precision is not None, "seed": seed != 0})
    timings, described = {}, None
    trace = bool(trace_memory)
    if trace:
        tracemalloc.start()
    try:
        if blind_mode and estimator is None and not blind.has_estimator(scale):
            kernel = blind.ASSUMED_RESIZER
            described = {"assumed": kernel}
        elif blind_mode:
            kernel = estimate_kernel(rgb, scale=scale, estimator=estimator)
            described = kernel.describe()
        if noise is None:
            noise = "auto" if blind_mode else 0.0
        noise_q8 = noise_level(rgb, noise)
        jpeg_auto = isinstance(jpeg, str) and jpeg == "auto"
        jpeg = jpeg_setting(jpeg, rgb)
        if blind_mode or noise == "auto" or jpeg_auto or grid_how["grid_from"] == "prior":
            timings["estimate"] = time.perf_counter() - t0
        k_fixed = fixed_kernel(kernel, scale)
        check = blind_mode if check is None else bool(check)
        check_inputs(rgb.shape, k_fixed, scale, steps)
        turns = sr_turns(k_fixed, scale, grid, ensemble, rgb.shape)
        t0 = time.perf_counter()
        degraded = noise_q8 > 0 or jpeg is not None
        ad = adapter or Adapter(weights, scale=scale, prune=prune, lr=lr,
                                **start_flags(kernel, steps, degraded), grid=grid,
                                method=method, seed=seed, options=options, precision=precision)
        timings["load"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        pair = ad._pair(rgb, k_fixed, TRAIN_MAX, noise_q8, jpeg) if steps else None
        held = None
        if pair is not None and check and pair[0].shape[0] >= CHECK_SHARE * MIN_CHECK_ROWS:
            cut = pair[0].shape[0] - pair[0].shape[0] // CHECK_SHARE
            pair, held = ((pair[0][:cut], pair[1][:cut]), (pair[0][cut:], pair[1][cut:]))
        losses = ad.learn([pair] if steps else [], steps, progress)
        timings["adapt"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        chosen, scores = "adapted", None
        if held is not None:
            chosen, scores, fallback = _safety_net(ad, held, scale, grid, jpeg is None)
        if chosen == "bicubic":
            out, turns = bicubic_upsample_u8(rgb, scale, grid), (0,)
            out = _grey(out) if gray else out
        else:
            out = (fallback if chosen == "sr-weights" else ad).super_resolve(image, turns)
        timings["sr"] = time.perf_counter() - t0
        degradation = {"grid": grid, **grid_how, "noise": noise_q8 / 256,
                       "noise_estimated": noise == "auto",
                       "jpeg": None if jpeg is None else jpeg[0],
                       "subsampling": None if jpeg is None else jpeg[1]}
        name = kernel if isinstance(kernel, str) else getattr(kernel, "resizer", None)
        if name is not None:
            degradation["kernel"] = name
        return AdaptResult(
            out, losses, timings, int(ad.net.macs), ad.base, degradation, described,
            None if held is None else {"chosen": chosen, "held_out_rows": int(held[0].shape[0]),
                                       "l1": scores},
            self_ensemble.describe(turns),
            tracemalloc.get_traced_memory()[1] if trace else None)
    finally:
        if trace:
            tracemalloc.stop()


def _safety_net(ad, held, scale, grid, with_bicubic=True):
    """("adapted" | "sr-weights" | "bicubic", their held-out L1 sums, the direct-SR Adapter):
    the adapted network is kept unless the shipped direct-SR weights or, ``with_bicubic``,
    plain bicubic (the network input itself) do better on the held-out rows of the son pair;
    ties keep it. A JPEG's check runs without bicubic: its held-out target rows carry the
    blocks, which bicubic's blur matches better than a network that removes them, and on the
    held-out images every such win was wrong (docs/real-inputs.md, "The safety net")."""
    fallback = Adapter(None, scale=scale, adapting=False, grid=grid)
    scores = {"adapted": ad.held_out_l1(held), "sr-weights": fallback.held_out_l1(held)}
    if with_bicubic:
        scores["bicubic"] = _l1(held[0], held[1])
    best = min(scores.values())
    chosen = next(k for k in scores if scores[k] == best)
    return chosen, scores, fallback
