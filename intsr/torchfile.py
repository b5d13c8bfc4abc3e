"""Reading a ``torch.save`` file without torch, and without running code from it.

The archive is a zip: ``<name>/data.pkl`` (a pickle) and raw storages ``<name>/data/<k>``. The
pickle is read by a restricted unpickler: only the few globals that torch's tensor format needs
are resolved, each to a local function that builds NumPy arrays; every other global
(``os.system``, ``builtins.eval``, ...) is refused before anything is called. Storages are
bounds-checked against their byte size, so a crafted stride or offset cannot read past the data.

The archive itself is read through ``open_archive``/``read_member``, shared with ``read_npz``
(the ``.npz`` files of intsr.weights and intsr.state, whose .npy headers are checked before
any data is read): every exception zipfile raises becomes one ValueError line, and each
member's declared size is checked against what the format can hold before it is read, so a
damaged or hostile archive can neither crash the caller nor make it allocate more than the caps.
"""
import io
import pickle
import pickletools
import re
import struct
import zipfile
import zlib

import numpy as np

from intsr.io import NPY_HEADER_ERRORS

# torch storage class name -> dtype of its raw little/big-endian data
_STORAGE_DTYPES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}
# A torch.save of this network has a 1 KB data.pkl (the tensors are separate entries), a
# checkpoint with optimizer state tens of KB. The cap bounds the pre-scan (_scan_pickle) at
# about 2 s.
_MAX_PICKLE = 4 << 20
# All tensors of one file together: 64 MB is 70 times this network's float32 weights, room for
# a checkpoint's optimizer state, far from what could exhaust a device.
MAX_TENSOR_BYTES = 64 << 20
_MAX_ENTRIES = 1024  # a torch.save of this network has about 15 entries, a weights .npz 8
_MAX_DIM = 1 << 40  # beyond this a tensor size, stride or offset is damage, not data

# What zipfile (and zlib under it) raise on a damaged archive: BadZipFile, NotImplementedError
# for an unsupported "version needed" or compression method, EOFError or OSError for a
# truncated one, RuntimeError for an encrypted one, UnicodeDecodeError (a ValueError) for a bad
# UTF-8 name, struct.error and zlib.error from its parsers, OverflowError for absurd offsets.
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError,
              EOFError, OSError, ValueError, zlib.error, struct.error, OverflowError, KeyError,
              IndexError, TypeError)


class Refused(Exception):
    """Why an archive is refused; the loaders turn it into a ValueError line naming the file."""


def one_line(e):
    """An exception's message as one bounded line, for errors that name a damaged file."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def open_archive(path, what):
    """zipfile.ZipFile of ``path``, or ValueError with one line: damaged, or over _MAX_ENTRIES."""
    try:
        zf = zipfile.ZipFile(path)
    except ZIP_ERRORS as e:
        raise ValueError(f"{path}: not a {what} ({one_line(e)})") from None
    infos = zf.infolist()
    if len(infos) > _MAX_ENTRIES or len({i.filename for i in infos}) != len(infos):
        zf.close()
        raise ValueError(f"{path}: not a {what} ({len(infos)} entries, or repeated names)")
    return zf


def check_member(zf, name, cap):
    """The ZipInfo of ``name`` if its declared size is within ``cap`` and plausible, else
    Refused: a member may only be read after this (zipfile stops at the declared size)."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise Refused(f"{name} missing from the archive") from None
    if info.flag_bits & 0x1:
        raise Refused(f"{name} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise Refused(f"{name}: compression method {info.compress_type} is not supported")
    if info.file_size > cap:
        raise Refused(f"{name} declares {info.file_size} bytes, at most {cap} expected")
    # Deflate shrinks data at most 1032 times and grows it by under 0.1 %; a stored member is
    # its own size. zipfile reads up to the compressed size in one call: it must be bounded too.
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size or \
            info.file_size > 1032 * info.compress_size + 64 or \
            info.compress_size > info.file_size + info.file_size // 1000 + 1024:
        raise Refused(f"{name}: declared sizes {info.compress_size} -> {info.file_size} are "
                      f"impossible (a zip bomb or damage)")
    return info


def read_member(zf, name, cap):
    """All bytes of member ``name`` (at most ``cap``), or Refused."""
    info = check_member(zf, name, cap)
    data = zf.read(info)
    if len(data) != info.file_size:
        raise Refused(f"{name}: {len(data)} bytes, the archive declares {info.file_size}")
    return data


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


def _rebuild_tensor(budget, storage, offset, size, stride, *_rest):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor without a storage")
    if not (isinstance(offset, int) and isinstance(size, tuple) and isinstance(stride, tuple)
            and all(type(v) is int for v in (*size, *stride)) and len(size) == len(stride)
            and len(size) <= 8):
        raise pickle.UnpicklingError("malformed tensor geometry")
    if offset < 0 or any(v < 0 for v in (*size, *stride)):
        raise pickle.UnpicklingError("negative tensor geometry")
    # Bounded before any arithmetic: products of huge pickled ints would take hours.
    if max((offset, *size, *stride)) >= _MAX_DIM:
        raise pickle.UnpicklingError("implausible tensor geometry")
    arr = storage.array
    # A view with zero strides copies into far more bytes than its storage holds.
    budget.spend(int(np.prod(size, dtype=object)) * arr.itemsize)
    if 0 in size:
        return np.zeros(size, arr.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
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


class _Budget:
    """Bytes of storages and tensors one file may still make us allocate."""

    def __init__(self, nbytes):
        self.left = nbytes

    def spend(self, nbytes):
        if nbytes > self.left:
            raise pickle.UnpicklingError(f"tensors over {MAX_TENSOR_BYTES >> 20} MB in all; "
                                         f"not weights of this network")
        self.left -= nbytes


def _scan_pickle(data):
    """Refuse, before the C unpickler sees them, the opcodes it would act on in bulk: a memo
    index past the opcodes read so far (it grows its memo to that index, 16 bytes each: a
    9-byte pickle takes 1 GB), and counted strings longer than the pickle (it allocates them
    before reading). pickletools reads the same opcodes in Python, allocating nothing."""
    try:
        for n, (op, arg, _pos) in enumerate(pickletools.genops(data)):
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and not 0 <= arg <= n:
                raise Refused("pickle memo index out of range")
    except ValueError as e:  # what genops raises for a truncated or unknown opcode
        raise Refused(f"damaged pickle ({one_line(e)})") from None


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, fileobj, zf, prefix, byteorder):
        super().__init__(fileobj)
        self._zf, self._prefix, self._byteorder = zf, prefix, byteorder
        self._storages = {}
        self._budget = _Budget(MAX_TENSOR_BYTES)

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        try:
            fn = _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden global {module:.60}.{name:.60}") from None
        if fn is _rebuild_tensor:
            # Not a closure over self: pickle memoizes the global, and the C unpickler's
            # memo is invisible to the garbage collector, so that cycle would never be freed.
            budget = self._budget
            return lambda *args: _rebuild_tensor(budget, *args)
        return fn

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and type(pid[4]) is int):
            raise pickle.UnpicklingError(f"unsupported persistent id of {len(pid)} fields"
                                         if isinstance(pid, tuple) else
                                         f"unsupported persistent id {type(pid).__name__}")
        _, stype, key, _location, numel = pid
        if key in self._storages:
            return self._storages[key]
        if not re.fullmatch(r"[0-9]{1,9}", key):
            raise pickle.UnpicklingError(f"bad storage key {key!r:.40}")
        dt = np.dtype(_STORAGE_DTYPES[stype.name]).newbyteorder(
            "<" if self._byteorder == "little" else ">")
        if not 0 <= numel < _MAX_DIM:
            raise pickle.UnpicklingError(f"storage {key}: implausible size")
        self._budget.spend(numel * dt.itemsize)
        try:
            raw = read_member(self._zf, f"{self._prefix}/data/{key}", numel * dt.itemsize)
        except Refused as e:
            raise pickle.UnpicklingError(str(e)) from None
        if len(raw) != numel * dt.itemsize:
            raise pickle.UnpicklingError(f"storage {key}: {len(raw)} bytes, expected "
                                         f"{numel * dt.itemsize}")
        st = _Storage(np.frombuffer(raw, dt).astype(dt.newbyteorder("=")))
        self._storages[key] = st
        return st


def read(path):
    """The object a ``torch.save`` zip archive holds, built from NumPy arrays (tensors become
    arrays, ``OrderedDict`` a dict), or ValueError with one line for anything else: a damaged
    archive, a global outside the allow-list, a storage that does not match its tensors, sizes
    beyond the caps (data.pkl 4 MB, MAX_TENSOR_BYTES of tensors)."""
    zf = open_archive(path, "torch.save zip archive")
    with zf:
        pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise ValueError(f"{path}: expected exactly one <name>/data.pkl in the archive")
        prefix = pkls[0].split("/")[0]
        try:
            data = read_member(zf, pkls[0], _MAX_PICKLE)
            names = set(zf.namelist())
            byteorder = (read_member(zf, f"{prefix}/byteorder", 16).decode("ascii").strip()
                         if f"{prefix}/byteorder" in names else "little")
            if byteorder not in ("little", "big"):
                raise Refused(f"unknown byteorder {byteorder!r:.20}")
            _scan_pickle(data)
            obj = _RestrictedUnpickler(io.BytesIO(data), zf, prefix, byteorder).load()
        except Refused as e:
            raise ValueError(f"{path}: {one_line(e)}") from None
        # The unpickler fails in these ways on a damaged pickle (RecursionError: deep nesting;
        # ValueError: e.g. an unknown protocol), zipfile in ZIP_ERRORS on a damaged member.
        except (pickle.UnpicklingError, AttributeError, RecursionError, *ZIP_ERRORS) as e:
            raise ValueError(f"{path}: refused or malformed torch file: {one_line(e)}") from None
    return obj


_NPY_HEADER_MAX = 4096


def read_npz(path, spec, what):
    """{key: array} of an ``.npz`` whose members are exactly ``spec``'s keys; ``spec[key]`` is
    (shape, dtype kinds) or (shape, dtype kinds, largest itemsize, default 8), a shape entry
    None for any length up to 4096. Each member's .npy header is checked against it before its
    data is read, and nothing a member declares beyond that size is read, so a damaged or
    hostile archive costs at most the expected arrays. ValueError with one line (``what`` names
    the file kind) for anything else."""
    zf = open_archive(path, f"readable {what}")
    with zf:
        keys = {n[:-4] if n.endswith(".npy") else n: n for n in zf.namelist()}
        if set(keys) != set(spec):
            missing, extra = sorted(set(spec) - set(keys)), sorted(set(keys) - set(spec))
            raise ValueError(one_line(f"{path}: {what} keys differ (missing "
                                                f"{missing[:4]}, extra {extra[:4]})"))
        out = {}
        try:
            for key, rule in spec.items():
                out[key] = _npz_member(zf, keys[key], key, *rule)
        except Refused as e:
            raise ValueError(f"{path}: {one_line(e)}") from None
        except ZIP_ERRORS as e:
            raise ValueError(f"{path}: not a readable {what} ({one_line(e)})") from None
    return out


def _npz_member(zf, name, key, shape, kinds, itemsize=8):
    fmt = np.lib.format
    most = int(np.prod([4096 if n is None else n for n in shape]))
    info = check_member(zf, name, _NPY_HEADER_MAX + most * itemsize)
    with zf.open(info) as f:
        try:
            version = fmt.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise Refused(f"{key}: unsupported .npy version {version}")
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else \
                fmt.read_array_header_2_0
            got, fortran, dt = read_header(f)
        except NPY_HEADER_ERRORS as e:
            raise Refused(f"{key}: damaged .npy header "
                                    f"({one_line(e)})") from None
        if dt.hasobject or dt.kind not in kinds or dt.itemsize > itemsize:
            raise Refused(f"{key} has dtype {dt}, expected kind {kinds!r}")
        if len(got) != len(shape) or any(n is not None and g != n or n is None and g > 4096
                                         for g, n in zip(got, shape, strict=True)):
            want = tuple("N" if n is None else n for n in shape)
            raise Refused(f"{key} has shape {tuple(got)}, expected {want}")
        nbytes = int(np.prod(got)) * dt.itemsize
        data = f.read(nbytes + 1)
    if len(data) != nbytes:
        raise Refused(f"{key}: {len(data)} bytes of data for shape {tuple(got)}")
    return np.frombuffer(data, dt).reshape(got, order="F" if fortran else "C").copy()
