"""The instruction set the register tiles compile for, read from the target Numba compiles for
(``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` when set, else the host), never from the host
alone: an intrinsic the target lacks makes LLVM abort the process.

``tile_isa(name, features)`` is ``"vnni"`` (AVX-512 VNNI: ``vpdpbusd`` on zmm), ``"avxvnni"``
(AVX-VNNI without AVX-512, Alder Lake and later: the VEX ``vpdpbusd`` on ymm), ``"avx2"``
(``vpmaddubsw`` + ``vpmaddwd`` on ymm) or ``None`` (no tile: the portable kernels).
"""
import os

from llvmlite import binding as llvm

# LLVM CPU names, for a target named without a feature string.
VNNI_CPUS = {"cascadelake", "cooperlake", "icelake-client", "icelake-server", "tigerlake",
             "rocketlake", "sapphirerapids", "emeraldrapids", "graniterapids",
             "graniterapids-d", "diamondrapids", "znver4", "znver5"}
AVXVNNI_CPUS = {"alderlake", "raptorlake", "meteorlake", "arrowlake", "arrowlake-s", "lunarlake",
                "pantherlake", "gracemont", "sierraforest", "grandridge", "clearwaterforest"}
AVX2_CPUS = {"haswell", "broadwell", "skylake", "skylake-avx512", "cannonlake", "znver1",
             "znver2", "znver3", "bdver4", "x86-64-v3", "x86-64-v4", "core-avx2"} \
    | AVXVNNI_CPUS | VNNI_CPUS


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


def tile_isa(name, features):
    """The register tile a target can run: an explicit feature (+/-) decides, else the name."""
    flags = {f[1:]: f[0] == "+" for f in features.split(",") if f[:1] in "+-" and len(f) > 1}
    if flags.get("avx512vnni", name in VNNI_CPUS) and flags.get("avx512bw", True):
        return "vnni"
    if flags.get("avxvnni", name in AVXVNNI_CPUS) and flags.get("avx2", True):
        return "avxvnni"
    if flags.get("avx2", name in AVX2_CPUS):
        return "avx2"
    return None


# The tile this process compiles: none when INTSR_NO_VNNI is set (the portable kernels, for
# comparison and tests), else the target's.
TILE = None if os.environ.get("INTSR_NO_VNNI") else tile_isa(*target())
