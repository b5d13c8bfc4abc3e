"""User files in and out: images and blur kernels with validation and one-line errors, and the
atomic write every output goes through (images, reports, weights, masks).

Weight and mask files are intsr.weights; the torch.save reader is intsr.torchfile."""
import io
import os
import struct
import tempfile
import tokenize
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# Output formats we can write losslessly, by extension.
_FORMATS = {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".ppm": "PPM",
            ".pgm": "PPM", ".webp": "WEBP"}
LOSSLESS_SUFFIXES = tuple(_FORMATS)


class InputError(ValueError):
    """A user-facing input problem; str() is the one-line message."""


# Decompression-bomb limit of read_image: 16.8 MP (4096 x 4096). The LR input of a device SR
# engine; its x4 output is already 268 MP (805 MB as RGB). Reading an image at the limit peaks
# at about 300 MB (the file, Pillow's 4-byte pixels, the conversion, the array: 320 MB for a
# 4096 x 4096 RGBA BMP), so a 10 MB file that declares more is refused from its header.
MAX_IMAGE_PIXELS = 1 << 24
# No image within that needs more bytes than 4 a pixel (8-bit RGBA or CMYK, uncompressed), plus
# room for metadata. The file is read whole (so a damaged length field cannot make a decoder
# allocate gigabytes for a read that will come up short).
MAX_IMAGE_FILE = 4 * MAX_IMAGE_PIXELS + (16 << 20)
# The formats read_image opens: what cameras and SR datasets use (a camera's MPO opens as
# JPEG). Pillow's other plugins (EPS through Ghostscript, PSD, FITS, ...) are parsers a user
# image never needs to reach.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "PPM", "WEBP", "GIF")
# libjpeg decodes every scan of a progressive JPEG over the whole image: 2,000 repeated scans
# in a 214 KB file take 32 s at 16 MP. Encoders write about 10 (Pillow's progressive: 10).
MAX_JPEG_SCANS = 100
# What Pillow's decoders raise on a damaged file (fuzzed: tests/test_fuzz.py).
_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, EOFError,
                 struct.error, zlib.error, ZeroDivisionError, OverflowError)

# What numpy's .npy header parser (Python: a tokenizer, then literal_eval of a dict) raises on
# a damaged header.
NPY_HEADER_ERRORS = (ValueError, TypeError, KeyError, IndexError, EOFError, OverflowError,
                     SyntaxError, RecursionError, tokenize.TokenError)

# Blur kernels are small: MZSR's are 15 x 15, KernelGAN's 13 x 13 or 25 x 25. A side over this
# is a damaged or wrong file, refused before its data is read.
MAX_KERNEL_SIDE = 64


def _one_line(e):
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def read_image(path):
    """-> (pixels, alpha): pixels (H, W) or (H, W, 3) uint8; alpha (H, W) uint8 or None.

    16-bit and float images are refused (the engine works on 8-bit pixels), so are images over
    MAX_IMAGE_PIXELS and formats outside IMAGE_FORMATS; every failure is one InputError line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input image not found: {path}")
    size = path.stat().st_size
    if size > MAX_IMAGE_FILE:
        raise InputError(f"{path}: {size} bytes is more than an image of at most "
                         f"{MAX_IMAGE_PIXELS} pixels needs")
    try:
        raw = path.read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise InputError(f"{path}: {w}x{h} is over the {MAX_IMAGE_PIXELS} pixels "
                                     f"this engine reads")
                # An SOS marker cannot occur inside entropy-coded data (0xFF is stuffed there).
                if im.format == "JPEG" and raw.count(b"\xff\xda") > MAX_JPEG_SCANS:
                    raise InputError(f"{path}: a JPEG of over {MAX_JPEG_SCANS} scans")
                im.load()
                return _image_planes(path, im)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # Pillow's own, larger, limit: caught at open like ours.
        raise InputError(f"{path}: over the {MAX_IMAGE_PIXELS} pixels this engine reads "
                         f"({_one_line(e)})") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not a readable image (not one of {', '.join(IMAGE_FORMATS)})"
                         ) from None
    except _IMAGE_ERRORS as e:
        raise InputError(f"{path}: not a readable image ({_one_line(e)})") from None


# IJG's (libjpeg's) luminance quantization table at quality 50, natural order (Annex K.1).
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.int64)


def ijg_table(quality):
    """libjpeg's luminance table for ``quality`` 1-100 (jcparam.c: scale 5000 / q below 50, else
    200 - 2q, percent; rounded to nearest; clipped to 1-255 for baseline files)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((_IJG_LUMA * scale + 50) // 100, 1, 255)


def jpeg_quality(path):
    """(quality, subsampling) of a JPEG file, read from its headers without decoding: the IJG
    quality whose luminance table is nearest the file's (sum of absolute differences; exact for
    files written with libjpeg's scaled tables, as Pillow writes them: tested) and Pillow's
    subsampling code (0 4:4:4, 1 4:2:2, 2 4:2:0); None for any other file. A file whose tables
    are not IJG's gets the quality of the nearest IJG table."""
    try:
        with Image.open(path, formats=["JPEG"]) as im:
            tables = getattr(im, "quantization", None)
            layers = getattr(im, "layer", None)
            if not tables or 0 not in tables:
                return None
            luma = np.asarray(tables[0], np.int64)
            sub = 0
            if layers and len(layers) == 3:
                h, v = layers[0][1], layers[0][2]
                sub = {(1, 1): 0, (2, 1): 1, (2, 2): 2}.get((h, v), 2)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
    if luma.shape != (64,):
        return None
    errors = [int(np.abs(ijg_table(q) - luma).sum()) for q in range(1, 101)]
    return int(np.argmin(errors)) + 1, sub


def jpeg_roundtrip(pixels, quality, subsampling=2):
    """Encode and decode an (H, W[, 3]) uint8 image as a JPEG of ``quality`` with Pillow: libjpeg
    (-turbo) with its default integer ('islow') DCT both ways and integer colour conversion, so
    the round trip has no float value; ``subsampling`` is Pillow's code (grey images: none)."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=int(quality),
                                 subsampling=int(subsampling) if pixels.ndim == 3 else 0)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB" if pixels.ndim == 3 else "L"), dtype=np.uint8)


def _image_planes(path, im):
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F") or mode.startswith("I;"):
        raise InputError(f"{path}: {mode} images (16-bit or float) are not supported; "
                         f"convert to 8 bits per channel")
    if mode in ("1", "L"):
        return np.asarray(im.convert("L")), None
    if mode == "LA":
        a = np.asarray(im)
        return np.ascontiguousarray(a[:, :, 0]), np.ascontiguousarray(a[:, :, 1])
    if mode == "RGBA" or (mode == "P" and "transparency" in im.info):
        a = np.asarray(im.convert("RGBA"))
        return np.ascontiguousarray(a[:, :, :3]), np.ascontiguousarray(a[:, :, 3])
    return np.asarray(im.convert("RGB")), None


def read_kernel(path):
    """Blur kernel from .npy or .mat (MZSR's 'kernel', ZSSR/KernelGAN's 'Kernel').

    Returns a float64 2-D array normalised to sum 1 (a warning is issued when it was not).
    Both formats are read by this module (no native parser sees the bytes), sizes checked
    against MAX_KERNEL_SIDE and the file length before anything is allocated."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"kernel file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".mat"):
        raise InputError(f"{path}: kernel must be a .npy or .mat file")
    try:
        with open(path, "rb") as f:
            k = _read_npy_kernel(f) if suffix == ".npy" else _read_mat_kernel(f)
    except _Bad as e:
        raise InputError(f"{path}: not a valid {suffix} kernel ({e})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read the kernel ({_one_line(e)})") from None
    return validate_kernel(k, str(path))


class _Bad(Exception):
    """Why a kernel file is refused (becomes one InputError line naming the file)."""


def _check_kernel_dtype(dt):
    if dt.hasobject or dt.kind not in "iuf" or dt.itemsize > 8:
        raise _Bad(f"kernel must be a real numeric array, not {dt}")


def _check_kernel_shape(shape):
    if len(shape) != 2 or min(shape) < 1:
        raise _Bad(f"kernel must be a non-empty 2-D array, not shape {tuple(shape)}")
    if max(shape) > MAX_KERNEL_SIDE:
        raise _Bad(f"kernel of {shape[0]}x{shape[1]} is over the {MAX_KERNEL_SIDE}x"
                   f"{MAX_KERNEL_SIDE} this engine takes")


def _read_npy_kernel(f):
    size = os.fstat(f.fileno()).st_size
    fmt = np.lib.format
    # numpy reads a 2.0 header's declared length (up to 4 GB) in one buffered read, which
    # allocates all of it first: refuse a length the file cannot hold.
    head = f.read(12)
    if len(head) == 12 and head[6:7] >= b"\x02" and \
            struct.unpack("<I", head[8:12])[0] > min(size, 1 << 16):
        raise _Bad("header length beyond the file")
    f.seek(0)
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dt = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dt = fmt.read_array_header_2_0(f)
        else:
            raise _Bad(f"unsupported .npy version {version}")
    except NPY_HEADER_ERRORS as e:
        raise _Bad(_one_line(e)) from None
    _check_kernel_dtype(dt)
    _check_kernel_shape(shape)
    nbytes = shape[0] * shape[1] * dt.itemsize
    if size - f.tell() != nbytes:
        raise _Bad(f"the header declares {nbytes} bytes of data, the file holds "
                   f"{size - f.tell()}")
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise _Bad("file shorter than its header declares")
    return np.frombuffer(data, dt).reshape(shape, order="F" if fortran else "C")


# MAT v5 (MATLAB's -v6/-v7 files, scipy.io.savemat's): the subset a kernel file uses, read
# here rather than by scipy.io.loadmat, whose compiled reader segfaults on damaged files
# (docs/fuzzing.md). A file is a 128-byte header, then data elements: a tag (type, byte count)
# and the data, or the "small element" form (count in the tag's upper half, data in its last
# 4 bytes). A variable is a miMATRIX element, possibly inside a zlib miCOMPRESSED one.
_MI_INT8, _MI_INT32, _MI_UINT32, _MI_MATRIX, _MI_COMPRESSED = 1, 5, 6, 14, 15
_MI_NUMERIC = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8",
               12: "i8", 13: "u8"}
_MX_NUMERIC = set(range(6, 16))  # double, single, int8 .. uint64
_MX_NAMES = {1: "cell array", 2: "struct", 3: "object", 4: "char array", 5: "sparse matrix"}
_MAT_NAMES = ("kernel", "Kernel")
_MAT_MAX_ELEMENTS = 1024  # variables scanned for the kernel before giving up
# Enough of a variable to see its name, and the whole of any kernel within the size limit.
_MAT_HEAD = 512
_MAT_MAX_VAR = _MAT_HEAD + MAX_KERNEL_SIDE ** 2 * 8


def _read_mat_kernel(f):
    head = f.read(128)
    if len(head) < 128:
        raise _Bad("shorter than a MAT-file header")
    if head[126:128] not in (b"IM", b"MI"):
        raise _Bad("not a MAT v5 file (MAT v4 and others are not supported: save with -v7)")
    e = "<" if head[126:128] == b"IM" else ">"
    version = struct.unpack(e + "H", head[124:126])[0]
    if version == 0x0200:
        raise _Bad("MAT v7.3 (HDF5) is not supported: save the kernel with -v7 or as .npy")
    if version != 0x0100:
        raise _Bad(f"unknown MAT-file version {version:#06x}")
    size = os.fstat(f.fileno()).st_size
    found = {}
    for _ in range(_MAT_MAX_ELEMENTS):
        tag = f.read(8)
        if len(tag) < 8:
            break
        mtype, nbytes = struct.unpack(e + "II", tag)
        if mtype >> 16 or nbytes > size - f.tell():
            raise _Bad("damaged data element")
        end = f.tell() + nbytes
        if mtype == _MI_MATRIX:
            body, complete = f.read(min(nbytes, _MAT_MAX_VAR)), nbytes <= _MAT_MAX_VAR
        elif mtype == _MI_COMPRESSED:
            body, complete = _inflate(f, nbytes, e)
            if body is None:
                f.seek(end)
                continue
        else:
            raise _Bad(f"unexpected data element type {mtype}")
        name, value = _mat_variable(body, complete, e)
        if name in _MAT_NAMES and name not in found:
            found[name] = value
            if name == _MAT_NAMES[0]:
                break
        f.seek(end)
    else:
        if not found:
            raise _Bad(f"no kernel among the first {_MAT_MAX_ELEMENTS} variables")
    for name in _MAT_NAMES:
        if name in found:
            return found[name]
    raise _Bad("no 'kernel' or 'Kernel' variable in the .mat file")


def _inflate(f, nbytes, e):
    """The decompressed miMATRIX of a miCOMPRESSED element, at most _MAT_MAX_VAR bytes, and
    whether that is all of it; (None, None) for an element that is not a matrix."""
    z = zlib.decompressobj()
    out, left, cap = b"", nbytes, _MAT_MAX_VAR + 8
    try:
        while left and not z.eof and len(out) < cap:
            chunk = f.read(min(left, 1 << 16))
            if not chunk:
                break
            left -= len(chunk)
            # max_length bounds what a zip bomb can make us hold.
            out += z.decompress(chunk, cap - len(out))
    except zlib.error as err:
        raise _Bad(f"damaged compressed variable ({_one_line(err)})") from None
    if len(out) < 8:
        raise _Bad("damaged compressed variable")
    mtype, inner = struct.unpack(e + "II", out[:8])
    if mtype != _MI_MATRIX:
        return None, None
    body = out[8:8 + inner]
    if len(body) < inner and len(out) < cap:
        raise _Bad("truncated compressed variable")
    return body, len(body) == inner


def _mat_sub(body, pos, e):
    """(type, data, next position) of the sub-element at ``pos``."""
    if pos + 8 > len(body):
        raise _Bad("truncated variable")
    mtype, nbytes = struct.unpack(e + "II", body[pos:pos + 8])
    if mtype >> 16:  # small element: the count is in the upper half, the data in the tag
        nbytes, mtype = mtype >> 16, mtype & 0xFFFF
        if nbytes > 4:
            raise _Bad("damaged small data element")
        return mtype, body[pos + 4:pos + 4 + nbytes], pos + 8
    if nbytes > len(body) - pos - 8:
        raise _Bad("truncated variable")
    return mtype, body[pos + 8:pos + 8 + nbytes], pos + 8 + (-(-nbytes // 8) * 8)


def _mat_variable(body, complete, e):
    """(name, 2-D array or None) of a miMATRIX body; the array only for a kernel name."""
    mtype, flags, pos = _mat_sub(body, 0, e)
    if mtype != _MI_UINT32 or len(flags) != 8:
        raise _Bad("damaged array flags")
    mtype, dims, pos = _mat_sub(body, pos, e)
    if mtype != _MI_INT32 or len(dims) % 4 or not dims:
        raise _Bad("damaged array dimensions")
    mtype, name, pos = _mat_sub(body, pos, e)
    if mtype != _MI_INT8:
        raise _Bad("damaged array name")
    name = name.decode("latin-1")
    if name not in _MAT_NAMES:
        return name, None
    word = struct.unpack(e + "I", flags[:4])[0]
    mx = word & 0xFF
    if mx not in _MX_NUMERIC:
        raise _Bad(f"'{name}' is a {_MX_NAMES.get(mx, 'non-numeric array')}, not a matrix")
    if word & 0x0800:
        raise _Bad(f"'{name}' is complex")
    if word & 0x0200:
        raise _Bad(f"'{name}' is logical")
    shape = struct.unpack(f"{e}{len(dims) // 4}i", dims)
    _check_kernel_shape(shape)
    if not complete:
        raise _Bad(f"'{name}' is larger than its dimensions allow")
    mtype, data, pos = _mat_sub(body, pos, e)
    if mtype not in _MI_NUMERIC:
        raise _Bad(f"'{name}' has data of type {mtype}")
    dt = np.dtype(_MI_NUMERIC[mtype]).newbyteorder(e)
    if len(data) != shape[0] * shape[1] * dt.itemsize:
        raise _Bad(f"'{name}' holds {len(data)} bytes for a {shape[0]}x{shape[1]} matrix")
    return name, np.frombuffer(data, dt).reshape(shape, order="F")


def validate_kernel(k, name="kernel"):
    k = np.asarray(k)
    if k.dtype == object or not (np.issubdtype(k.dtype, np.integer) or
                                 np.issubdtype(k.dtype, np.floating)):
        raise InputError(f"{name}: kernel must be a real numeric array, not {k.dtype}")
    if k.ndim != 2 or k.size == 0:
        raise InputError(f"{name}: kernel must be a non-empty 2-D array, not shape {k.shape}")
    k = k.astype(np.float64)
    if not np.all(np.isfinite(k)):
        raise InputError(f"{name}: kernel contains NaN or inf")
    with np.errstate(over="ignore"):
        total = k.sum()
    if not np.isfinite(total):
        raise InputError(f"{name}: kernel values too large (their sum overflows)")
    if not np.any(k):
        raise InputError(f"{name}: kernel is all zero")
    if total <= 0:
        raise InputError(f"{name}: kernel sums to {total:g}; it must sum to a positive value")
    if abs(total - 1.0) > 1e-6:
        warnings.warn(f"{name}: kernel sums to {total:g}; normalised to 1", stacklevel=2)
    return k / total


def check_output_path(path):
    """Fail before any work if OUT cannot be written: unknown extension or missing folder."""
    path = Path(path)
    if path.suffix.lower() not in _FORMATS:
        raise InputError(f"{path}: output must end in one of {', '.join(sorted(_FORMATS))}")
    if not path.parent.resolve().is_dir():
        raise InputError(f"{path}: output folder does not exist")
    if path.is_dir():
        raise InputError(f"{path}: output is a folder")


def atomic_write(path, write, binary=True):
    """Create or replace ``path`` with what ``write(fileobj)`` writes, all or nothing.

    The data goes to a temporary file in the target folder, renamed over ``path`` once
    complete: a failure (or a kill) leaves any previous file untouched and no temporary file
    behind. The new file's mode follows the umask (0666 & ~umask), like any other tool's."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            umask = os.umask(0)  # reading the umask means setting it: put it straight back
            os.umask(umask)
            os.fchmod(f.fileno(), 0o666 & ~umask)
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_image(path, pixels, alpha=None):
    """Write an (H, W) or (H, W, 3) uint8 image, with an optional alpha plane, atomically."""
    path = Path(path)
    check_output_path(path)
    if alpha is not None:
        im = Image.fromarray(np.dstack([pixels if pixels.ndim == 3 else pixels[:, :, None],
                                        alpha]), "RGBA" if pixels.ndim == 3 else "LA")
    else:
        im = Image.fromarray(pixels)
    fmt = _FORMATS[path.suffix.lower()]
    # WebP is lossy unless asked: every format we write keeps the pixels exactly. PNG at zlib
    # level 3, not Pillow's 6: a 1080p output took 0.53 s to write at 6 (an eighth of a whole
    # `intsr adapt`), 0.18 s at 3, for files 0-24 % larger (docs/performance.md).
    opts = {"WEBP": {"lossless": True}, "PNG": {"compress_level": 3}}.get(fmt, {})
    atomic_write(path, lambda f: im.save(f, format=fmt, **opts))
