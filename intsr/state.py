"""The adapted state: what a device keeps between runs, as a plain ``.npz`` that loads with
``allow_pickle=False``.

Keys: ``format`` ("intsr-state-1"); ``w1`` .. ``w8`` the int32 master weights (HWIO) and
``scales`` their eight Eq. 14 scales (int64); ``m1`` .. ``m8`` the gradient masks (bool, one per
output channel; the last layer all True); ``scale`` the SR factor; and the provenance: ``base``
(the weights the adaptation started from), ``kernel_sha256`` (digests of the fixed-point
kernels it learned from, in order), ``steps`` (integer SGD steps taken so far) and ``lr``.

Nothing is converted on the way in or out: loading a state and running 5 more steps gives the
same integers as running them without the round trip (tests/test_state.py).
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

from intsr.arch import NUM_LAYERS, layer_shapes
from intsr.io import InputError, atomic_write
from intsr.quant import QTensor
from intsr.torchfile import read_npz

FORMAT = "intsr-state-1"
_MAX_SCALE = 1 << 10  # Eq. 14 scales are small integers; anything beyond is a damaged file


@dataclass
class State:
    weights: list  # NUM_LAYERS int32 QTensors, HWIO
    masks: list  # NUM_LAYERS bool arrays
    scale: int
    lr: float
    base: str
    kernel_sha256: list = field(default_factory=list)
    steps: int = 0


def kernel_digest(k_fixed):
    """SHA-256 of a fixed-point kernel (shape and int32 taps): which blur a state learned."""
    k = np.ascontiguousarray(k_fixed, np.int32)
    return hashlib.sha256(np.asarray(k.shape, np.int64).tobytes() + k.tobytes()).hexdigest()


def is_state_file(path):
    """Whether ``path`` is an ``.npz`` holding an adapted state (a ``format`` entry)."""
    try:
        with zipfile.ZipFile(path) as z:
            return "format.npy" in z.namelist()
    except (OSError, zipfile.BadZipFile, NotImplementedError, ValueError, EOFError):
        return False


def save_state(path: str | os.PathLike, state: State) -> None:
    arrays = {"format": np.str_(FORMAT), "scales": np.array([w.scale for w in state.weights],
                                                            np.int64),
              "scale": np.int64(state.scale), "lr": np.float64(state.lr),
              "base": np.str_(state.base), "steps": np.int64(state.steps),
              "kernel_sha256": np.array(state.kernel_sha256, dtype="<U64")}
    for layer, (w, m) in enumerate(zip(state.weights, state.masks, strict=True), start=1):
        arrays[f"w{layer}"] = np.ascontiguousarray(w.value, np.int32)
        arrays[f"m{layer}"] = np.asarray(m, bool)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_state(path: str | os.PathLike) -> State:
    """State from a file written by save_state; InputError with one line for anything else."""
    spec = {"format": ((), "U", 4 * 32), "scales": ((NUM_LAYERS,), "i"), "scale": ((), "i"),
            "lr": ((), "f"), "base": ((), "U", 4 * 4096), "steps": ((), "i"),
            "kernel_sha256": ((None,), "U", 4 * 64)}
    for layer, shp in enumerate(layer_shapes(), start=1):
        spec[f"w{layer}"] = (shp, "i", 4)
        spec[f"m{layer}"] = ((shp[3],), "b", 1)
    try:
        files = read_npz(path, spec, "state file")
    except ValueError as e:
        raise InputError(str(e)) from None
    if files["format"].shape != () or str(files["format"]) != FORMAT:
        raise InputError(f"{path}: unknown state format {str(files['format'])[:40]!r}")
    scales = files["scales"]
    if scales.shape != (NUM_LAYERS,) or scales.dtype.kind != "i" or \
            np.abs(scales).max() > _MAX_SCALE:
        raise InputError(f"{path}: bad weight scales")
    weights, masks = [], []
    for layer, shp in enumerate(layer_shapes(), start=1):
        w, m = files[f"w{layer}"], files[f"m{layer}"]
        if w.shape != shp or w.dtype != np.int32:
            raise InputError(f"{path}: w{layer} must be int32 of shape {shp}")
        if m.shape != (shp[3],) or m.dtype != bool:
            raise InputError(f"{path}: m{layer} must be bool of shape ({shp[3]},)")
        weights.append(QTensor(w, int(scales[layer - 1])))
        masks.append(m)
    if not masks[-1].all():
        raise InputError(f"{path}: the last layer is never pruned")
    scale, lr, steps = files["scale"], files["lr"], files["steps"]
    if scale.shape != () or scale.dtype.kind != "i" or not 2 <= int(scale) <= 16:
        raise InputError(f"{path}: bad scale factor")
    if lr.shape != () or lr.dtype.kind != "f" or not np.isfinite(lr) or lr <= 0:
        raise InputError(f"{path}: bad learning rate")
    if steps.shape != () or steps.dtype.kind != "i" or steps < 0:
        raise InputError(f"{path}: bad step count")
    if files["base"].shape != () or files["base"].dtype.kind != "U":
        raise InputError(f"{path}: bad base-weights name")
    digests = files["kernel_sha256"]
    if digests.ndim != 1 or digests.dtype.kind != "U":
        raise InputError(f"{path}: bad kernel digests")
    return State(weights, masks, int(scale), float(lr), str(files["base"]),
                 [str(d) for d in digests], int(steps))
