"""The three convolution kernels of a step, and the one place that chooses how they run.

``PATH`` is ``"vnni"`` (kernels/igemm_u8s8.py: AVX-512 VNNI implicit GEMM) where the target
Numba compiles for has AVX512-VNNI and ``INTSR_NO_VNNI`` is unset, else ``"portable"``
(kernels/gemm_x8s8.py). Both
compute the same integers; each public kernel below has a plain int64 reference under it.

Names follow the operand types (CMSIS-NN style): ``conv3x3_u8s8`` takes uint8 activations
(the image, or post-ReLU values, which are never negative: their int8 bytes read as uint8 are
the same numbers) and int8 weights; ``agrad3x3_s8s8`` an int8 gradient and int8 weights;
``wgrad3x3_u8s8`` uint8 activations and an int8 gradient.
"""
import os

import numpy as np
from llvmlite import binding as llvm

from intsr.kernels import gemm_x8s8, igemm_u8s8


# LLVM CPU names whose feature set includes AVX512-VNNI (for a target named without features).
_VNNI_CPUS = {"cascadelake", "cooperlake", "icelake-client", "icelake-server", "tigerlake",
              "rocketlake", "sapphirerapids", "emeraldrapids", "graniterapids",
              "graniterapids-d", "diamondrapids", "znver4", "znver5"}


def target():
    """(CPU name, feature string) that Numba compiles for: NUMBA_CPU_NAME / NUMBA_CPU_FEATURES
    when set (Numba passes the host's features unless NUMBA_CPU_FEATURES is given), else the
    host's."""
    from numba.core import config
    try:
        name = config.CPU_NAME or llvm.get_host_cpu_name()
        features = config.CPU_FEATURES
        if features is None:
            features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # llvmlite cannot read the host on some machines: stay portable
        return "generic", ""
    return name, features


def _target_has_vnni(name, features):
    # The VNNI tile emits llvm.x86.avx512.vpdpbusd, which LLVM cannot lower for a target
    # without the feature (it aborts the process): ask the target, never the host alone.
    flags = {f[1:]: f[0] == "+" for f in features.split(",") if f[:1] in "+-" and len(f) > 1}
    if "avx512vnni" in flags:
        return flags["avx512vnni"]
    return name in _VNNI_CPUS


PATH = "vnni" if _target_has_vnni(*target()) and not os.environ.get("INTSR_NO_VNNI") \
    else "portable"
_TILE_MAX_N = 64  # output channels of one VNNI register tile


def kernels_cached():
    """Whether the on-disk cache already holds compiled kernels (else the first call compiles
    them, for about a minute). Numba keeps the cache beside the package, or in the user's cache
    folder when the package folder is read-only. Reads a private attribute of Numba: any doubt
    answers True, so the worst case is a missing notice, never a failure."""
    from intsr.kernels.requant import requant_s32
    try:
        return os.path.exists(requant_s32._cache._cache_file._index_path)
    except AttributeError:
        return True


def conv3x3_u8s8(x, w):
    """x (H, W, C_in) 8-bit, w (3, 3, C_in, C_out) int8 -> (H, W, C_out) int32, exact.

    Accepts int8 x too (the activation gradient passes its int8 gradient through here)."""
    if PATH == "vnni" and w.shape[3] <= _TILE_MAX_N:
        return igemm_u8s8.conv3x3(x, w)
    return gemm_x8s8.conv3x3_portable(x, w)


def agrad_weights(w, kept_in, kept_out):
    """Weights of the activation gradient: the forward weights restricted to the kept channels,
    flipped in space and transposed, HWIO (3, 3, n_out_kept, n_in_kept)."""
    sub = w[:, :, kept_in][:, :, :, kept_out]
    return np.ascontiguousarray(sub[::-1, ::-1].transpose(0, 1, 3, 2))


def agrad3x3_s8s8(g, w, kept_in, kept_out):
    """Activation gradient for the kept input channels (Eq. 6, 9): (H, W, n_out_kept) int8
    gradient -> (H, W, n_in_kept) int32, the correlation of g with the flipped, transposed
    weights (no col2im). Headroom as the forward conv: at most 576 products of 2**14."""
    return conv3x3_u8s8(g, agrad_weights(w, kept_in, kept_out))


def wgrad3x3_u8s8(x, g):
    """Weight gradient of a 3x3 conv from its input x (H, W, C_in) 8-bit and the kept output
    gradient g (H, W, n_kept) int8 -> (9*C_in, n_kept) int64, exact; rows (dy*3 + dx)*C_in + c."""
    if PATH == "vnni" and g.shape[2] <= _TILE_MAX_N:
        return igemm_u8s8.wgrad3x3(x, g)
    return gemm_x8s8.wgrad3x3_portable(x, g)


def conv3x3_ref(x, w):
    """Plain loops over taps in int64: the reference for conv3x3_u8s8 and agrad3x3_s8s8."""
    h, wd, cin = x.shape
    p = np.zeros((h + 2, wd + 2, cin), np.int64)
    p[1:-1, 1:-1] = x
    out = np.zeros((h, wd, w.shape[3]), np.int64)
    for dy in range(3):
        for dx in range(3):
            out += p[dy:dy + h, dx:dx + wd] @ w[dy, dx].astype(np.int64)
    return out


def wgrad3x3_ref(x, g):
    """Plain loops over taps in int64: the reference for wgrad3x3_u8s8."""
    h, wd, cin = x.shape
    p = np.zeros((h + 2, wd + 2, cin), np.int64)
    p[1:-1, 1:-1] = x
    gf = g.reshape(h * wd, -1).astype(np.int64)
    return np.concatenate([p[dy:dy + h, dx:dx + wd].reshape(h * wd, cin).T @ gf
                           for dy in range(3) for dx in range(3)])
