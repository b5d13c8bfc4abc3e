"""Run plumbing shared by the stages: threads, DDP, checkpoints, progress lines, and the one
training loop (``train_loop``) that pretrain and meta both run."""
import math
import os
import signal
import sys
import time

import numpy as np
import torch
import torch.distributed as dist

from intsr.io import atomic_write


def setup(threads):
    """``threads`` for torch and for the integer engine's kernels that some stages call (the
    blind son's estimator): Numba's OpenMP threads spin beside torch's otherwise, and with
    another job on the other core a blind meta step took 43 s instead of 5 (session 14)."""
    torch.set_num_threads(threads)
    import numba

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def teardown():
    """End of a stage. Under torchrun the process ends here: rank 0 may still be writing the
    checkpoint (hence the barrier), and torch 2.13's gloo threads can abort the interpreter's
    normal exit ("terminate called without an active exception", seen in ~1 of 6 two-process
    runs), which torchrun reports as a failure of a run that finished; os._exit skips the
    C++ destructors once everything is flushed and the group is down."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def agreed(flag):
    """Any rank wants to stop -> all stop at the same step (else DDP would hang in allreduce)."""
    if not dist.is_initialized():
        return bool(flag)
    t = torch.tensor([int(bool(flag))])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def step_rng(seed, rank, step):
    """The data of a step is a pure function of (seed, rank, step): resuming needs no RNG state
    for data, and a resumed run sees exactly the batches an uninterrupted one would."""
    return np.random.default_rng([seed, rank, step])


def cosine_lr(base, step, total, final_frac=0.01):
    t = min(step, total) / max(total, 1)
    return base * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def save_atomic(obj, path):
    """``torch.save(obj)`` to ``path`` through ``intsr.io.atomic_write``: the new file is written
    completely (temporary file in the same folder) before anything moves; then the current
    ``path``, if any, becomes ``path.prev`` and the new file takes its name."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(f):
        torch.save(obj, f)
        f.flush()
        if os.path.exists(path):  # only once the new one is complete
            os.replace(path, path + ".prev")

    atomic_write(path, write)


def load_checkpoint(path):
    """Latest checkpoint, falling back to the previous one if the latest is unreadable."""
    for p in (path, path + ".prev"):
        if os.path.exists(p):
            try:
                return torch.load(p, map_location="cpu", weights_only=False)
            except Exception as e:  # noqa: BLE001 - a half-written file must not end the run
                print(f"warning: cannot read {p}: {e}", file=sys.stderr)
    return None


def build_and_resume(args, lr, rank):
    """The seeded network (from --init on a fresh run), channels_last (about 1.5x faster steps
    with oneDNN on this CPU), its Adam optimiser, and the state of --ckpt if it exists.
    Returns (model, opt, step, wall seconds, history)."""
    from training.net import SRNet
    torch.manual_seed(args.seed)
    model = SRNet()
    if args.init and not os.path.exists(args.ckpt):
        load_init_weights(model, args.init)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    step, wall, history = 0, 0.0, []
    ck = load_checkpoint(args.ckpt)
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        torch.set_rng_state(ck["torch_rng"])
        step, wall, history = ck["step"], ck["wall"], ck.get("history", [])
        if rank == 0:
            print(f"resumed {args.ckpt} at step {step} ({wall / 60:.1f} min so far)", flush=True)
    return model, opt, step, wall, history


def load_init_weights(model, path):
    """Initial weights from a stage checkpoint, a state_dict .pt or an .npz (conv1..conv8 OIHW)."""
    if path.endswith(".npz"):
        z = np.load(path)
        sd = {f"convs.{i}.weight": torch.from_numpy(z[f"conv{i + 1}"].astype(np.float32))
              for i in range(len(model.convs))}
    else:
        obj = torch.load(path, map_location="cpu", weights_only=False)
        sd = obj["model"] if isinstance(obj, dict) and "model" in obj else obj
    model.load_state_dict(sd)


class StopFlag:
    """SIGTERM/SIGINT, or this invocation's step/time allowance used up -> finish the current
    step, checkpoint, exit. The schedule (cosine, total steps) is unaffected, so a run cut into
    chunks trains exactly like an uninterrupted one."""

    def __init__(self, args=None):
        self._stop = False
        self.max_steps = getattr(args, "stop_after", 0) or 0
        self.max_sec = 60.0 * (getattr(args, "max_minutes", 0.0) or 0.0)
        self.t0 = time.time()
        self.steps = 0
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, self._handle)

    def _handle(self, *_):
        self._stop = True

    def tick(self):
        self.steps += 1

    @property
    def stop(self):
        if self.max_steps and self.steps >= self.max_steps:
            return True
        if self.max_sec and time.time() - self.t0 >= self.max_sec:
            return True
        return self._stop


class Progress:
    def __init__(self, total, start_step, every, rank=0, label=""):
        self.total, self.every, self.rank, self.label = total, every, rank, label
        self.t0 = time.time()
        self.s0 = start_step
        self.acc = []

    def update(self, step, loss, **extra):
        self.acc.append(loss)
        if self.rank != 0 or (step % self.every and step != self.total):
            return
        dt = time.time() - self.t0
        done = step - self.s0
        rate = done / dt if dt > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        ex = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in extra.items())
        print(f"[{self.label}] step {step}/{self.total} loss {np.mean(self.acc):.5f} "
              f"{rate:.3f} steps/s ETA {eta / 60:.1f} min {ex} "
              f"{time.strftime('%H:%M:%S')}", flush=True)
        self.acc = []


def train_loop(args, model, opt, step, wall, history, *, rank, stage, label, base_lr, lr_name,
               batch_loss, ckpt_extra=None):
    """The training loop of the pretrain and meta stages, run to the end of the invocation.

    Per step t (from the resumed ``step`` up to ``args.steps``): the rate (``base_lr``, cosine
    decay with ``args.cosine``), ``loss, monitors = batch_loss(rng, logged)`` with
    ``rng = step_rng(args.seed, rank, t)`` (the only source of the step's data, so a resumed
    run sees exactly the batches an uninterrupted one would), then zero_grad / backward / step
    of ``opt``. ``logged`` is true on logging steps (every ``args.log_every`` steps and the last
    one), where ``batch_loss`` also measures its ``monitors`` (a dict of floats, e.g. meta's
    adaptation gain; ``{}`` for none): the history gets ``(t + 1, mean loss of the window,
    *monitors.values())`` and the progress line ``lr_name=rate`` plus the monitors.

    Checkpoints (rank 0, ``save_atomic`` to ``args.ckpt``) every ``args.ckpt_every`` seconds and
    at the end: stage, model, opt, torch RNG, step, wall seconds, history, ``ckpt_extra``, args.
    Ends with ``teardown()``: under torchrun the process exits there."""
    stop = StopFlag(args)
    prog = Progress(args.steps, step, args.log_every, rank, label)
    t_last_ck = t_seg = time.time()

    def checkpoint():
        if rank == 0:
            save_atomic({"stage": stage, "model": model.state_dict(), "opt": opt.state_dict(),
                         "torch_rng": torch.get_rng_state(), "step": step,
                         "wall": wall + time.time() - t_seg, "history": history,
                         **(ckpt_extra or {}), "args": vars(args)}, args.ckpt)

    window = []
    while step < args.steps and not agreed(stop.stop):
        lr = cosine_lr(base_lr, step, args.steps) if args.cosine else base_lr
        for g in opt.param_groups:
            g["lr"] = lr
        logged = (step + 1) % args.log_every == 0 or step + 1 == args.steps
        loss, monitors = batch_loss(step_rng(args.seed, rank, step), logged)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        stop.tick()
        window.append(loss.item())
        extra = {lr_name: lr}
        if logged:
            history.append((step, float(np.mean(window)), *monitors.values()))
            extra.update(monitors)
            window = []
        prog.update(step, loss.item(), **extra)
        if time.time() - t_last_ck > args.ckpt_every:
            checkpoint()
            t_last_ck = time.time()
    checkpoint()
    if rank == 0:
        print(f"saved {args.ckpt} at step {step}", flush=True)
    teardown()
