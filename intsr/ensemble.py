"""Geometric self-ensemble of the SR pass, over the symmetries of the image's degradation.

The network is run on the image turned onto its pixel grid in up to 8 ways (transposed, rows
or columns reversed), each output turned back, and the outputs averaged in integers: the sum
of n uint8 outputs (n = 1, 2, 4 or 8; at most 2040, uint16), plus n / 2, shifted right by
log2 n (rounded half up). Averaging estimates of equal expected error can only lower the mean
squared error (convexity), *if* each turn is as typical an input as the image itself. That
holds for a turn only when it maps the degradation onto itself (docs/real-inputs.md,
"Self-ensemble"):

* the transpose keeps every sampling grid (both axes have the same offset) and needs taps
  with ``k == k.T``;
* reversing the rows (or the columns) of an LR image of ``s * n`` pixels maps Eq. 1's son of
  it onto the reversed son only if the taps mirror onto themselves about the grid's sampling
  point: ``k[t] == k[2 (n // 2) + d - t]`` for n taps centred on tap n // 2, with
  ``d = s - 1 - 2 * offset`` (zero outside the taps).
  Eq. 1's centre grid keeps ``s // 2``, so at even s a Gaussian's odd taps fail by half a
  pixel, while a resizer's taps (centred at ``(s - 1) / 2``, intsr.floatpath.realdeg) pass.
  An adapted network learns that half pixel from the son; averaging its output with the
  reversed one smears the image by a pixel (measured: -1.1 dB on Set5, Eq. 1).

Without a kernel (plain SR) the degradation is unknown and nothing was learned from a son:
on the centre grid all eight turns, chosen by measurement (held-out images,
docs/real-inputs.md: all eight gain on five of the six kinds of real inputs and lose 0.1 dB on
the centre-grid Gaussians, whose direct-SR output hedges towards the corner grid; the
transpose alone gains less). On the corner grid the transpose only: reversing the rows of an
image kept at HR pixels ``s i`` keeps pixels ``s i + s - 1``, a grid s - 1 pixels away
(measured: all eight turns put noisy corner-grid images 0.1 dB below bicubic, the transpose
2.3 dB above it).

Transform codes: bit 4 transposes, then bit 1 reverses the rows, bit 2 the columns.
"""
import numpy as np

from intsr.io import InputError
from intsr.kernels.resample import grid_offset

NAMES = {0: "identity", 4: "transpose", 3: "rot180", 7: "anti-transpose", 1: "flip-rows",
         2: "flip-columns", 5: "rot90", 6: "rot270"}
# Every prefix of a power-of-two length of this order, filtered to the symmetries, is a group.
ORDER = (0, 4, 3, 7, 1, 2, 5, 6)
SETTINGS = ("auto", 1, 2, 4, 8)
# "auto": as many passes as the symmetries allow while passes x output pixels stay within one
# 1080p frame: a full frame keeps its single pass (issue 29's wait), an output of up to an
# eighth of one (480 x 540 pixels) gets all eight.
BUDGET = 1920 * 1080


def turn(x, code):
    """``x`` (H, W[, C]) turned by ``code``, contiguous."""
    if code & 4:
        x = x.swapaxes(0, 1)
    if code & 1:
        x = x[::-1]
    if code & 2:
        x = x[:, ::-1]
    return np.ascontiguousarray(x)


def unturn(x, code):
    """The inverse of turn."""
    if code & 2:
        x = x[:, ::-1]
    if code & 1:
        x = x[::-1]
    if code & 4:
        x = x.swapaxes(0, 1)
    return x


def _mirror(k, d, axis):
    """Taps t -> k[2 (n // 2) + d - t] along ``axis`` (n taps, centred on tap n // 2 as Eq. 1
    applies them), zero where that is outside."""
    n = k.shape[axis]
    src = 2 * (n // 2) + d - np.arange(n)
    inside = (src >= 0) & (src < n)
    out = np.zeros_like(k)
    idx = [slice(None)] * 2
    idx[axis] = inside
    out[tuple(idx)] = np.take(k, src[inside], axis=axis)
    return out


def is_symmetry(k_fixed, code, scale, grid):
    """Whether turn ``code`` maps Eq. 1 with the integer taps ``k_fixed`` on ``grid`` onto
    itself (module docstring): the turned taps differ from the taps by less than 1/510 of their
    sum in all, so the two sons of any image are under half a level apart before rounding (the
    fixed-point taps put their rounding residue on one tap, which breaks exact symmetry: a
    Lanczos kernel's centre row differs by 12 of 65,536)."""
    k = np.asarray(k_fixed)
    if code & 4 and k.shape[0] != k.shape[1]:
        return False
    d = scale - 1 - 2 * grid_offset(grid, scale)
    kk = k.T if code & 4 else k
    if code & 1:
        kk = _mirror(kk, d, 0)
    if code & 2:
        kk = _mirror(kk, d, 1)
    diff = int(np.abs(kk.astype(np.int64) - k).sum())
    return 2 * 255 * diff < int(k.sum())


def symmetries(k_fixed, scale, grid):
    """The turns (codes, ORDER) that map the degradation onto itself; without taps (plain SR)
    all of them on the centre grid, the transpose on the corner grid (module docstring)."""
    if k_fixed is None:
        return ORDER if grid_offset(grid, scale) == scale // 2 else (0, 4)
    return tuple(c for c in ORDER if is_symmetry(k_fixed, c, scale, grid))


def check_setting(setting):
    """The ensemble setting: "auto" or 1, 2, 4, 8 passes at most (an int or its text)."""
    value = setting
    if isinstance(setting, str) and setting != "auto" and setting.strip().isdigit():
        value = int(setting)
    if isinstance(value, bool) or not (value == "auto" or isinstance(value, (int, np.integer))
                                       and value in SETTINGS):
        raise InputError(f"ensemble must be 'auto' or 1, 2, 4 or 8 passes, not {setting!r}")
    return value


def choose(k_fixed, scale, grid, setting, out_pixels):
    """The turns the SR pass averages: the largest power-of-two prefix of ``symmetries`` within
    ``setting`` passes ("auto": within BUDGET output pixels over all passes, at least one)."""
    setting = check_setting(setting)
    sym = symmetries(k_fixed, scale, grid)
    cap = max(1, BUDGET // max(1, out_pixels)) if setting == "auto" else setting
    n = 1
    while n * 2 <= min(cap, len(sym)):
        n *= 2
    return sym[:n]


def average(outputs):
    """Integer mean of 1, 2, 4 or 8 uint8 arrays, rounded half up. ``outputs`` may be any
    iterable: they are summed as they come, so that a pass holds one uint16 sum and one
    output, however many turns it averages."""
    it = iter(outputs)
    first, total, n = next(it), None, 1
    for o in it:
        if total is None:
            total = first.astype(np.uint16)
        total += o
        n += 1
    if total is None:
        return first
    return ((total + n // 2) >> (n.bit_length() - 1)).astype(np.uint8)


def describe(codes):
    """Reporting: the turns by name."""
    return [NAMES[c] for c in codes]
