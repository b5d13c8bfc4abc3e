"""The threading policy: how many threads the kernels run on, chosen again after every step.

Numba's parallel kernels are fork-join regions (the OpenMP layer's threads spin while they
wait), and a 128 px step runs about a hundred of them, each as slow as its slowest thread.
When another process holds one of two cores, the thread that shares its core runs about half
the time and every region waits for it: measured (AMD EPYC, 2 cores) 41 ms idle, 192 ms with
a busy neighbour on two threads, 70 ms on one (docs/performance.md, "Threads and busy cores").
Waiting passively instead of spinning (OMP_WAIT_POLICY, GOMP_SPINCOUNT) or Numba's workqueue
layer cost a third more idle and still lose under load; so the policy keeps the spinning
default and changes the number of threads:

- ``auto`` (the default): after every step, the time this process's threads spent runnable
  but waiting for a CPU (the kernel's run-queue delay per thread, /proc/self/task/*/schedstat,
  in ns) is compared with the step's wall time: a quarter of a core or more lost means a core
  is taken, and the next step runs on one thread fewer. Below the maximum, the machine's idle
  time during the steps (/proc/stat, in clock ticks, summed over at least ``WINDOW_TICKS``
  per CPU) says when a core is free again: six tenths of a core idle, and the next step runs
  on one thread more. A step at the maximum (the first one too) starts from the processes
  running at that instant (/proc/loadavg's runnable count, less this process's own running
  threads), so a process that starts beside it costs no step on every thread. Where these
  files do not exist (not Linux) the count stays at the maximum.
- below the maximum, ``auto`` also moves each layer's weight gradient and update off the
  chain that sets the step's time (forward, then each activation gradient) onto one side
  thread (``side_thread``) that sleeps while it waits: beside a busy neighbour it gets what
  its core has left, and the caller's thread takes the weight gradients the side has not
  begun once its chain is done. Measured (AMD EPYC, 2 cores, 128 px, a busy loop on one
  core, alternated): 69-70 ms on one thread, 63 ms with the side thread; idle on two
  threads 34-36 ms. Spreading the chain's convolutions over both threads in row bands gained
  nothing under load (a band held by a thread that lost its core holds up the layer).
  A side-thread step that lost under a tenth of a core to waiting adds the thread back.
  On one thread and the side, the two threads are pinned to two CPUs (``sched_setaffinity``)
  for the step: left to the scheduler, the caller's thread often shares a CPU with the
  neighbour or the side, and the side gained nothing (backward pass 42 ms, as on one thread;
  the caller ran 79 % of the step, the side 31 %); pinned, the neighbour settles beside the
  side thread, whose work can wait, and the chain keeps a core (backward 30-31 ms). If the
  caller's thread waited for its CPU a quarter of the step or more (the neighbour is beside
  it, e.g. pinned there), the next step swaps the two CPUs; if it waits so again right after
  a swap, every CPU is shared (two intsr jobs pinned both callers to one CPU at every other
  step: 87-89 ms against 64 unpinned) and the steps run unpinned until back at the maximum.
  Only with Numba's OpenMP layer, whose threads take the mask of the thread that first runs
  a region on them (never a pinned one: pinned steps run on one thread); the caller's own
  mask is back when the step ends, the side thread's with its next task.
- a fixed count: ``INTSR_THREADS=N`` in the environment, ``--threads N`` on every command,
  or ``configure(N)``: exactly that many, no side thread.

The maximum is the number of CPUs this process may run on, at most NUMBA_NUM_THREADS. Only
integers are read and compared (nanoseconds, ticks), and the count never changes a result:
every kernel is bit-identical for any number of threads (tested). The SR pass is parallel
across image tiles instead (``map_tiles``): one Python thread per CPU, each running the kernels
on one thread, so no region waits for another thread and a busy core just finishes fewer
tiles.
"""
import contextlib
import glob
import os
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numba

ENV = "INTSR_THREADS"
WAIT_QUARTERS = 1  # run-queue delay of a quarter of a core (x4 >= wall) drops a thread
IDLE_TENTHS = 6  # six tenths of a core idle adds one back
SIDE_FREE_TENTHS = 1  # a side-thread step that lost under a tenth of a core adds one back
# (measured, AMD EPYC, 2 cores, 128 px: 0.31-0.84 of a core lost beside a busy loop, 0-0.03
# without it)
WINDOW_TICKS = 5  # clock ticks per CPU (50 ms at the usual 100 Hz) before judging idle time:
# one 128 px step on one thread; a busy neighbour leaves no idle tick in it (measured)


def parse(text: str | None) -> int | None:
    """INTSR_THREADS or --threads: a count >= 1, or None for auto ("auto" or unset)."""
    if text is None or str(text).strip().lower() in ("", "auto"):
        return None
    try:
        n = int(str(text).strip())
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"threads must be a count >= 1 or auto, not {text!r}")
    return n


def cpus() -> int:
    """The CPUs this process may run on (its affinity), at most Numba's thread pool."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, numba.config.NUMBA_NUM_THREADS))


def _read_ints(path, fields):
    try:
        with open(path) as f:
            parts = f.read().split()
        return [int(parts[i]) for i in fields]
    except (OSError, ValueError, IndexError):
        return None


def _run_queue_wait_ns():
    """Nanoseconds this process's threads have spent runnable but not running, or None."""
    total, found = 0, False
    for path in glob.glob("/proc/self/task/*/schedstat"):
        v = _read_ints(path, [1])
        if v is not None:
            total, found = total + v[0], True
    return total if found else None


def _thread_wait_ns():
    """Nanoseconds the calling thread has spent runnable but not running, or 0 if unknown."""
    v = _read_ints("/proc/thread-self/schedstat", [1])
    return 0 if v is None else v[0]


def _stat_fields(path):
    """A /proc/.../stat line's fields from the state on (field 3; the command name before it
    may hold spaces), or None if unreadable."""
    try:
        with open(path) as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _cpu_now():
    """The CPU the calling thread last ran on (/proc/thread-self/stat, field 39), or None."""
    fields = _stat_fields("/proc/thread-self/stat")
    try:
        return int(fields[36])
    except (TypeError, ValueError, IndexError):
        return None


def _cpu_ticks():
    """(all, idle) clock ticks of every CPU since boot (/proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # idle + iowait
    except (OSError, ValueError, IndexError):
        return None


def _own_running():
    """This process's threads running or runnable now."""
    return sum((_stat_fields(path) or ["?"])[0] == "R"
               for path in glob.glob("/proc/self/task/*/stat"))


def _others_running():
    """Processes running or runnable right now besides this one's own threads, or 0. The
    machine's count is read between two counts of this process's threads, and the larger is
    taken: a thread of ours that stops spinning (R -> S, an OpenMP worker after its region) or
    starts between the readings must not read as another process."""
    before = _own_running()
    try:
        with open("/proc/loadavg") as f:  # "0.00 0.01 0.05 RUNNING/TOTAL LAST_PID"
            running = int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, running - max(before, _own_running()))


class Policy:
    """The thread count of the steps: ``step(fn)`` runs one step on ``current`` threads, then
    chooses the next count (module docstring). One per process (``POLICY``)."""

    def __init__(self, fixed: int | None = None):
        self.max = cpus() if fixed is None else fixed
        self.fixed = fixed
        self.sensing = fixed is None and _cpu_ticks() is not None \
            and _run_queue_wait_ns() is not None
        self.current = self.max
        self.steps = {}  # thread count -> steps run on it
        self._window = [0, 0]  # (all, idle) ticks during steps below the maximum
        self._machine_cpus = os.cpu_count() or 1
        self.side_steps = 0  # steps whose weight gradients ran on the side thread
        self.pinned_steps = 0  # of those, steps with the two threads pinned to two CPUs
        self.pair = None  # (caller's CPU, side's CPU) of the pinned steps, once chosen
        self._swapped = False  # the pair was swapped after the last pinned step
        self.pinning = True  # False once pinning did not help, until back at the maximum

    def apply(self):
        numba.set_num_threads(min(self.current, numba.config.NUMBA_NUM_THREADS))

    def step(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) on ``current`` threads; afterwards the count for the next."""
        if self.sensing and self.current == self.max:
            self.pinning = True  # a neighbour that comes next gets a fresh try
            # At the maximum, a process that started running since the last step would make
            # this step pay for it on every parallel region before the readings after it
            # could drop a thread (measured: 150-230 ms against 63 on one thread and the
            # side): the processes running right now decide it first.
            self.current = max(1, self.max - _others_running())
        self.apply()
        self.steps[self.current] = self.steps.get(self.current, 0) + 1
        if not self.sensing:
            return fn(*args, **kwargs)
        below = self.current < self.max  # the machine's idle time matters only then
        side = below and _concurrent_launches_safe()
        self.side_steps += side
        mask = self._pin() if side and self.current == 1 else None
        self.pinned_steps += mask is not None
        w0, c0, t0 = _run_queue_wait_ns(), below and _cpu_ticks(), time.perf_counter_ns()
        if mask is not None:
            caller0 = _thread_wait_ns()
        try:
            with side_on(side):
                result = fn(*args, **kwargs)
        finally:
            if mask is not None:
                _unpin(mask)
        t1, w1, c1 = time.perf_counter_ns(), _run_queue_wait_ns(), below and _cpu_ticks()
        if mask is not None:
            self.pair, self._swapped = next_pair(self.pair, self._swapped,
                                                 _thread_wait_ns() - caller0, t1 - t0)
            self.pinning = self.pair is not None
        # a reading that failed this once (a file gone) counts as nothing seen
        waited = w0 is not None and w1 is not None
        wait = max(0, w1 - w0) if waited else 0
        ticks = (c1[0] - c0[0], c1[1] - c0[1]) if below and c0 and c1 else (0, 0)
        self.observe(t1 - t0, wait, *ticks, side and waited)
        return result

    def _pin(self):
        """Pin this thread and the side thread to the CPUs of ``pair`` (chosen first from the
        CPU this thread is on); returns this thread's mask before, or None if not pinned."""
        try:
            if not (_PINNING and self.pinning) or numba.threading_layer() != "omp":
                return None
            mask = os.sched_getaffinity(0)
            if self.pair is None or not set(self.pair) <= mask:
                self.pair = first_pair(mask, _cpu_now())
            if self.pair is None:
                return None
            os.sched_setaffinity(0, {self.pair[0]})
        except (OSError, ValueError):
            return None
        global _SIDE_CPUS
        _SIDE_CPUS = {self.pair[1]}
        return mask

    def observe(self, wall_ns, wait_ns, ticks, idle_ticks, side=False):
        """One step's readings -> the next count (integers only): its wall time, its threads'
        run-queue delay, and the machine's clock ticks in all and idle meanwhile; ``side``:
        whether the step ran the side thread."""
        if self.current > 1 and 4 * wait_ns >= WAIT_QUARTERS * wall_ns:
            self.current -= 1
            self._window = [0, 0]
        elif side and 10 * wait_ns < SIDE_FREE_TENTHS * wall_ns:
            # The side thread and the caller's were runnable together through the backward
            # pass and neither waited: nobody else wants a core.
            self.current += 1
            self._window = [0, 0]
        elif self.current < self.max:
            self._window[0] += ticks
            self._window[1] += idle_ticks
            n = self._machine_cpus  # /proc/stat counts every CPU of the machine
            if self._window[0] >= WINDOW_TICKS * n:
                # idle cores = n * idle / all, in tenths
                if 10 * n * self._window[1] >= IDLE_TENTHS * self._window[0]:
                    self.current += 1
                self._window = [0, 0]
        self.apply()

    def report(self) -> dict:
        """For --json: the policy, the maximum, and how many steps ran on each count."""
        return {"policy": "auto" if self.fixed is None else "fixed", "max": self.max,
                "sensing": self.sensing, "sr_tile_workers": self.max,
                "steps_by_threads": {str(k): v for k, v in sorted(self.steps.items())},
                "steps_with_side_thread": self.side_steps,
                "steps_pinned": self.pinned_steps}


def first_pair(cpus, now):
    """(caller's CPU, side's CPU) for the first pinned step: the CPU the caller is on (where
    the scheduler put it; the smallest allowed if unknown) and the next allowed one after it,
    or None with fewer than two CPUs allowed."""
    order = sorted(cpus)
    if len(order) < 2:
        return None
    i = order.index(now) if now in order else 0
    return order[i], order[(i + 1) % len(order)]


def next_pair(pair, just_swapped, caller_wait_ns, wall_ns):
    """After a pinned step: (the pair for the next one, whether that is a swap). If the
    caller's thread waited for its CPU a quarter of the step or more, its CPU is shared (the
    neighbour sits there: pinned there, say): swap. If it waited so right after a swap, both
    CPUs are shared (two intsr jobs; a neighbour on every core): None, pin no more. Else the
    same pair (measured beside a busy loop on the side's CPU: the caller waits 0-8 % of a step;
    two intsr jobs pinned: 42-51 % in both, swapping at every step)."""
    if 4 * caller_wait_ns < WAIT_QUARTERS * wall_ns:
        return pair, False
    if just_swapped:
        return None, False
    return (pair[1], pair[0]), True


def _checked(threads):
    n = threads if isinstance(threads, int) and not isinstance(threads, bool) else parse(threads)
    if n is not None and not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"threads must be 1-{numba.config.NUMBA_NUM_THREADS} here "
                         f"(NUMBA_NUM_THREADS), or auto, not {n}")
    return n


def _from_env():
    # A bad INTSR_THREADS must not make `import intsr` fail: said once, then auto.
    try:
        policy = Policy(_checked(os.environ.get(ENV)))
        if policy.fixed is not None:  # every kernel call honours it, not only the steps
            policy.apply()
        return policy
    except ValueError as e:
        warnings.warn(f"{ENV}: {e}; using auto", stacklevel=2)
        return Policy()


POLICY = _from_env()


def configure(threads: int | str | None) -> Policy:
    """Set the process's policy: a fixed count, or None / "auto" for the adaptive one.
    ValueError if the count is below 1 or above what Numba's pool holds."""
    global POLICY
    POLICY = Policy(_checked(threads))
    POLICY.apply()
    return POLICY


def _concurrent_launches_safe():
    # Numba's OpenMP and TBB layers accept parallel launches from several threads at once; its
    # workqueue layer aborts the process. Unknown before the first launch: then serial.
    try:
        return numba.threading_layer() in ("omp", "tbb")
    except ValueError:
        return False


_SIDE_ON = False  # steps now run their weight gradients on the side thread (side_on)
_SIDE = None
_SIDE_CPUS = None  # the CPUs the side thread takes before its next task; None: leave its own
_SIDE_LOCAL = threading.local()  # on the side thread: the CPUs it last took
_PINNING = hasattr(os, "sched_setaffinity")


def _unpin(mask):
    """The caller's CPUs back to ``mask``, and the side thread's with them from its next task."""
    global _SIDE_CPUS
    _SIDE_CPUS = mask
    try:
        os.sched_setaffinity(0, mask)
    except OSError:
        pass


def _on_side_cpus(fn, *args):
    """Runs ``fn(*args)`` on the side thread after it takes the CPUs ``_SIDE_CPUS`` says."""
    want = _SIDE_CPUS
    if want is not None and getattr(_SIDE_LOCAL, "cpus", None) != want:
        try:
            os.sched_setaffinity(0, want)
            _SIDE_LOCAL.cpus = want
        except OSError:
            pass
    return fn(*args)


class _SideExecutor(ThreadPoolExecutor):
    """One thread whose tasks first take the CPUs the policy chose for it (``_on_side_cpus``)."""

    def submit(self, fn, /, *args):
        return super().submit(_on_side_cpus, fn, *args)


def _forget_side():
    global _SIDE
    _SIDE = None  # a forked child has no side thread: its executor would wait forever


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_side)


@contextlib.contextmanager
def side_on(on=True):
    """Steps inside run their weight gradients on the side thread if ``on``, whatever the
    count (what Policy.step does below its maximum; benchmarks and tests set it to compare)."""
    global _SIDE_ON
    _SIDE_ON = bool(on)
    try:
        yield
    finally:
        _SIDE_ON = False


def side_thread():
    """The executor of a step's weight gradients while the auto policy runs below its maximum
    (a core taken), else None: one Python thread, its kernels on one thread, made on first use.
    The chain that decides the step's time (forward, then each layer's activation gradient)
    stays on the caller's thread, and the weight gradients, which nothing in the step waits
    for but the update, run beside it; a thread that waits for work sleeps instead of
    spinning, so a shared core costs it only its share."""
    global _SIDE
    if not _SIDE_ON or not _concurrent_launches_safe():  # workqueue: launches from one thread
        return None
    if _SIDE is None:
        _SIDE = _SideExecutor(1, thread_name_prefix="intsr-side",
                              initializer=numba.set_num_threads, initargs=(1,))
    return _SIDE


def map_tiles(fn, jobs, workers: int | None = None):
    """fn(job) for every job, on ``workers`` Python threads (default: the policy's maximum),
    each running the kernels on one thread; jobs are taken in order as threads come free, so
    a thread on a busy core takes fewer. The kernels release the GIL (nogil). Serial with one
    worker, one job, or a Numba threading layer that cannot launch from several threads."""
    workers = POLICY.max if workers is None else workers
    jobs = list(jobs)
    if workers <= 1 or len(jobs) <= 1 or not _concurrent_launches_safe():
        for job in jobs:
            fn(job)
        return

    def one(job):
        numba.set_num_threads(1)  # thread-local in Numba: the caller's count is unchanged
        fn(job)

    with ThreadPoolExecutor(min(workers, len(jobs))) as pool:
        for _ in pool.map(one, jobs):  # re-raises the first failure
            pass
