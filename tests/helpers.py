"""Shared test data: the bundled test images, a Gaussian kernel maker, and a script runner
for thread-count determinism."""
import os
import platform
import subprocess
import sys
from pathlib import Path

from intsr.floatpath.gaussian import gaussian as floatpath_gaussian

DATA = Path(__file__).parent / "data"
X86 = platform.machine().lower() in ("x86_64", "amd64")  # can run code built for x86 targets
# Code compiled for an emulated CPU runs here only if this CPU has that CPU's instructions.
TARGET_NEEDS = {"x86-64": (), "haswell": ("avx2",), "alderlake": ("avx2", "avxvnni")}


def host_runs(cpu):
    """Whether this machine can run code Numba compiles for the LLVM CPU ``cpu``."""
    if not X86:
        return False
    from llvmlite import binding as llvm
    try:
        features = llvm.get_host_cpu_features()
    except RuntimeError:
        return False
    return all(features.get(f, False) for f in TARGET_NEEDS[cpu])
WEIGHTS = Path(__file__).parent.parent / "weights"


def gaussian(sigma, size=15):
    """Isotropic Gaussian, 15 x 15 unless told: intsr.floatpath.gaussian's."""
    return floatpath_gaussian(sigma, size=size)


def last_line_per_thread_count(script, counts=("1", "2")):
    """Run ``script`` (formatted with ``tests``, this folder) once per NUMBA_NUM_THREADS value
    in a fresh interpreter; the last stdout line of each (a digest)."""
    tests = os.path.dirname(os.path.abspath(__file__))
    lines = []
    for threads in counts:
        env = dict(os.environ, NUMBA_NUM_THREADS=threads)
        res = subprocess.run([sys.executable, "-c", script.format(tests=tests)], env=env,
                             capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, res.stderr[-2000:]
        lines.append(res.stdout.strip().splitlines()[-1])
    return lines
