"""The CPU a benchmark ran on, named in every figure it reports; the load it ran under (idle, or
another process busy on one core) and the alternated timing every benchmark shares."""
import contextlib
import json
import platform
import subprocess
import sys
import time

import numpy as np


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The other process of --load busy: a bounded busy loop (it ends by itself after BUSY_LIMIT s
# should the benchmark die without stopping it), scheduled by the OS like any user's job.
BUSY_LIMIT = 900
_BUSY = "import time\nend = time.monotonic() + {}\nwhile time.monotonic() < end:\n    pass\n"


@contextlib.contextmanager
def load(kind):
    """``kind`` "idle": nothing; "busy": another process holds one core meanwhile."""
    if kind == "idle":
        yield
        return
    if kind != "busy":
        raise ValueError(f"load must be idle or busy, not {kind!r}")
    p = subprocess.Popen([sys.executable, "-c", _BUSY.format(BUSY_LIMIT)])
    try:
        time.sleep(0.2)  # past the interpreter's start: the loop is running
        yield
    finally:
        p.kill()
        p.wait()


def alternated(fns, repeats, loads=("idle",), per_phase=1):
    """{load: {name: median seconds}}: ``repeats`` rounds; in each, every load in turn, and
    under it ``per_phase`` calls of every function in turn (a slow stretch of a shared machine
    lands on all of them; a threading policy sees each load long enough to settle, and its
    first steps under a new load count too). One warm-up call each first (JIT, caches)."""
    for fn in fns.values():
        fn()
    times = {ld: {name: [] for name in fns} for ld in loads}
    for _ in range(repeats):
        for ld in loads:
            with load(ld):
                for _ in range(per_phase):
                    for name, fn in fns.items():
                        t = time.perf_counter()
                        fn()
                        times[ld][name].append(time.perf_counter() - t)
    return {ld: {name: float(np.median(v)) for name, v in t.items()} for ld, t in times.items()}


def finish(rows, footer, json_path=None):
    """Every benchmark's end: the footer line (CPU, kernels, threads), the rows as JSON."""
    print(footer)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(rows, f, indent=2)
