"""Reading a ``torch.save`` file without torch, and without running code from it.

The archive is a zip: ``<name>/data.pkl`` (a pickle) and raw storages ``<name>/data/<k>``. The
pickle is read by a restricted unpickler: only the few globals that torch's tensor format needs
are resolved, each to a local function that builds NumPy arrays; every other global
(``os.system``, ``builtins.eval``, ...) is refused before anything is called. Storages are
bounds-checked against their byte size, so a crafted stride or offset cannot read past the data.
"""
import io
import pickle
import re
import zipfile

import numpy as np

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


def read(path):
    """The object a ``torch.save`` zip archive holds, built from NumPy arrays (tensors become
    arrays, ``OrderedDict`` a dict), or ValueError with one line for anything else: a damaged
    archive, a global outside the allow-list, a storage that does not match its tensors."""
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
    return obj
