"""User files in and out: images and blur kernels with validation and one-line errors, and the
atomic write every output goes through (images, reports, weights, masks).

Weight and mask files are intsr.weights; the torch.save reader is intsr.torchfile."""
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

# Output formats we can write losslessly, by extension.
_FORMATS = {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".ppm": "PPM",
            ".pgm": "PPM", ".webp": "WEBP"}
LOSSLESS_SUFFIXES = tuple(_FORMATS)


class InputError(ValueError):
    """A user-facing input problem; str() is the one-line message."""


def read_image(path):
    """-> (pixels, alpha): pixels (H, W) or (H, W, 3) uint8; alpha (H, W) uint8 or None.

    16-bit and float images are refused (the engine works on 8-bit pixels)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
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
    except InputError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"{path}: not a readable image ({e})") from None


def read_kernel(path):
    """Blur kernel from .npy or .mat (MZSR's 'kernel', ZSSR/KernelGAN's 'Kernel').

    Returns a float64 2-D array normalised to sum 1 (a warning is issued when it was not)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"kernel file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            k = np.load(path, allow_pickle=False)
        elif suffix == ".mat":
            from scipy.io import loadmat
            mat = loadmat(path)
            keys = [key for key in ("kernel", "Kernel") if key in mat]
            if not keys:
                raise InputError(f"{path}: no 'kernel' or 'Kernel' variable in the .mat file")
            k = mat[keys[0]]
        else:
            raise InputError(f"{path}: kernel must be a .npy or .mat file")
    except InputError:
        raise
    except Exception as e:  # numpy/scipy raise many types for corrupt files
        raise InputError(f"{path}: not a valid {suffix} kernel ({e})") from None
    return validate_kernel(k, str(path))


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
    total = k.sum()
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
    # WebP is lossy unless asked: every format we write keeps the pixels exactly.
    atomic_write(path, lambda f: im.save(f, format=fmt, **({"lossless": True} if fmt == "WEBP"
                                                           else {})))
