"""Weight and mask import/export without torch.

Weights come as ``.npz`` (keys ``conv1`` .. ``conv8``, float OIHW) or as a ``torch.save`` file of
the trainer's ``state_dict`` (zip archive: ``<name>/data.pkl`` + raw storages ``<name>/data/<k>``).
The pickle inside a ``.pt`` is read by a restricted unpickler: only the few globals that torch's
tensor format needs are resolved, each to a local function that builds NumPy arrays; every other
global (``os.system``, ``builtins.eval``, ...) is refused before anything is called. Storages are
bounds-checked against their byte size, so a crafted stride/offset cannot read past the data.

Inside intsr weights are HWIO (see intsr.model); files hold OIHW.
"""
import io
import os
import pickle
import re
import zipfile

import numpy as np

from intsr.model import CHANNELS, NUM_LAYERS, layer_shapes

MASK_RATIOS = {0: 0.0, 27: 0.27, 50: 0.5, 67: 0.67, 85: 0.85}

# torch storage class name -> dtype of its raw little/big-endian data
_STORAGE_DTYPES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}
_MAX_PICKLE = 16 << 20


class _StorageType:
    def __init__(self, name):
        self.name = name


class _Storage:
    def __init__(self, array):
        self.array = array


class _StateDict(dict):
    """Stands in for collections.OrderedDict; torch attaches ``_metadata`` via BUILD."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("unexpected state for an OrderedDict")


def _rebuild_tensor(storage, offset, size, stride, *_rest):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor without a storage")
    if not (isinstance(offset, int) and all(isinstance(v, int) for v in (*size, *stride))
            and len(size) == len(stride)):
        raise pickle.UnpicklingError("malformed tensor geometry")
    if offset < 0 or any(v < 0 for v in (*size, *stride)):
        raise pickle.UnpicklingError("negative tensor geometry")
    arr = storage.array
    if 0 in size:
        return np.zeros(size, arr.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= arr.size:
        raise pickle.UnpicklingError("tensor reaches past its storage")
    view = np.lib.stride_tricks.as_strided(
        arr[offset:], shape=tuple(size), strides=tuple(s * arr.itemsize for s in stride),
        writeable=False)
    return np.array(view)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_rest):
    if not isinstance(data, np.ndarray):
        raise pickle.UnpicklingError("parameter without tensor data")
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): _StateDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, fileobj, zf, prefix, byteorder):
        super().__init__(fileobj)
        self._zf, self._prefix, self._byteorder = zf, prefix, byteorder
        self._storages = {}

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and isinstance(pid[4], int)):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        _, stype, key, _location, numel = pid
        if key in self._storages:
            return self._storages[key]
        if not re.fullmatch(r"[0-9]+", key):
            raise pickle.UnpicklingError(f"bad storage key {key!r:.40}")
        dt = np.dtype(_STORAGE_DTYPES[stype.name]).newbyteorder(
            "<" if self._byteorder == "little" else ">")
        try:
            raw = self._zf.read(f"{self._prefix}/data/{key}")
        except KeyError:
            raise pickle.UnpicklingError(f"storage {key} missing from archive") from None
        if len(raw) != numel * dt.itemsize:
            raise pickle.UnpicklingError(f"storage {key}: {len(raw)} bytes, expected "
                                         f"{numel * dt.itemsize}")
        st = _Storage(np.frombuffer(raw, dt).astype(dt.newbyteorder("=")))
        self._storages[key] = st
        return st


def _load_pt(path):
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{path}: not a torch.save zip archive ({e})") from None
    with zf:
        pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise ValueError(f"{path}: expected exactly one <name>/data.pkl in the archive")
        prefix = pkls[0].split("/")[0]
        try:
            info = zf.getinfo(pkls[0])
            if info.file_size > _MAX_PICKLE:
                raise ValueError(f"{path}: data.pkl is implausibly large")
            data = zf.read(pkls[0])
            names = set(zf.namelist())
            byteorder = (zf.read(f"{prefix}/byteorder").decode().strip()
                         if f"{prefix}/byteorder" in names else "little")
            if byteorder not in ("little", "big"):
                raise ValueError(f"{path}: unknown byteorder {byteorder!r:.20}")
            obj = _RestrictedUnpickler(io.BytesIO(data), zf, prefix, byteorder).load()
        except ValueError:
            raise
        except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, TypeError, KeyError,
                AttributeError, IndexError, OSError, RecursionError) as e:
            raise ValueError(f"{path}: refused or malformed torch file: {e}") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]  # a trainer checkpoint: take its model
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state_dict, got {type(obj).__name__}")
    sd = {(k[len("module."):] if isinstance(k, str) and k.startswith("module.") else k): v
          for k, v in obj.items()}
    want = [f"convs.{i}.weight" for i in range(NUM_LAYERS)]
    if sorted(sd, key=str) != sorted(want):
        raise ValueError(f"{path}: state_dict keys {sorted(map(str, sd))[:10]} != {want}")
    return [sd[k] for k in want]


def _load_npz(path):
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            want = [f"conv{i + 1}" for i in range(NUM_LAYERS)]
            if keys != set(want):
                raise ValueError(f"{path}: keys {sorted(keys)} != {want}")
            return [z[k] for k in want]
    except ValueError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
        raise ValueError(f"{path}: not a readable .npz ({e})") from None


def _to_hwio(path, oihw_list):
    out = []
    for l, (w, shp) in enumerate(zip(oihw_list, layer_shapes())):
        if not isinstance(w, np.ndarray) or w.dtype.kind != "f":
            raise ValueError(f"{path}: layer {l + 1} is not a float array")
        want = (shp[3], shp[2], shp[0], shp[1])
        if w.shape != want:
            raise ValueError(f"{path}: layer {l + 1} has shape {w.shape}, expected OIHW {want}")
        if not np.all(np.isfinite(w)):
            raise ValueError(f"{path}: layer {l + 1} contains NaN or inf")
        out.append(np.ascontiguousarray(w.astype(np.float32).transpose(2, 3, 1, 0)))
    return out


def load_weights(path):
    """8 float32 HWIO arrays from an ``.npz`` or a ``torch.save`` state_dict (``.pt``)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such weights file")
    if path.endswith(".npz"):
        return _to_hwio(path, _load_npz(path))
    return _to_hwio(path, _load_pt(path))


def save_weights_npz(path, weights_hwio):
    """Write HWIO weights as ``conv1`` .. ``conv8`` float32 OIHW."""
    if len(weights_hwio) != NUM_LAYERS:
        raise ValueError(f"expected {NUM_LAYERS} layers, got {len(weights_hwio)}")
    arrays = {}
    for l, (w, shp) in enumerate(zip(weights_hwio, layer_shapes())):
        w = np.asarray(w)
        if w.shape != shp:
            raise ValueError(f"layer {l + 1}: shape {w.shape}, expected HWIO {shp}")
        if not np.all(np.isfinite(w)):
            raise ValueError(f"layer {l + 1} contains NaN or inf")
        arrays[f"conv{l + 1}"] = np.ascontiguousarray(w.astype(np.float32).transpose(3, 2, 0, 1))
    np.savez(path, **arrays)


def load_masks(path):
    """{ratio: list of 8 bool arrays [c_out]} from ``p{pct}_l{l}`` keys (+ ``p{pct}_tau``)."""
    return load_masks_with_tau(path)[0]


def load_masks_with_tau(path):
    """(masks as in load_masks, {ratio: tau})."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: not a readable masks .npz ({e})") from None
    want = {f"p{p}_l{l}" for p in MASK_RATIOS for l in range(1, NUM_LAYERS + 1)}
    want |= {f"p{p}_tau" for p in MASK_RATIOS}
    if set(files) != want:
        missing, extra = sorted(want - set(files)), sorted(set(files) - want)
        raise ValueError(f"{path}: mask keys differ (missing {missing[:4]}, extra {extra[:4]})")
    masks, taus = {}, {}
    for pct, ratio in MASK_RATIOS.items():
        layers = []
        for l in range(1, NUM_LAYERS + 1):
            m = files[f"p{pct}_l{l}"]
            if m.shape != (CHANNELS[l],):
                raise ValueError(f"{path}: p{pct}_l{l} has shape {m.shape}, "
                                 f"expected ({CHANNELS[l]},)")
            if m.dtype != bool and not (m.dtype.kind in "iu" and np.isin(m, (0, 1)).all()):
                raise ValueError(f"{path}: p{pct}_l{l} is not a 0/1 mask")
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
        for l, m in enumerate(masks[ratio], start=1):
            arrays[f"p{pct}_l{l}"] = np.asarray(m, bool)
        arrays[f"p{pct}_tau"] = np.float64(taus[ratio])
    np.savez(path, **arrays)
    load_masks(path)  # refuse to leave behind a file the loader would reject
