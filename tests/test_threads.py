"""The threading policy (intsr.threads): its decision rule on given readings, that a step runs
on the count it chose, that the SR pass's tiles on several threads give the same bytes as one
tile after another, and --threads / INTSR_THREADS at the edges. How fast any of this is lives in
benchmarks/bench_step.py and bench_sr.py (--load idle busy), not here."""
import json
import os
import subprocess
import sys

import numba
import numpy as np
import pytest

from intsr import threads
from intsr.arch import HALO
from intsr.floatpath.convert import weights_to_int
from intsr.model import IntNet
from intsr.weights import load_model

from helpers import DATA, WEIGHTS

ROOT = WEIGHTS.parent

WALL = 100_000_000  # a 100 ms step, in ns


def _auto(current, maximum=2):
    p = threads.Policy()
    p.sensing, p.max, p.current, p._machine_cpus = True, maximum, current, 2
    return p


@pytest.mark.parametrize("text, n", [(None, None), ("", None), ("auto", None), (" AUTO ", None),
                                     ("1", 1), ("2", 2), (" 3 ", 3)])
def test_parse_reads_a_count_or_auto(text, n):
    assert threads.parse(text) == n


@pytest.mark.parametrize("text", ["0", "-1", "x", "1.5", "two"])
def test_parse_refuses_anything_else(text):
    with pytest.raises(ValueError, match="threads must be"):
        threads.parse(text)


def test_configure_refuses_more_than_numbas_pool():
    with pytest.raises(ValueError, match="NUMBA_NUM_THREADS"):
        threads.configure(numba.config.NUMBA_NUM_THREADS + 1)
    with pytest.raises(ValueError):
        threads.configure(True)  # a bool is not a count
    threads.configure(None)


@pytest.mark.parametrize("wait, after", [(WALL // 4, 1), (WALL // 4 - 1, 2), (WALL, 1), (0, 2)])
def test_a_quarter_core_of_run_queue_delay_drops_a_thread(wait, after):
    p = _auto(2)
    p.observe(WALL, wait, 20, 0)
    assert p.current == after


def test_one_thread_never_drops_further():
    p = _auto(1)
    p.observe(WALL, WALL, 20, 0)
    assert p.current == 1


@pytest.mark.parametrize("idle_per_window, after", [(3, 2), (2, 1), (0, 1)])
def test_six_tenths_of_an_idle_core_adds_a_thread_back(idle_per_window, after):
    # 2 CPUs: the window closes at 10 ticks in all (5 per CPU); 0.6 of a core idle is 3 of
    # them
    p = _auto(1)
    p.observe(WALL, 0, 5, idle_per_window // 2)
    assert p.current == 1  # 5 ticks: too few to judge
    p.observe(WALL, 0, 5, idle_per_window - idle_per_window // 2)
    assert p.current == after
    assert p._window == [0, 0]  # judged: a new window starts


@pytest.mark.parametrize("wait, after", [(WALL // 10 - 1, 2), (WALL // 10, 1)])
def test_a_side_thread_step_that_waited_under_a_tenth_of_a_core_adds_a_thread_back(wait, after):
    p = _auto(1)
    p.observe(WALL, wait, 0, 0, side=True)  # no idle tick seen: the waiting alone decides
    assert p.current == after


def test_the_side_thread_runs_only_for_auto_below_its_maximum(monkeypatch):
    monkeypatch.setattr(threads, "_concurrent_launches_safe", lambda: True)
    monkeypatch.setattr(threads, "_others_running", lambda: 0)
    seen = []
    for p, current in ((_auto(1), 1), (_auto(2), 2), (threads.Policy(1), 1)):
        p.current = current
        p.step(lambda: seen.append(threads.side_thread() is not None))
        assert p.report()["steps_with_side_thread"] == int(seen[-1])
    assert seen == [True, False, False]
    assert threads.side_thread() is None  # only while a step runs
    monkeypatch.setattr(threads, "_concurrent_launches_safe", lambda: False)
    with threads.side_on():
        assert threads.side_thread() is None  # a layer that launches from one thread only


def _steps(net, inp, tgt, n=3, record=None):
    from intsr.floatpath.convert import lr_to_fixed
    mult, shift = lr_to_fixed(0.01, tgt.size)
    return [net.step(inp, tgt, mult, shift, record) for _ in range(n)]


@pytest.mark.parametrize("precision, prune", [("int8", None), ("mixed-x2", 0.5)])
def test_weight_gradients_on_the_side_thread_are_the_same_integers(precision, prune,
                                                                   monkeypatch):
    """A step whose weight gradients and updates run on the side thread (and on the caller's
    once its chain is done) against the same steps all on the caller's thread: the losses,
    every master weight and scale, and the recorded scales, bit for bit; and the side thread
    did take some of them."""
    import threading

    from intsr import model
    from intsr.weights import shipped_precision
    weights, masks, _ = load_model(prune=prune)
    rng = np.random.default_rng(5)
    inp = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    tgt = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    nets = [IntNet(weights_to_int(weights), masks, precision=shipped_precision(precision))
            for _ in range(2)]
    records = [model.new_record() for _ in range(2)]
    numba.set_num_threads(1)
    serial = _steps(nets[0], inp, tgt, record=records[0])
    where = []
    wgrad = model.wgrad3x3
    monkeypatch.setattr(model, "wgrad3x3", lambda x, g: where.append(
        threading.current_thread().name) or wgrad(x, g))
    with threads.side_on():
        side = _steps(nets[1], inp, tgt, record=records[1])
    assert side == serial
    for a, b in zip(nets[0].weights, nets[1].weights, strict=True):
        assert a.scale == b.scale and np.array_equal(a.value, b.value)
    assert records[0] == records[1] and nets[0].macs == nets[1].macs
    # (Numba's workqueue layer cannot launch from two threads: there the step stays serial)
    assert any(name.startswith("intsr-side") for name in where) == \
        threads._concurrent_launches_safe(), where
    assert len(where) == 3 * sum(k.size > 0 for k in nets[0].kept)


def test_a_failure_on_the_side_thread_fails_the_step(monkeypatch):
    from intsr import model
    net = IntNet(weights_to_int(load_model()[0]))
    rng = np.random.default_rng(6)
    img = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    real = model._weight_grad

    def bad(dw, exp, bits, nearest, st=None):
        if dw.shape[0] == 27:  # layer 1's weight gradient (9 taps x 3 channels)
            raise ArithmeticError("layer 1")
        return real(dw, exp, bits, nearest, st)
    monkeypatch.setattr(model, "_weight_grad", bad)
    with threads.side_on(), pytest.raises(ArithmeticError, match="layer 1"):
        _steps(net, img, img, n=1)
    assert threads.side_thread() is None


@pytest.mark.parametrize("cpus, now, pair", [({0, 1}, 0, (0, 1)), ({0, 1}, 1, (1, 0)),
                                             ({2, 5, 7}, 7, (7, 2)), ({2, 5}, None, (2, 5)),
                                             ({3, 4}, 9, (3, 4)), ({3}, 3, None)])
def test_the_first_pair_is_the_callers_cpu_and_the_next_allowed(cpus, now, pair):
    assert threads.first_pair(cpus, now) == pair


@pytest.mark.parametrize("caller, just_swapped, after", [
    (WALL // 4 - 1, False, ((0, 1), False)), (WALL // 4 - 1, True, ((0, 1), False)),
    (WALL // 4, False, ((1, 0), True)), (WALL, False, ((1, 0), True)),
    (WALL // 4, True, (None, False))])
def test_the_cpus_swap_once_when_the_callers_thread_waited_a_quarter_then_pinning_stops(
        caller, just_swapped, after):
    assert threads.next_pair((0, 1), just_swapped, caller, WALL) == after


def test_pinning_stops_when_a_swap_did_not_help_and_comes_back_at_the_maximum(monkeypatch):
    """Two readings of a quarter of a step waited in a row (both CPUs shared): the third step
    runs unpinned, and so on until the policy is back at its maximum."""
    monkeypatch.setattr(threads, "_others_running", lambda: 0)
    monkeypatch.setattr(threads, "_concurrent_launches_safe", lambda: True)
    monkeypatch.setattr(numba, "threading_layer", lambda: "omp")
    monkeypatch.setattr(threads, "_PINNING", True)
    monkeypatch.setattr(threads.Policy, "observe", lambda self, *a: None)  # stays at 1
    pinned = []
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: pinned.append(set(cpus)))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(threads, "_cpu_now", lambda: 0)
    waits = iter(range(0, 10 * WALL, WALL))  # the caller waits a whole step every step
    monkeypatch.setattr(threads, "_thread_wait_ns", lambda: next(waits))
    p = _auto(1)
    for _ in range(3):
        p.step(lambda: None)
    assert p.pinned_steps == 2 and not p.pinning
    assert pinned[0] == {0} and pinned[2] == {1}  # the caller's CPU, then the swap
    p.current = p.max
    p.step(lambda: None)
    assert p.pinning


def test_one_thread_and_the_side_run_pinned_to_two_cpus_and_the_masks_come_back(monkeypatch):
    """Below the maximum on one thread, a step runs its thread on the pair's first CPU and the
    side thread on the second; afterwards the caller has its own mask again, and so has the
    side thread from its next task outside the policy. With one CPU allowed: never pinned."""
    monkeypatch.setattr(threads, "_others_running", lambda: 0)
    monkeypatch.setattr(threads, "next_pair", lambda pair, swapped, caller, wall: (pair, False))
    img = np.zeros((16, 16, 3), np.uint8)
    _steps(IntNet(weights_to_int(load_model()[0])), img, img, n=1)  # a parallel launch: the
    # threading layer is known
    own = os.sched_getaffinity(0)

    def cpus():  # this thread's CPUs and the side thread's, during a step
        side = threads.side_thread()
        return os.sched_getaffinity(0), side and side.submit(os.sched_getaffinity, 0).result()
    p = _auto(1)
    p.sensing = threads.Policy().sensing
    caller, side = p.step(cpus)
    assert os.sched_getaffinity(0) == own
    if len(own) < 2 or not p.sensing or numba.threading_layer() != "omp":
        assert p.pinned_steps == 0 and p.pair is None and caller == own
        return
    assert p.report()["steps_pinned"] == 1 and p.pair[0] != p.pair[1]
    assert caller == {p.pair[0]} and side == {p.pair[1]}
    p.current = 1

    def fails():
        assert os.sched_getaffinity(0) == {p.pair[0]}
        raise ArithmeticError("mid-step")
    with pytest.raises(ArithmeticError, match="mid-step"):
        p.step(fails)
    assert os.sched_getaffinity(0) == own and p.pinned_steps == 2
    with threads.side_on():  # a fixed setting (benchmarks): the side thread unpinned again
        assert cpus() == (own, own)


def test_a_pinned_first_step_leaves_openmps_threads_on_every_cpu():
    """A process whose first step runs pinned (a neighbour already busy), then on two threads:
    the OpenMP threads are made by the unpinned caller, so every thread may run anywhere (the
    side thread takes the caller's CPUs again with its next task)."""
    code = (
        "import glob, os, numpy as np, numba\n"
        "from intsr import threads\n"
        "from intsr.floatpath.convert import weights_to_int\n"
        "from intsr.model import IntNet\nfrom intsr.weights import load_model\n"
        "threads._others_running = lambda: 1\n"
        "numba.set_num_threads(1)\n"  # no region on two threads before the pinned step
        "p = threads.Policy(); net = IntNet(weights_to_int(load_model()[0]))\n"
        "alone = len(glob.glob('/proc/self/task/*'))\n"
        "img = np.zeros((24, 24, 3), np.uint8)\n"
        "p.step(net.step, img, img, 1, 20)\n"
        "threads._others_running = lambda: 0\n"
        "p.current = p.max; p.step(net.step, img, img, 1, 20)\n"
        "own = os.sched_getaffinity(0)\n"
        "threads._SIDE.submit(len, '').result()\n"  # its next task: the side's CPUs back
        "masks = [open(f).read().split('Cpus_allowed_list:')[1].split()[0]\n"
        "         for f in glob.glob('/proc/self/task/*/status')]\n"
        "print(p.pinned_steps, len(own), numba.threading_layer(), len(set(masks)), "
        "len(masks) - alone)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    pinned, cpus, layer, distinct, made = r.stdout.split()
    if int(cpus) >= 2 and layer == "omp":
        assert pinned == "1"
        assert int(made) >= 2  # the side thread and OpenMP's, made after the pinned step began
    assert distinct == "1"  # one mask for all: none left pinned


@pytest.mark.parametrize("others, current", [(0, 2), (1, 1), (5, 1)])
def test_a_step_at_the_maximum_starts_from_the_processes_running_now(others, current,
                                                                    monkeypatch):
    """At its maximum (the first step too) a step first drops a thread per other running
    process, at least one left; below it the readings after each step decide, not this."""
    monkeypatch.setattr(threads, "_others_running", lambda: others)
    monkeypatch.setattr(threads, "_concurrent_launches_safe", lambda: False)
    p = _auto(2)
    p.step(lambda: None)
    assert p.report()["steps_by_threads"] == {str(current): 1}
    p = _auto(1)
    monkeypatch.setattr(threads, "_others_running", lambda: 0)
    p.step(lambda: None)
    assert p.report()["steps_by_threads"] == {"1": 1}


def test_never_above_the_maximum():
    p = _auto(2)
    p.observe(WALL, 0, 40, 40)
    assert p.current == 2


def test_a_fixed_count_does_not_move_and_says_so():
    p = threads.Policy(1)
    assert not p.sensing
    seen = [p.step(numba.get_num_threads) for _ in range(3)]
    assert seen == [1, 1, 1]
    assert p.report()["policy"] == "fixed" and p.report()["steps_by_threads"] == {"1": 3}


def test_a_reading_that_fails_mid_run_is_nothing_seen(monkeypatch):
    p = _auto(2)
    monkeypatch.setattr(threads, "_others_running", lambda: 0)
    monkeypatch.setattr(threads, "_run_queue_wait_ns", lambda: None)
    monkeypatch.setattr(threads, "_cpu_ticks", lambda: None)
    assert p.step(lambda: 7) == 7 and p.current == 2
    p.current = 1
    assert p.step(lambda: 8) == 8 and p.current == 1 and p._window == [0, 0]


def test_a_step_runs_on_the_count_chosen_and_is_counted():
    p = threads.Policy()
    got = p.step(numba.get_num_threads)
    assert got in range(1, p.max + 1)
    assert sum(p.report()["steps_by_threads"].values()) == 1


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="Linux /proc readings")
def test_the_readings_are_integers():
    """The policy reads only integers (ns and clock ticks), never a float: no float in the
    online path, the step's timing included."""
    assert isinstance(threads._run_queue_wait_ns(), int)
    ticks = threads._cpu_ticks()
    assert all(isinstance(t, int) for t in ticks) and ticks[0] >= ticks[1] >= 0
    assert isinstance(threads._others_running(), int)


def test_map_tiles_runs_every_job_once_and_reraises():
    done = []
    threads.map_tiles(done.append, range(17), workers=2)
    assert sorted(done) == list(range(17))

    def bad(job):
        if job == 5:
            raise ArithmeticError("tile 5")
    with pytest.raises(ArithmeticError, match="tile 5"):
        threads.map_tiles(bad, range(9), workers=2)


def test_map_tiles_leaves_the_callers_thread_count_alone():
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    threads.map_tiles(lambda _: None, range(4), workers=2)
    assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS


def test_tiles_on_threads_are_the_bytes_of_tiles_in_turn():
    """The SR pass's tiles on two threads (each kernel on one) against the same tiles one after
    another on the caller's threads, and the MAC count of both."""
    from PIL import Image

    from intsr.kernels.resample import bicubic_upsample_u8
    lr = np.asarray(Image.open(DATA / "butterfly.png").convert("RGB"))[::8, ::8][:24, :28]
    up = bicubic_upsample_u8(np.ascontiguousarray(lr), 4)
    net = IntNet(weights_to_int(load_model()[0]))
    tile = 40
    parallel = net.predict(up, tile=tile)
    macs = net.macs
    h, w, _ = up.shape
    serial = np.empty_like(parallel)
    net.macs = 0
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            y0, x0 = max(0, y - HALO), max(0, x - HALO)
            part = net.predict(np.ascontiguousarray(up[y0:y + tile + HALO, x0:x + tile + HALO]))
            serial[y:y + tile, x:x + tile] = part[y - y0:y - y0 + tile, x - x0:x - x0 + tile]
    np.testing.assert_array_equal(parallel, serial)
    assert macs == net.macs


def _run(args, env=None):
    """The real console entry in a fresh interpreter: --threads sets a process-wide policy."""
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,
                          text=True, cwd=ROOT, env=None if env is None else {**os.environ, **env})


@pytest.mark.parametrize("cmd", [["adapt", "--example"], ["sr", "a.png"], ["info", "w.npz"],
                                 ["eval", "d", "--kernel", "k.npy"], ["cost"]])
def test_every_command_takes_threads_and_refuses_a_bad_count(cmd, tmp_path):
    out = tmp_path / "o.png"
    r = _run([*cmd, str(out), "--threads", "0"])
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "Error: --threads: threads must be a count >= 1 or auto, not '0'"]
    assert not out.exists()


def test_json_reports_the_threads(tmp_path):
    out, rep = tmp_path / "o.png", tmp_path / "r.json"
    r = _run(["adapt", "--example", str(out), "--steps", "2", "--quiet", "--threads", "1",
              "--json", str(rep)])
    assert r.returncode == 0, r.stderr
    assert json.loads(rep.read_text())["threads"] == {
        "policy": "fixed", "max": 1, "sensing": False, "sr_tile_workers": 1,
        "steps_by_threads": {"1": 2}, "steps_with_side_thread": 0, "steps_pinned": 0}


def test_a_bad_intsr_threads_is_a_warning_then_auto():
    w = str(WEIGHTS / "pretrained_real.npz")
    r = _run(["info", w], env={"INTSR_THREADS": "lots"})
    assert r.returncode == 0, r.stderr
    assert "INTSR_THREADS" in r.stderr and "using auto" in r.stderr
    assert "threads: auto, up to" in r.stdout
    r = _run(["info", w], env={"INTSR_THREADS": "1"})
    assert "threads: fixed at 1" in r.stdout
