"""Fuzz harness for every loader a user reaches: images, .npy and .mat kernels, .npz and .pt
weights, masks, adapted states (docs/fuzzing.md).

Inputs are mutated copies of valid seeds (made here, or shipped in tests/data/fuzz/) and
structure-aware files drawn by hypothesis strategies (npy headers, shapes and dtypes, MAT
elements, zip entries, torch pickles, PNG chunks). Each input is written to a file and handed
to its loader in-process, under a time limit, and classified: accepted, a clean error (a
ValueError, InputError included, whose message is one line naming the file) or a BUG (any other
exception, a multi-line message, a timeout, MemoryError). The inputs run in a child process
(this file run as a script) with a capped address space: a native crash is a dead child and the
file it died on is kept, an allocation beyond the cap a MemoryError; its peak RSS is reported.
Some of the refused inputs then go through the real CLI in a subprocess.

To add a loader, add one entry to LOADERS.
"""
import bz2
import io
import json
import lzma
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FUZZ_DATA = Path(__file__).resolve().parent / "data" / "fuzz"


# ---------------------------------------------------------------------------------- writers

def npy_bytes(header, data=b"", version=(1, 0), header_len=None):
    """A .npy file: ``header`` a dict (written as numpy does) or raw text, any version/length."""
    text = repr(header) if isinstance(header, dict) else header
    raw = text.encode("latin-1", "replace")
    lenfmt = "<H" if version[0] == 1 else "<I"
    pre = 6 + 2 + struct.calcsize(lenfmt)
    raw += b" " * (-(pre + len(raw) + 1) % 64) + b"\n"
    n = len(raw) if header_len is None else header_len
    return (b"\x93NUMPY" + bytes(version) + struct.pack(lenfmt, n & (0xFFFF if version[0] == 1
                                                                    else 0xFFFFFFFF))
            + raw + data)


def npy_of(arr):
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


@dataclass
class ZipEntry:
    name: bytes
    data: bytes
    method: int = 0
    version: int = 20
    flags: int = 0
    crc: int = None  # None: the right one
    usize: int = None  # None: the right one
    csize: int = None


def _compress(method, data):
    if method == 8:
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush()
    if method == 12:
        return bz2.compress(data)
    if method == 14:  # zipfile's LZMA framing: version, properties size, properties
        props = lzma._encode_filter_properties({"id": lzma.FILTER_LZMA1})
        c = lzma.LZMACompressor(lzma.FORMAT_RAW, filters=[
            lzma._decode_filter_properties(lzma.FILTER_LZMA1, props)])
        return struct.pack("<BBH", 9, 4, len(props)) + props + c.compress(data) + c.flush()
    return data


def zip_bytes(entries, count=None, cd_offset=None, comment=b""):
    """A zip archive written field by field, so every field can lie."""
    out, central = bytearray(), bytearray()
    for e in entries:
        payload = _compress(e.method, e.data)
        crc = zlib.crc32(e.data) if e.crc is None else e.crc
        usize = len(e.data) if e.usize is None else e.usize
        csize = len(payload) if e.csize is None else e.csize
        off = len(out)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", e.version, e.flags, e.method, 0, 0x21,
                           crc & 0xFFFFFFFF, csize & 0xFFFFFFFF, usize & 0xFFFFFFFF,
                           len(e.name), 0) + e.name + payload
        central += struct.pack("<4s4B4H3L5HLL", b"PK\x01\x02", 20, 3, e.version & 0xFF, 0,
                               e.flags, e.method, 0, 0x21, crc & 0xFFFFFFFF,
                               csize & 0xFFFFFFFF, usize & 0xFFFFFFFF, len(e.name), 0, 0, 0, 0,
                               0o644 << 16, off & 0xFFFFFFFF) + e.name
    start = len(out) if cd_offset is None else cd_offset
    n = len(entries) if count is None else count
    out += central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n & 0xFFFF, n & 0xFFFF,
                                 len(central), start & 0xFFFFFFFF, len(comment)) + comment
    return bytes(out)


def mat_bytes(elements, endian="<", version=0x0100, text=b"MATLAB 5.0 MAT-file, fuzz"):
    """A MAT v5 file from already encoded data elements."""
    head = text.ljust(116, b" ")[:116] + b"\0" * 8 + struct.pack(endian + "H", version)
    return head + (b"IM" if endian == "<" else b"MI") + b"".join(elements)


def mat_element(mtype, data, endian="<", small=False, nbytes=None, pad=True):
    n = len(data) if nbytes is None else nbytes
    if small:
        return struct.pack(endian + "I", ((n & 0xFFFF) << 16) | (mtype & 0xFFFF)) + \
            data[:4].ljust(4, b"\0")
    body = data + (b"\0" * (-len(data) % 8) if pad else b"")
    return struct.pack(endian + "II", mtype & 0xFFFFFFFF, n & 0xFFFFFFFF) + body


def mat_matrix(name, array, endian="<", mx=None, flags=0, dims=None, mi=None, data=None,
               name_small=None, compress=False, nbytes=None):
    """One MAT v5 variable (miMATRIX, optionally inside miCOMPRESSED); each part overridable."""
    mi_of = {"f8": 9, "f4": 7, "i1": 1, "u1": 2, "i2": 3, "u2": 4, "i4": 5, "u4": 6, "i8": 12,
             "u8": 13}
    mx_of = {"f8": 6, "f4": 7, "i1": 8, "u1": 9, "i2": 10, "u2": 11, "i4": 12, "u4": 13,
             "i8": 14, "u8": 15}
    code = array.dtype.str[1:]
    mx = mx_of[code] if mx is None else mx
    mi = mi_of[code] if mi is None else mi
    dims = array.shape if dims is None else dims
    if data is None:
        data = np.asfortranarray(array).astype(array.dtype.newbyteorder(endian)).tobytes(
            order="F")
    if name_small is None:
        name_small = len(name) <= 4
    parts = (mat_element(6, struct.pack(endian + "II", (flags << 8) | (mx & 0xFF), 0), endian)
             + mat_element(5, struct.pack(f"{endian}{len(dims)}i", *dims), endian)
             + mat_element(1, name, endian, small=name_small) + mat_element(mi, data, endian))
    el = mat_element(14, parts, endian, nbytes=nbytes)
    if compress:
        packed = zlib.compress(el)
        return mat_element(15, packed, endian, pad=False)
    return el


# Torch pickles, written opcode by opcode (protocol 2, as torch.save) so that the geometry,
# storage ids and memo indices can be anything.
def _p_int(v):
    if -2 ** 31 <= v < 2 ** 31:
        return b"J" + struct.pack("<i", v)
    n = (v.bit_length() + 8) // 8
    return b"\x8a" + bytes([n]) + v.to_bytes(n, "little", signed=True)


def _p_str(s):
    raw = s.encode("utf-8", "surrogatepass") if isinstance(s, str) else s
    return b"X" + struct.pack("<I", len(raw)) + raw


def torch_pickle(tensors, memo=None, forbidden=False):
    """data.pkl of an OrderedDict of tensors: (key, storage type, storage key, numel, offset,
    size, stride). ``memo``: BINPUT/LONG_BINPUT indices to sprinkle in."""
    memo = list(memo or [])
    out = bytearray(b"\x80\x02ccollections\nOrderedDict\n)R")

    def put():
        if memo:
            i = memo.pop()
            out.extend(b"q" + bytes([i]) if i < 256 else b"r" + struct.pack("<I", i & 0xFFFFFFFF))
    put()
    out += b"("
    for key, stype, skey, numel, offset, size, stride in tensors:
        out += _p_str(key)
        out += b"cos\nsystem\n" if forbidden else b"ctorch._utils\n_rebuild_tensor_v2\n"
        put()
        out += b"((" + _p_str("storage") + b"ctorch\n" + stype.encode() + b"\n"
        out += _p_str(skey) + _p_str("cpu") + _p_int(numel) + b"tQ" + _p_int(offset)
        out += b"(" + b"".join(map(_p_int, size)) + b"t(" + b"".join(map(_p_int, stride)) + b"t"
        out += b"\x89ccollections\nOrderedDict\n)Rt" + b"R"
        put()
    return bytes(out + b"u.")


def shipped_tensors():
    """The eight conv weights of this network as torch_pickle arguments, float32 contiguous."""
    from intsr.arch import oihw_shapes
    out = []
    for i, s in enumerate(oihw_shapes()):
        stride = tuple(int(np.prod(s[j + 1:])) for j in range(4))
        out.append((f"convs.{i}.weight", "FloatStorage", str(i), int(np.prod(s)), 0, s, stride))
    return out


def pt_bytes(pickle_bytes, storages, byteorder=b"little", prefix="archive", extra=()):
    entries = [ZipEntry(f"{prefix}/data.pkl".encode(), pickle_bytes),
               ZipEntry(f"{prefix}/byteorder".encode(), byteorder)]
    entries += [ZipEntry(f"{prefix}/data/{k}".encode(), v) for k, v in storages.items()]
    return zip_bytes(entries + list(extra))


# ------------------------------------------------------------------------------------ seeds

def _gaussian(sigma, size):
    ax = np.arange(size) - size // 2
    g = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _example_image():
    from PIL import Image
    return Image.open(ROOT / "intsr" / "data" / "example_lr.png").convert("RGB")


@lru_cache(None)
def image_seeds():
    """The shipped example image, and a 16x12 crop of it in every format and common mode."""
    from PIL import Image
    seeds = [(ROOT / "intsr" / "data" / "example_lr.png").read_bytes()]
    small = _example_image().crop((40, 30, 56, 42))
    variants = [(small, "PNG", {}), (small.convert("P"), "PNG", {"transparency": 0}),
                (small.convert("LA"), "PNG", {}), (small.convert("RGBA"), "PNG", {}),
                (small.convert("L"), "PNG", {"optimize": True}), (small, "JPEG", {}),
                (small, "JPEG", {"progressive": True}), (small, "BMP", {}),
                (small.convert("P"), "BMP", {}), (small, "TIFF", {}),
                (small, "TIFF", {"compression": "tiff_lzw"}), (small, "GIF", {}),
                (small, "WEBP", {"lossless": True}), (small, "PPM", {}),
                (small.convert("1"), "PPM", {}),
                (Image.fromarray(np.asarray(small.convert("L"), np.uint16) * 257), "PNG", {})]
    for im, fmt, kw in variants:
        buf = io.BytesIO()
        im.save(buf, format=fmt, **kw)
        seeds.append(buf.getvalue())
    return seeds


@lru_cache(None)
def npy_kernel_seeds():
    g = _gaussian(1.6, 13)
    return [(ROOT / "intsr" / "data" / "example_kernel.npy").read_bytes(),
            npy_of(np.asfortranarray(g[:, :9]).astype(np.float32)),
            npy_of(g.astype(">f8")),
            npy_bytes({"descr": "<f8", "fortran_order": False, "shape": (13, 13)}, g.tobytes(),
                      version=(2, 0))]


@lru_cache(None)
def mat_kernel_seeds():
    """MZSR-style (``kernel``, double) and KernelGAN-style (``Kernel``, single, compressed), a
    big-endian one, and the two files that crashed scipy.io.loadmat (tests/data/fuzz)."""
    g = _gaussian(1.6, 15)
    seeds = [mat_bytes([mat_matrix(b"kernel", g)]),
             mat_bytes([mat_matrix(b"Kernel", g.astype(np.float32), compress=True)]),
             mat_bytes([mat_matrix(b"other", np.ones((2, 3)), compress=True),
                        mat_matrix(b"kernel", g, compress=True)]),
             mat_bytes([mat_matrix(b"kernel", g, endian=">")], endian=">")]
    seeds += [p.read_bytes() for p in sorted(FUZZ_DATA.glob("*.mat"))]
    return seeds


@lru_cache(None)
def npz_weights_seeds():
    from intsr.weights import load_weights
    raw = (ROOT / "weights" / "meta.npz").read_bytes()
    w = load_weights(ROOT / "weights" / "meta.npz")
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"conv{i + 1}": a.transpose(3, 2, 0, 1) for i, a in enumerate(w)})
    return [raw, buf.getvalue()]


@lru_cache(None)
def pt_seeds():
    raw = (ROOT / "weights" / "meta.pt").read_bytes()
    tensors = shipped_tensors()
    rng = np.random.default_rng(0)
    storages = {t[2]: rng.standard_normal(t[3]).astype("<f4").tobytes() for t in tensors}
    return [raw, pt_bytes(torch_pickle(tensors), storages)]


@lru_cache(None)
def masks_seeds():
    return [(ROOT / "weights" / "masks.npz").read_bytes()]


@lru_cache(None)
def state_seeds():
    from intsr.arch import layer_shapes
    from intsr.quant import QTensor
    from intsr.state import State, save_state
    rng = np.random.default_rng(0)
    st = State([QTensor(rng.integers(-3000, 3000, s).astype(np.int32), 9) for s in
                layer_shapes()], [np.ones(s[3], bool) for s in layer_shapes()], 4, 0.01,
               "meta.npz", ["ab" * 32], 3)
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        save_state(Path(d) / "state.npz", st)
        return [(Path(d) / "state.npz").read_bytes()]


# ---------------------------------------------------------------------------------- mutator

_SIGNATURES = (b"PK\x01\x02", b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY", b"IHDR", b"IDAT",
               b"PLTE", b"\xff\xc0", b"\xff\xda", b"MM\x00*", b"II*\x00", b"IM\x0f\x00",
               b"\x0e\x00\x00\x00", b"\x0f\x00\x00\x00", b"shape", b"descr", b"data.pkl",
               b"\x80\x02", b"VP8", b"GIF8", b"BM")
_INTERESTING = (0, 1, 2, 3, 4, 7, 8, 15, 16, 64, 65, 127, 128, 255, 256, 1024, 4096, 30000,
                32767, 32768, 65535, 65536, 2 ** 24, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1)


def _position(rng, b):
    if not b:
        return 0
    r = rng.random()
    if r < 0.4:
        return rng.randrange(len(b))
    if r < 0.65:
        return rng.randrange(min(len(b), 512))
    if r < 0.8:
        return max(0, len(b) - 1 - rng.randrange(min(len(b), 512)))
    at = b.find(rng.choice(_SIGNATURES), rng.randrange(len(b)))
    if at < 0:
        at = b.find(rng.choice(_SIGNATURES))
    return min(len(b) - 1, max(0, at + rng.randrange(-4, 48))) if at >= 0 else \
        rng.randrange(len(b))


def mutate(rng, data, pool):
    """1 to 8 stacked mutations: bit flips, interesting bytes and integers (LE/BE, 1-8 bytes),
    small arithmetic on a field, deletions, insertions (random or repeated), truncation, runs
    copied within the file, and splices with another seed of the pool."""
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
        op, p = rng.randrange(11), _position(rng, b)
        if op == 0 and b:
            b[p] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[p] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op in (2, 3) and b:
            n = rng.choice((2, 4, 4, 8))
            v = rng.choice(_INTERESTING)
            if op == 3 and p + n <= len(b):  # a small step from the value already there
                v = int.from_bytes(b[p:p + n], "little") + rng.choice((-2, -1, 1, 2, 64, -64))
            v %= 1 << (8 * n)
            b[p:p + n] = v.to_bytes(n, rng.choice(("little", "big")))
        elif op == 4:
            del b[p:p + rng.choice((1, 2, 4, 8, rng.randrange(1, 512)))]
        elif op == 5:
            b[p:p] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 32)))
        elif op == 6:
            b[p:p] = bytes([rng.randrange(256)]) * rng.choice((8, 256, 4096))
        elif op == 7:
            del b[p:]
        elif op in (8, 9) and b:
            q, n = rng.randrange(len(b)), rng.randrange(1, 256)
            run = bytes(b[q:q + n])
            if op == 8:
                b[p:p] = run
            else:
                b[p:p + len(run)] = run
        elif op == 10 and pool:
            other = rng.choice(pool)
            if other:
                b = b[:p] + other[rng.randrange(len(other)):]
    return bytes(b[:1 << 22])


# ------------------------------------------------------------------- structure-aware inputs

def _strategies():
    """Hypothesis strategies for each loader's files (built lazily: hypothesis is a test
    dependency only)."""
    from hypothesis import strategies as st

    from intsr.arch import CHANNELS, oihw_shapes

    dims = st.one_of(st.integers(0, 70), st.sampled_from(
        [-1, 255, 256, 30000, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 62, 2 ** 63 - 1]))
    descrs = st.one_of(st.sampled_from(
        ["<f8", ">f8", "<f4", "<f2", "<i4", "|u1", "|i1", "<u8", "|b1", "<c16", "|O", "<U8",
         "|S4", "<M8[s]", "|V8", "<f16", "float64", "x", ""]),
        st.just([("a", "<f4")]), st.just(("<f8", (1000, 1000))), st.text(max_size=6))

    @st.composite
    def npy_file(draw, shapes):
        shape = draw(st.one_of(shapes, st.lists(dims, max_size=4).map(tuple),
                               st.sampled_from(["(3,3)", [3, 3], None, (3.0, 3)])))
        descr = draw(descrs)
        header = {"descr": descr, "fortran_order": draw(st.sampled_from([False, True, 1, "x"])),
                  "shape": shape}
        if draw(st.integers(0, 9)) == 0:
            header.pop(draw(st.sampled_from(["descr", "fortran_order", "shape"])))
        if draw(st.integers(0, 9)) == 0:
            header["extra"] = 1
        text = repr(header) if draw(st.integers(0, 9)) else draw(st.sampled_from(
            ["{", "[1, 2]", "{'descr': '<f8', 'fortran_order': False, 'shape': (" + "(" * 300,
             "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 3), }" + "\x00" * 8,
             "1" * 5000]))
        try:
            want = int(np.prod(shape)) * np.dtype(descr).itemsize if isinstance(shape, tuple) \
                else 0
        except Exception:
            want = 0
        size = draw(st.one_of(st.just(want), st.sampled_from([0, 1, 16]),
                              st.integers(0, 40000), st.just(max(0, want - 1)),
                              st.just(want + 1)))
        size = min(max(size, 0), 1 << 20)
        fill = draw(st.sampled_from([b"\0", b"\x3f", b"\xff", b"\x7f"]))
        version = draw(st.sampled_from([(1, 0), (1, 0), (2, 0), (3, 0), (0, 0), (9, 9)]))
        header_len = draw(st.one_of(st.none(), st.sampled_from([0, 1, 10, 65535, 2 ** 32 - 1])))
        return npy_bytes(text, fill * size, version, header_len)

    kernel_shapes = st.tuples(dims, dims) | st.sampled_from([(13, 13), (15, 15), (64, 64),
                                                              (65, 3), (30000, 30000)])

    @st.composite
    def mat_file(draw):
        endian = draw(st.sampled_from("<>"))
        version = draw(st.sampled_from([0x0100, 0x0100, 0x0200, 0x0000, 0xFFFF]))
        elements = []
        for _ in range(draw(st.integers(0, 3))):
            kind = draw(st.integers(0, 9))
            if kind == 0:
                elements.append(mat_element(draw(st.integers(0, 20)), draw(st.binary(max_size=64)),
                                            endian, small=draw(st.booleans()),
                                            nbytes=draw(st.one_of(st.none(), dims))))
                continue
            shape = draw(st.one_of(st.sampled_from([(15, 15), (13, 13), (1, 1), (64, 64)]),
                                   st.tuples(st.integers(1, 70), st.integers(1, 70))))
            code = draw(st.sampled_from(["f8", "f4", "u1", "i2", "i4", "u8"]))
            arr = (_gaussian(1.6, 15)[:shape[0], :shape[1]] * 100).astype(code)
            arr = np.resize(arr, shape)
            name = draw(st.one_of(st.sampled_from([b"kernel", b"Kernel", b"k", b"kern", b""]),
                                  st.binary(max_size=40)))
            kw = {}
            if draw(st.booleans()):
                kw["mx"] = draw(st.integers(0, 20))
            if draw(st.booleans()):
                kw["flags"] = draw(st.sampled_from([0x2, 0x4, 0x8, 0xFF, 0x8 | 0x2]))
            if draw(st.booleans()):
                kw["dims"] = tuple(draw(st.lists(st.integers(-2 ** 31, 2 ** 31 - 1) | dims.filter(
                    lambda v: -2 ** 31 <= v < 2 ** 31), max_size=5)))
            if draw(st.booleans()):
                kw["mi"] = draw(st.integers(0, 20))
            if draw(st.integers(0, 4)) == 0:
                kw["data"] = draw(st.binary(max_size=300))
            if draw(st.integers(0, 4)) == 0:
                kw["nbytes"] = draw(dims.filter(lambda v: 0 <= v < 2 ** 32))
            if draw(st.integers(0, 5)) == 0:
                kw["name_small"] = draw(st.booleans())
            el = mat_matrix(name, arr, endian, compress=draw(st.booleans()), **kw)
            if draw(st.integers(0, 7)) == 0:  # a compression bomb: a huge variable of zeros
                big = mat_element(14, b"\0" * draw(st.sampled_from([1 << 16, 1 << 22])), endian)
                el = mat_element(15, zlib.compress(big, 9), endian, pad=False)
            elements.append(el)
        text = draw(st.sampled_from([b"MATLAB 5.0 MAT-file", b"MATLAB 7.3 MAT-file", b"",
                                     b"\x89HDF\r\n\x1a\n"]))
        raw = mat_bytes(elements, endian, version, text)
        cut = draw(st.one_of(st.none(), st.integers(0, len(raw))))
        return raw if cut is None else raw[:cut]

    def npz_archive(spec):
        """A zip of .npy members, near ``spec`` (name -> (shape, dtype)), every field liable to
        lie: names, method, version needed, flags, CRC and sizes, member count."""
        names = list(spec)

        def valid(key):
            shape, dt = spec.get(key, ((3,), "<f4"))
            return npy_bytes({"descr": dt, "fortran_order": False, "shape": shape},
                             b"\x01" * (int(np.prod(shape)) * np.dtype(dt).itemsize))

        @st.composite
        def damaged(draw, key):
            shape, dt = spec.get(key, ((3,), "<f4"))
            near = st.sampled_from([shape, shape[::-1], shape[:1], shape + (1,),
                                    (30000,) * max(1, len(shape)), ()])
            if draw(st.integers(0, 3)):
                member = npy_bytes({"descr": draw(st.sampled_from([dt, dt, "<f8", "|b1", "|O",
                                                                   "<i8", "<c8"])),
                                    "fortran_order": draw(st.booleans()), "shape": shape})
                n = int(np.prod(shape)) * np.dtype(dt).itemsize
                member += b"\x01" * draw(st.sampled_from([n, n, 0, n - 1, n + 8, 1 << 20]))
            else:
                member = draw(npy_file(near))
            e = ZipEntry(draw(st.one_of(st.just(key + ".npy"), st.just(key),
                                        st.text(max_size=12))).encode("utf-8", "surrogatepass"),
                         member)
            e.method = draw(st.sampled_from([0, 0, 8, 8, 12, 14, 99, 1]))
            e.version = draw(st.sampled_from([20, 20, 45, 63, 64, 103, 255]))
            e.flags = draw(st.sampled_from([0, 0, 0, 1, 8, 0x800, 0x40]))
            if e.flags & 0x800:
                e.name += b"\xff\xfe"
            if draw(st.integers(0, 4)) == 0:
                e.crc = draw(st.integers(0, 2 ** 32 - 1))
            if draw(st.integers(0, 3)) == 0:
                e.usize = draw(st.sampled_from([0, 1, 2 ** 31, 2 ** 32 - 1, 10 ** 9]))
            if draw(st.integers(0, 4)) == 0:
                e.csize = draw(st.sampled_from([0, 1, 2 ** 31, 2 ** 32 - 1]))
            return e

        @st.composite
        def build(draw):
            keys = draw(st.one_of(st.just(names), st.just(names), st.lists(
                st.sampled_from(names), max_size=4), st.just(names + ["extra"])))
            bad = set(draw(st.lists(st.integers(0, max(0, len(keys) - 1)), max_size=3)))
            entries = [draw(damaged(k)) if j in bad else ZipEntry((k + ".npy").encode(),
                                                                  valid(k))
                       for j, k in enumerate(keys)]
            if entries and draw(st.integers(0, 9)) == 0:  # a zip bomb: 16 MB of zeros, deflated
                entries[0] = ZipEntry(entries[0].name, npy_bytes(
                    {"descr": "<f4", "fortran_order": False, "shape": (1 << 22,)})
                    + b"\0" * (1 << 24), method=8)
            count = draw(st.one_of(st.none(), st.sampled_from([0, 1, 65535])))
            return zip_bytes(entries, count=count)
        return build()

    conv_spec = {f"conv{i + 1}": (s, "<f4") for i, s in enumerate(oihw_shapes())}
    mask_spec = {f"p{p}_l{layer}": ((CHANNELS[layer],), "|b1") for p in (0, 27, 50, 67, 85)
                 for layer in range(1, 9)}
    mask_spec.update({f"p{p}_tau": ((), "<f8") for p in (0, 27, 50, 67, 85)})

    big = st.sampled_from([0, 1, 3, 9, 64, 2 ** 31, 2 ** 40, 2 ** 62, 2 ** 64, 10 ** 30, -1])

    @st.composite
    def pt_file(draw):
        tensors = shipped_tensors()
        if draw(st.booleans()):
            i = draw(st.integers(0, len(tensors) - 1))
            key, stype, skey, numel, offset, size, stride = tensors[i]
            which = draw(st.integers(0, 5))
            if which == 0:
                stride = tuple(draw(st.sampled_from([0, 0, 1, 10 ** 6, 2 ** 62])) for _ in size)
            elif which == 1:
                size = tuple(draw(st.lists(big, min_size=0, max_size=9)))
            elif which == 2:
                offset = draw(big)
            elif which == 3:
                numel = draw(big)
            elif which == 4:
                stype = draw(st.sampled_from(["DoubleStorage", "HalfStorage", "LongStorage",
                                              "BoolStorage", "QInt8Storage", "Storage"]))
            else:
                skey = draw(st.sampled_from(["0", "../0", "9" * 40, "", "a"]))
            tensors[i] = (key, stype, skey, numel, offset, size, stride)
        memo = draw(st.lists(st.sampled_from([0, 1, 5, 255, 256, 2 ** 20, 2 ** 26, 2 ** 31,
                                              2 ** 32 - 1]), max_size=3))
        if draw(st.integers(0, 5)) == 0:
            pkl = draw(st.sampled_from([
                b"\x80\x02Nr\x00\x00\x00\x10.",  # a memo index that grows the memo to 4 GB
                b"\x80\x05\x8e" + struct.pack("<Q", 2 ** 40) + b"x.",  # BINBYTES8 past the end
                b"\x80\x02" + b"(" * 100000 + b".",
                b"\x80\x02" + b"]" * 50000 + b"e" * 49999 + b".",
                b"\x80\x02cbuiltins\neval\n.", b"\x80\x09.", b"",
            ]))
        else:
            pkl = torch_pickle(tensors, memo=memo, forbidden=draw(st.integers(0, 19)) == 0)
        rng = np.random.default_rng(1)
        storages = {}
        for _, _stype, skey, numel, *_ in tensors:
            if skey not in storages:
                n = min(max(int(numel) if isinstance(numel, int) else 0, 0), 1 << 16) * 4
                storages[skey] = rng.standard_normal(max(n // 4, 0)).astype("<f4").tobytes()
        if draw(st.integers(0, 6)) == 0:  # a storage that inflates far beyond its numel
            storages["0"] = b"\0" * (1 << 22)
        byteorder = draw(st.sampled_from([b"little", b"big", b"middle", b"\xff" * 3,
                                          b"l" * 100000]))
        raw = pt_bytes(pkl, storages, byteorder, draw(st.sampled_from(["archive", "a/b", ""])))
        if draw(st.integers(0, 4)) == 0:
            entries = [ZipEntry(b"archive/data.pkl", pkl, method=draw(
                st.sampled_from([0, 8, 12, 14, 99])), version=draw(
                st.sampled_from([20, 45, 103])))]
            raw = zip_bytes(entries)
        return raw

    @st.composite
    def png_file(draw):
        def chunk(kind, data, good=True):
            crc = zlib.crc32(kind + data) if good else 0
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
        w, h = draw(dims), draw(dims)
        depth = draw(st.sampled_from([8, 8, 1, 2, 4, 16, 3, 0, 255]))
        ctype = draw(st.sampled_from([2, 2, 0, 3, 4, 6, 1, 7]))
        ihdr = struct.pack(">IIBBBBB", w & 0xFFFFFFFF, h & 0xFFFFFFFF, depth, ctype, 0, 0,
                           draw(st.sampled_from([0, 0, 1, 2])))
        raw_size = draw(st.sampled_from([0, 1, 100, 4096, 1 << 20, 1 << 24]))
        idat = zlib.compress(bytes(draw(st.binary(max_size=64))) + b"\0" * raw_size, 9)
        body = chunk(b"IHDR", ihdr, draw(st.integers(0, 9)) > 0)
        if ctype == 3 or draw(st.integers(0, 5)) == 0:
            body += chunk(b"PLTE", draw(st.binary(max_size=800)))
        if draw(st.integers(0, 4)) == 0:
            body += chunk(b"tRNS", draw(st.binary(max_size=300)))
        if draw(st.integers(0, 6)) == 0:
            body += chunk(b"iCCP", b"x\0\0" + zlib.compress(b"\0" * (1 << 22)))
        if draw(st.integers(0, 6)) == 0:
            body += chunk(b"zTXt", b"k\0\0" + zlib.compress(b"a" * (1 << 22)))
        body += chunk(b"IDAT", idat) + chunk(b"IEND", b"")
        return b"\x89PNG\r\n\x1a\n" + body

    @st.composite
    def pillow_file(draw):
        """A valid file from Pillow's writers, any mode and size, header bytes then perturbed."""
        from PIL import Image
        mode, fmt = draw(st.sampled_from([("RGB", "PNG"), ("L", "PNG"), ("P", "GIF"),
                                          ("RGB", "BMP"), ("RGB", "JPEG"), ("CMYK", "JPEG"),
                                          ("RGB", "TIFF"), ("I;16", "TIFF"), ("F", "TIFF"),
                                          ("RGBA", "WEBP"), ("L", "PPM"), ("1", "BMP"),
                                          ("LA", "PNG"), ("I;16", "PNG"), ("I", "TIFF")]))
        w, h = draw(st.integers(1, 40)), draw(st.integers(1, 40))
        im = Image.new(mode, (w, h))
        buf = io.BytesIO()
        im.save(buf, format=fmt)
        raw = bytearray(buf.getvalue())
        for _ in range(draw(st.integers(0, 3))):
            p = draw(st.integers(0, min(len(raw), 64) - 1))
            raw[p] = draw(st.integers(0, 255))
        return bytes(raw)

    return {
        "npy_kernel": npy_file(kernel_shapes),
        "mat_kernel": mat_file(),
        "image": st.one_of(png_file(), pillow_file()),
        "npz_weights": npz_archive(conv_spec),
        "pt_weights": pt_file(),
        "masks": npz_archive(mask_spec),
        "state": npz_archive({"format": ((), "<U13"), "scales": ((8,), "<i8"),
                              "w1": ((3, 3, 3, 64), "<i4"), "m1": ((64,), "|b1")}),
    }


@lru_cache(None)
def strategies():
    return _strategies()


# ---------------------------------------------------------------------------------- loaders

def _load_weights_or_state(path):
    """What `intsr info`, `--weights` do with a file: a saved state if it says so, else weights."""
    from intsr.state import is_state_file, load_state
    from intsr.weights import load_weights
    return load_state(path) if is_state_file(path) else load_weights(path)


def _load(module, name):
    def load(path):
        import importlib
        return getattr(importlib.import_module(module), name)(path)
    return load


@dataclass
class Loader:
    suffix: str
    seeds: object  # () -> list of bytes
    load: object  # (path) -> anything; raises ValueError with one line naming path
    cli: tuple  # arguments of `intsr` reaching the loader; {in} the input, {out} an output
    structured: str  # key of strategies()


def _selftest_load(path):
    """Misbehaves on purpose, by the first byte, so the harness itself can be tested: a native
    crash, a bug, a clean error, acceptance, a hang no Python signal can interrupt."""
    kind = (Path(path).read_bytes()[:1] or b"\x03")[0] % 5
    if kind == 0:
        import ctypes
        ctypes.string_at(0)
    if kind == 1:
        raise RuntimeError(f"{path}: a bug")
    if kind == 2:
        raise ValueError(f"{path}: refused")
    if kind == 4:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(3600)


_GOOD_IMAGE = "{data}/good.png"
_GOOD_KERNEL = "{data}/good.npy"

LOADERS = {
    "image": Loader(".png", image_seeds, _load("intsr.io", "read_image"),
                    ("adapt", "{in}", "{out}", "--kernel", _GOOD_KERNEL, "--quiet"), "image"),
    "npy_kernel": Loader(".npy", npy_kernel_seeds, _load("intsr.io", "read_kernel"),
                         ("adapt", _GOOD_IMAGE, "{out}", "--kernel", "{in}", "--quiet"),
                         "npy_kernel"),
    "mat_kernel": Loader(".mat", mat_kernel_seeds, _load("intsr.io", "read_kernel"),
                         ("adapt", _GOOD_IMAGE, "{out}", "--kernel", "{in}", "--quiet"),
                         "mat_kernel"),
    "npz_weights": Loader(".npz", npz_weights_seeds, _load("intsr.weights", "load_weights"),
                          ("info", "{in}"), "npz_weights"),
    "pt_weights": Loader(".pt", pt_seeds, _load("intsr.weights", "load_weights"),
                         ("info", "{in}"), "pt_weights"),
    "masks": Loader(".npz", masks_seeds, _load("intsr.weights", "load_masks_with_tau"),
                    ("cost", "--prune", "0.5", "--masks", "{in}"), "masks"),
    "state": Loader(".npz", state_seeds, _load_weights_or_state, ("info", "{in}"), "state"),
    # Not users' loaders (names starting with _ are left out of plans): one checks the
    # harness, the other counts how often scipy.io.loadmat dies on mutated kernels
    # (docs/fuzzing.md; only its deaths mean anything).
    "_selftest": Loader(".bin", lambda: [bytes([k]) * 4 for k in range(5)], _selftest_load, (),
                        None),
    "_scipy_mat": Loader(".mat", lambda: mat_kernel_seeds()[:4], _load("scipy.io", "loadmat"),
                         (), None),
}


# --------------------------------------------------------------------------- one input, in-process

class Timeout(BaseException):
    """The per-input time limit (BaseException: no loader's ``except Exception`` may eat it)."""


def _on_alarm(signum, frame):
    raise Timeout()


def classify(path, exc):
    """'accepted', 'clean' (ValueError, one line naming the file), 'hang' or 'bug'."""
    if exc is None:
        return "accepted"
    if isinstance(exc, Timeout):
        return "hang"
    msg = str(exc)
    if isinstance(exc, ValueError) and "\n" not in msg and len(msg) <= 600 and str(path) in msg:
        return "clean"
    return "bug"


def run_one(loader, data, path, limit):
    """(outcome, exception) of one input written to ``path`` and loaded within ``limit`` s."""
    import warnings
    path.write_bytes(data)
    exc = None
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            LOADERS[loader].load(path)
    except BaseException as e:  # classified below; KeyboardInterrupt still stops the run
        if isinstance(e, KeyboardInterrupt):
            raise
        exc = e
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return classify(path, exc), exc


def mutation_input(loader, seed, i):
    rng = random.Random(f"{seed}/{loader}/{i}")
    pool = LOADERS[loader].seeds()
    return mutate(rng, rng.choice(pool), pool)


def _maxrss_mb():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss():
    """Restart the kernel's peak-RSS count (VmHWM), so that it measures one input."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _maxrss_mb()


# ------------------------------------------------------------------------------ child process

def _child(job):
    """Run the plan's segments [start, stop) in this process, recording as _parent expects."""
    import resource
    import warnings
    warnings.simplefilter("ignore")
    work = Path(job["work"])
    for name in {seg["loader"] for seg in job["plan"]}:  # seeds made before the cap
        LOADERS[name].seeds()
    if job["as_mb"]:
        vm = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        cap = vm + job["as_mb"] * (1 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    progress = open(work / "progress", "w")
    for seg_index, seg in enumerate(job["plan"]):
        if seg_index < job["resume"][0]:
            continue
        loader, mode, count = seg["loader"], seg["mode"], seg["count"]
        first = job["resume"][1] if seg_index == job["resume"][0] else 0
        inp = work / "in" / f"input{LOADERS[loader].suffix}"
        outcomes = open(work / f"outcomes-{seg_index}.txt", "a")
        kept = {"clean": 0}
        state = {"peak": 0.0}

        def one(i, data, *, seg_index=seg_index, loader=loader, mode=mode, inp=inp,
                outcomes=outcomes, kept=kept, state=state):
            progress.seek(0)
            progress.write(f"{seg_index} {i} {_maxrss_mb():.1f}".ljust(48) + "\n")
            progress.flush()
            t = time.perf_counter()
            _reset_peak_rss()
            outcome, exc = run_one(loader, data, inp, job["limit"])
            rss = _peak_rss_mb()
            if rss > state["peak"] + 1:
                state["peak"] = rss
                with open(work / "rss.jsonl", "a") as f:
                    f.write(json.dumps({"loader": loader, "mode": mode, "i": i,
                                        "rss_mb": round(rss, 1)}) + "\n")
            outcomes.write(outcome[0])
            outcomes.flush()
            if outcome in ("bug", "hang"):
                keep = work / "found" / f"{loader}-{mode}-{i}{inp.suffix}"
                shutil.copyfile(inp, keep)
                with open(work / "bugs.jsonl", "a") as f:
                    f.write(json.dumps({"loader": loader, "mode": mode, "i": i,
                                        "outcome": outcome, "type": type(exc).__name__,
                                        "message": str(exc)[:500], "file": keep.name,
                                        "seconds": round(time.perf_counter() - t, 3)}) + "\n")
            elif outcome == "clean" and kept["clean"] < job["keep_clean"] and \
                    random.Random(f"{i}").random() < 0.2:
                kept["clean"] += 1
                shutil.copyfile(inp, work / "cli" / f"{loader}-{mode}-{i}{inp.suffix}")

        if mode == "mutate":
            for i in range(first, count):
                one(i, mutation_input(loader, job["seed"], i))
        else:
            _run_structured(loader, job["seed"], first, count, one)
        outcomes.close()
    progress.close()


def _run_structured(loader, seed, first, count, one):
    from hypothesis import HealthCheck, Phase, given, seed as hseed, settings

    counter = [0]

    @settings(max_examples=count, database=None, deadline=None, derandomize=False,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @hseed(seed)
    @given(strategies()[LOADERS[loader].structured])
    def body(data):
        i = counter[0]
        counter[0] += 1
        if first <= i < count:
            one(i, data)

    body()


# ----------------------------------------------------------------------------- parent process

def plan_for(n, structured=0.25, loaders=None):
    """(loader, mode, count) for ``n`` inputs per loader, a ``structured`` share of them drawn
    by the hypothesis strategies, the rest mutations of the seeds."""
    names = loaders or [name for name in LOADERS if not name.startswith("_")]
    k = round(n * structured)
    return [seg for name in names
            for seg in ((name, "mutate", n - k), (name, "structured", k)) if seg[2]]


def run(plan, seed=0, work=None, limit=5.0, hard_limit=60.0, as_mb=1024, keep_clean=20,
        cli_per_loader=3, log=None):
    """Run ``plan`` (a list of (loader, mode, count), mode 'mutate' or 'structured') in child
    processes; returns the report: per loader inputs, accepted, clean, bugs, deaths, hangs,
    peak RSS, seconds, and the CLI check of some refused inputs. Found inputs are kept in
    ``work``/found."""
    import tempfile
    work = Path(work or tempfile.mkdtemp(prefix="intsr-fuzz-"))
    for sub in ("in", "found", "cli"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    segs = [{"loader": loader, "mode": m, "count": n} for loader, m, n in plan]
    job = {"plan": segs, "seed": seed, "work": str(work), "limit": limit, "as_mb": as_mb,
           "keep_clean": keep_clean, "resume": [0, 0]}
    deaths, hangs, rss_at_death = [], [], 0.0
    t0 = time.perf_counter()
    while True:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(ROOT), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child",
                                 json.dumps(job)], env=env, stdout=subprocess.DEVNULL,
                                stderr=open(work / "child-stderr.txt", "a"))
        killed = False
        while proc.poll() is None:
            time.sleep(0.2)
            prog = work / "progress"
            if prog.exists() and time.time() - prog.stat().st_mtime > hard_limit:
                proc.kill()
                killed = True
                proc.wait()
        if proc.returncode == 0 and not killed:
            break
        if proc.returncode > 0:  # a Python error of the harness itself, not of a loader
            raise RuntimeError(f"fuzz child failed (exit {proc.returncode}): "
                               f"{(work / 'child-stderr.txt').read_text()[-2000:]}")
        seg_index, i, rss = _read_progress(work)
        if seg_index is None:
            raise RuntimeError(f"fuzz child failed before its first input (exit "
                               f"{proc.returncode}); see {work}/child-stderr.txt")
        rss_at_death = max(rss_at_death, rss)
        seg = segs[seg_index]
        inp = work / "in" / f"input{LOADERS[seg['loader']].suffix}"
        keep = work / "found" / f"{seg['loader']}-{seg['mode']}-{i}{inp.suffix}"
        if inp.exists():
            shutil.copyfile(inp, keep)
        rec = {"loader": seg["loader"], "mode": seg["mode"], "i": i, "file": keep.name,
               "exit": proc.returncode}
        (hangs if killed else deaths).append(rec)
        with open(work / f"outcomes-{seg_index}.txt", "a") as f:
            f.write("H" if killed else "D")
        if log:
            log(f"{'hang' if killed else 'death'}: {rec}")
        job["resume"] = [seg_index, i + 1] if i + 1 < seg["count"] else [seg_index + 1, 0]
        (work / "progress").unlink()
        if job["resume"][0] >= len(segs):
            break
    report = _report(work, segs, deaths, hangs, rss_at_death, time.perf_counter() - t0)
    report["cli"] = cli_check(work, cli_per_loader)
    report["work"] = str(work)
    return report


def _read_progress(work):
    try:
        seg, i, rss = (work / "progress").read_text().split()[:3]
        return int(seg), int(i), float(rss)
    except (OSError, ValueError):
        return None, None, 0.0


def _report(work, segs, deaths, hangs, rss_at_death, seconds):
    bugs = [json.loads(line) for line in _lines(work / "bugs.jsonl")]
    rss = [json.loads(line) for line in _lines(work / "rss.jsonl")]
    loaders = {}
    for k, seg in enumerate(segs):
        text = (work / f"outcomes-{k}.txt").read_text() if \
            (work / f"outcomes-{k}.txt").exists() else ""
        r = loaders.setdefault(seg["loader"], {"inputs": 0, "accepted": 0, "clean": 0,
                                               "bugs": 0, "deaths": 0, "hangs": 0,
                                               "peak_rss_mb": 0.0})
        r["inputs"] += len(text)
        r["accepted"] += text.count("a")
        r["clean"] += text.count("c")
        r["bugs"] += text.count("b")
        r["hangs"] += text.count("h") + text.count("H")
        r["deaths"] += text.count("D")
    for rec in rss:
        r = loaders[rec["loader"]]
        r["peak_rss_mb"] = max(r["peak_rss_mb"], rec["rss_mb"])
    return {"loaders": loaders, "bugs": bugs, "deaths": deaths, "hangs": hangs,
            "peak_rss_mb": max([r["rss_mb"] for r in rss] + [rss_at_death]),
            "seconds": round(seconds, 1)}


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


def cli_check(work, per_loader=3):
    """The real CLI (``python -m cli.main``) on kept refused inputs: exit status 1, one
    ``Error:`` line on stderr (warnings aside), no traceback, no internal error, no output."""
    files = sorted((work / "found").iterdir()) + sorted((work / "cli").iterdir())
    by_loader = {}
    for f in files:
        loader = f.name.split("-")[0]
        if len(by_loader.setdefault(loader, [])) < per_loader:
            by_loader[loader].append(f)
    good = work / "good"
    if by_loader:
        good.mkdir(exist_ok=True)
        shutil.copyfile(ROOT / "intsr" / "data" / "example_lr.png", good / "good.png")
        shutil.copyfile(ROOT / "intsr" / "data" / "example_kernel.npy", good / "good.npy")
    checked, bad = 0, []
    for loader, fs in sorted(by_loader.items()):
        if not LOADERS[loader].cli:
            continue
        for f in fs:
            problem = run_cli(loader, f, good)
            checked += 1
            if problem:
                bad.append({"file": f.name, "problem": problem})
    return {"checked": checked, "bad": bad}


def run_cli(loader, path, data_dir, timeout=120):
    """None if `intsr` refuses ``path`` cleanly where ``loader`` reads it, else what went wrong."""
    out = Path(data_dir) / "out.png"
    if out.exists():
        out.unlink()
    args = [a.format(**{"in": str(path), "out": str(out), "data": str(data_dir)})
            for a in LOADERS[loader].cli]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT),
                                                        os.environ.get("PYTHONPATH", "")]))
    env.pop("INTSR_DEBUG", None)
    res = subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,
                         text=True, timeout=timeout, env=env, cwd=data_dir)
    lines = [line for line in res.stderr.splitlines() if not line.startswith("Warning:")]
    if res.returncode != 1:
        return f"exit status {res.returncode}: {res.stderr[-300:]}"
    if len(lines) != 1 or not lines[0].startswith("Error: ") or "Traceback" in res.stderr:
        return f"stderr is not one error line: {res.stderr[-300:]!r}"
    if "internal error" in lines[0]:
        return lines[0]
    if out.exists():
        return "an output file was written"
    return None


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--child":
    _child(json.loads(sys.argv[2]))
