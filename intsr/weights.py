"""Weight and mask files, and the shipped configuration: the one room that knows their formats.

Weights: ``.npz`` with keys ``conv1`` .. ``conv8`` (float OIHW), or a ``torch.save`` state_dict
(``.pt``, read by intsr.torchfile without torch) of this architecture saved by any code: the
eight conv weights are matched by shape, in order (conv_weights_from_state_dict). Inside intsr
weights are float32 HWIO (intsr.arch). Masks: ``p{pct}_l{layer}`` bool ``[c_out]`` (layer
1..8) and ``p{pct}_tau`` for every shipped pruning ratio (intsr.pruning.RATIOS).

The shipped configuration (``weights/default.json``) names the default weights, masks, learning
rate and pruning ratio; ``load_model`` and ``resolve_masks`` are how every command (adapt, sr,
eval, cost, info) turns its options into weights and masks.
"""
from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path

import numpy as np

from intsr import precision, pruning, torchfile
from intsr.arch import CHANNELS, NUM_LAYERS, layer_shapes, oihw_shapes
from intsr.io import InputError, atomic_write


def _shipped_dir():
    # In a checkout (editable install or not) the repository's weights/ folder; in an installed
    # wheel the same files as package data intsr.shipped (pyproject.toml maps one to the other).
    tree = Path(__file__).resolve().parent.parent / "weights"
    if (tree / "default.json").is_file():
        return tree
    return Path(str(resources.files("intsr") / "shipped"))


WEIGHTS_DIR = _shipped_dir()
MASK_RATIOS = {round(100 * r): r for r in pruning.RATIOS}  # file key percent -> ratio


def _load_pt(path):
    obj = torchfile.read(path)
    try:
        return conv_weights_from_state_dict(path, obj)
    except (RecursionError, TypeError) as e:  # e.g. str() of a key nested thousands deep
        raise ValueError(f"{path}: not a state_dict of this network "
                         f"({type(e).__name__})") from None


def conv_weights_from_state_dict(path, obj):
    """The eight conv weights (OIHW) of a state_dict saved by any code for this architecture:
    taken by shape, in order, whatever the key names (``convs.0.weight``, an ``nn.Sequential``'s
    ``0.weight``, ``2.weight``, ..., a DDP ``module.`` prefix), also inside a checkpoint dict's
    ``state_dict`` or ``model``. Anything else is refused with one line: biases, another layer
    kind or architecture, a different number of tensors."""
    for _ in range(2):  # a checkpoint, possibly holding a wrapper that holds the state_dict
        if isinstance(obj, dict):
            inner = [obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), dict)]
            if inner:
                obj = inner[0]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state_dict, got {type(obj).__name__}")
    items = [(str(k), v) for k, v in obj.items()]
    bias = [k for k, _ in items if k.endswith("bias")]
    if bias:
        raise ValueError(f"{path}: has biases ({bias[0]}); this network has none")
    other = [(k, v) for k, v in items if not (isinstance(v, np.ndarray) and v.ndim == 4)]
    if other:
        k, v = other[0]
        what = f"shape {v.shape}" if isinstance(v, np.ndarray) else type(v).__name__
        raise ValueError(f"{path}: {k} ({what}) is not a 3x3 conv weight of this network")
    if len(items) != NUM_LAYERS:
        raise ValueError(f"{path}: {len(items)} conv weights, this network has {NUM_LAYERS}")
    index = [re.fullmatch(r"(?:module\.)?(.*?)(\d+)\.weight", k) for k, _ in items]
    if all(index) and len({m.group(1) for m in index}) == 1:
        # Numbered layers of one container: their numbers give the order.
        items = [it for _, it in sorted(zip((int(m.group(2)) for m in index), items, strict=True))]
    for layer, ((k, v), want) in enumerate(zip(items, oihw_shapes(), strict=True), start=1):
        if v.shape != want:
            raise ValueError(f"{path}: tensor {layer} ({k}) has shape {v.shape}, layer {layer} of "
                             f"this network is OIHW {want}")
    return [v for _, v in items]


# Room for a member's .npy header (numpy pads its own to 64 or 128 bytes).
def _load_npz(path):
    want = [f"conv{i + 1}" for i in range(NUM_LAYERS)]
    spec = {k: (s, "f") for k, s in zip(want, oihw_shapes(), strict=True)}
    arrays = torchfile.read_npz(path, spec, ".npz")
    return [arrays[k] for k in want]


def _to_hwio(path, oihw_list):
    out = []
    for layer, (w, shp) in enumerate(zip(oihw_list, layer_shapes(), strict=True)):
        if not isinstance(w, np.ndarray) or w.dtype.kind != "f":
            raise ValueError(f"{path}: layer {layer + 1} is not a float array")
        want = (shp[3], shp[2], shp[0], shp[1])
        if w.shape != want:
            raise ValueError(f"{path}: layer {layer + 1} has shape {w.shape}, expected OIHW {want}")
        if not np.all(np.isfinite(w)):
            raise ValueError(f"{path}: layer {layer + 1} contains NaN or inf")
        out.append(np.ascontiguousarray(w.astype(np.float32).transpose(2, 3, 1, 0)))
    return out


def resolve_path(path):
    """``path`` itself if it exists; else, for ``weights/NAME`` as the README writes it, the
    shipped file NAME (a wheel carries the weights/ folder inside the package), so the
    documented commands work from any folder."""
    p = Path(path)
    if p.exists() or p.is_absolute() or len(p.parts) != 2 or p.parts[0] != "weights":
        return path
    shipped = WEIGHTS_DIR / p.name
    return shipped if shipped.is_file() else path


def trained_scales(path):
    """The scales a shipped weights file is configured for (its name and size match one in
    weights/default.json), or an empty set for any other file: how a wrong-scale shipped file
    is caught (a plain weights file carries no scale of its own)."""
    p = Path(path)
    shipped = WEIGHTS_DIR / p.name
    if not (p.is_file() and shipped.is_file() and p.stat().st_size == shipped.stat().st_size):
        return set()
    return {int(sc) for sc, cfg in _config()["scales"].items()
            if p.name in (cfg.get("weights"), cfg.get("blind_weights"), cfg.get("sr_weights"))}


def load_weights(path: str | os.PathLike) -> list[np.ndarray]:
    """8 float32 HWIO arrays from an ``.npz`` or a ``torch.save`` state_dict (``.pt``);
    ValueError with one line for any other file."""
    path = os.fspath(resolve_path(path))
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such weights file")
    try:
        return _to_hwio(path, _load_npz(path) if path.endswith(".npz") else _load_pt(path))
    except ValueError as e:
        # The messages quote names from the file: keep them one bounded line naming it.
        msg = " ".join(str(e).split())
        if not msg.startswith(path):
            msg = f"{path}: {msg}"
        if msg != str(e) or len(msg) > 300:
            msg = msg if len(msg) <= 300 else msg[:297] + "..."
            raise (InputError if isinstance(e, InputError) else ValueError)(msg) from None
        raise


def save_weights_npz(path, weights_hwio):
    """Write HWIO weights as ``conv1`` .. ``conv8`` float32 OIHW."""
    if len(weights_hwio) != NUM_LAYERS:
        raise ValueError(f"expected {NUM_LAYERS} layers, got {len(weights_hwio)}")
    arrays = {}
    for layer, (w, shp) in enumerate(zip(weights_hwio, layer_shapes(), strict=True)):
        w = np.asarray(w)
        if w.shape != shp:
            raise ValueError(f"layer {layer + 1}: shape {w.shape}, expected HWIO {shp}")
        if not np.all(np.isfinite(w)):
            raise ValueError(f"layer {layer + 1} contains NaN or inf")
        oihw = w.astype(np.float32).transpose(3, 2, 0, 1)
        arrays[f"conv{layer + 1}"] = np.ascontiguousarray(oihw)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_masks(path: str | os.PathLike) -> dict[float, list[np.ndarray]]:
    """{ratio: list of 8 bool arrays [c_out]} from ``p{pct}_l{l}`` keys (+ ``p{pct}_tau``)."""
    return load_masks_with_tau(path)[0]


def load_masks_with_tau(path):
    """(masks as in load_masks, {ratio: tau})."""
    path = os.fspath(path)
    spec = {f"p{p}_l{layer}": ((CHANNELS[layer],), "biu") for p in MASK_RATIOS
            for layer in range(1, NUM_LAYERS + 1)}
    spec.update({f"p{p}_tau": ((), "iuf") for p in MASK_RATIOS})
    files = torchfile.read_npz(path, spec, "masks .npz")
    masks, taus = {}, {}
    for pct, ratio in MASK_RATIOS.items():
        layers = []
        for layer in range(1, NUM_LAYERS + 1):
            m = files[f"p{pct}_l{layer}"]
            if m.shape != (CHANNELS[layer],):
                raise ValueError(f"{path}: p{pct}_l{layer} has shape {m.shape}, "
                                 f"expected ({CHANNELS[layer]},)")
            if m.dtype != bool and not (m.dtype.kind in "iu" and np.isin(m, (0, 1)).all()):
                raise ValueError(f"{path}: p{pct}_l{layer} is not a 0/1 mask")
            layers.append(m.astype(bool))
        if not layers[-1].all():
            raise ValueError(f"{path}: p{pct}: the last layer must never be pruned")
        tau = files[f"p{pct}_tau"]
        if tau.shape != () or tau.dtype.kind not in "iuf" or not np.isfinite(tau):
            raise ValueError(f"{path}: p{pct}_tau must be a finite scalar")
        masks[ratio] = layers
        taus[ratio] = float(tau)
    return masks, taus


def save_masks_npz(path, masks, taus):
    """Inverse of load_masks_with_tau; ``masks``/``taus`` keyed by the five ratios."""
    arrays = {}
    for pct, ratio in MASK_RATIOS.items():
        if ratio not in masks:
            raise ValueError(f"missing masks for ratio {ratio}")
        for layer, m in enumerate(masks[ratio], start=1):
            arrays[f"p{pct}_l{layer}"] = np.asarray(m, bool)
        arrays[f"p{pct}_tau"] = np.float64(taus[ratio])
    atomic_write(path, lambda f: np.savez(f, **arrays))
    load_masks(path)  # refuse to leave behind a file the loader would reject


def shipped_config(scale=4):
    """The shipped configuration for ``scale``: the weights to adapt from (``weights``; in
    blind mode ``blind_weights`` if given), the weights for SR without adaptation
    (``sr_weights``), the masks file, the kernel estimator of blind mode if any
    (``estimator``), the default precision profile if not int8 (``precision``), the learning
    rate and the default pruning ratio.
    InputError for a scale nothing is shipped for (the weights are trained per scale)."""
    cfg = _config()
    per_scale = cfg.pop("scales")
    if str(scale) not in per_scale:
        raise InputError(f"no weights are shipped for x{scale} (shipped: "
                         f"{', '.join('x' + k for k in sorted(per_scale))}): give --weights "
                         f"trained for x{scale}")
    return {**cfg, **per_scale[str(scale)], "scale": scale}


def shipped_scales():
    return sorted(int(k) for k in _config()["scales"])


def _config():
    with open(WEIGHTS_DIR / "default.json") as f:
        return json.load(f)


def precision_profiles():
    """{name: Precision} of the profiles shipped in weights/precision.json (int8 first)."""
    with open(WEIGHTS_DIR / "precision.json") as f:
        table = json.load(f)["profiles"]
    return {name: precision.Precision.from_dict(d) for name, d in table.items()}


def default_precision(scale=4, method="backprop"):
    """The profile name a run uses without an explicit precision: for back-propagation the
    scale's ``precision`` in weights/default.json (allocated for it on that scale's weights,
    docs/precision.md), else int8, the paper's widths (forward gradients need 8-bit forward
    weights; mutating masks were not measured with other widths)."""
    if method != "backprop":
        return "int8"
    return _config()["scales"].get(str(scale), {}).get("precision", "int8")


def shipped_precision(name=None):
    """The shipped profile ``name`` (None: int8, the paper's widths), or InputError."""
    if name is None:
        return precision.INT8
    profiles = precision_profiles()
    if name not in profiles:
        raise InputError(f"no precision profile {name!r}; choose one of "
                         f"{', '.join(profiles)}")
    return profiles[name]


def resolve_masks(prune=None, masks_path=None, layerwise=None, scale=4):
    """Gradient masks for a run: None (every filter trains) or NUM_LAYERS bool arrays.

    ``prune``: a pruning ratio of intsr.pruning.RATIOS (None: the shipped default), taken from
    ``masks_path`` or else the shipped masks file for ``scale``; ratio 0 without a file is
    None.
    ``layerwise``: the Table 6 baseline instead, the first N layers frozen."""
    if layerwise is not None:
        if prune is not None or masks_path is not None:
            raise InputError("--prune/--masks and --layerwise are two kinds of masks; give one")
        try:
            return pruning.layerwise_masks(layerwise)
        except ValueError as e:
            raise InputError(str(e)) from None
    ratio = _config().get("prune", 0.0) if prune is None else prune
    if not any(abs(ratio - r) < 1e-9 for r in pruning.RATIOS):
        raise InputError(f"no shipped mask for pruning ratio {ratio}; choose one of "
                         f"{sorted(pruning.RATIOS)}")
    if ratio == 0 and masks_path is None:
        return None
    table = load_masks(masks_path or WEIGHTS_DIR / shipped_config(scale)["masks"])
    match = [r for r in table if abs(r - ratio) < 1e-9]
    if not match:
        raise InputError(f"no mask for pruning ratio {ratio}; the file has {sorted(table)}")
    return table[match[0]]


def shipped_start(scale=4, adapting=True, estimated=False):
    """The shipped weights file (a name in weights/) for ``scale`` and the use: the
    meta-learned starting point when ``adapting`` (``blind_weights``, the point meta-learned
    over blind mode's inputs too, if the kernel was ``estimated`` and the scale has one;
    otherwise ``weights``, the paper's), else ``sr_weights``, the weights meant for direct SR
    (the meta-learned points are poor SR until adapted)."""
    return _start_name(shipped_config(scale), adapting, estimated)


def _start_name(cfg, adapting, estimated):
    if not adapting:
        return cfg["sr_weights"]
    return cfg.get("blind_weights", cfg["weights"]) if estimated else cfg["weights"]


def load_model(weights: str | os.PathLike | list | None = None, prune: float | None = None,
               masks_path: str | os.PathLike | None = None, layerwise: int | None = None,
               adapting: bool = True, scale: int = 4,
               estimated: bool = False) -> tuple[list, list | None, float]:
    """(float HWIO weights, masks or None, default learning rate) for a weights file path, or a
    list of float HWIO arrays, or None: the shipped weights for ``scale`` and the use
    (shipped_start), the direct-SR ones with their own rate ``sr_lr`` if the scale's
    configuration has one. Masks as resolve_masks."""
    masks = resolve_masks(prune, masks_path, layerwise, scale)
    lr = float(_config()["lr"])
    if weights is None:
        cfg = shipped_config(scale)
        weights = WEIGHTS_DIR / _start_name(cfg, adapting, estimated)
        if not adapting:  # steps from the direct-SR weights (a resizer's input) take their rate
            lr = float(cfg.get("sr_lr", lr))
    if isinstance(weights, (str, os.PathLike)):
        weights = load_weights(weights)
    return weights, masks, lr
