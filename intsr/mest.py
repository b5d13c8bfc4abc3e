"""Memory-economic sparse training (MEST) of the gradient masks: the kept channels of Eq. 6
mutate online, at a fixed Eq. 9 cost.

The shipped masks are a static subset chosen offline (Eq. 8). Here, every ``every`` steps and in
every prunable layer (1..L-1) that keeps some but not all channels:
  drop   the ``drop`` kept channels with the smallest importance since the last mutation,
  regrow as many channels drawn uniformly from those not kept before the mutation.
Per-layer counts never change, so the Eq. 9 cost (a function of the counts) stays the budget's.

Importance of a kept channel: the sum over steps of sum_rows |weight gradient| of its column,
from the integer gradients the backward pass computes anyway (IntNet.backward's ``observe``),
added exactly in int64 at the finest exponent seen. Ties drop the lower channel index first.
Regrowth draws from PCG64 raw words seeded by (seed, mutation, layer): integers only,
the same on every thread count. A channel that regrows starts with zero importance and is
judged over the next ``every`` steps like the others (the counters reset at each mutation).
"""
import numpy as np

from intsr.arch import NUM_LAYERS


def _draw(seed, mutation, layer, pool, count):
    """``count`` distinct entries of ``pool`` (int array) by a Fisher-Yates shuffle on raw
    64-bit words (modulo bias below 2**-57 for pools of at most 64)."""
    rng = np.random.PCG64(np.random.SeedSequence([seed, mutation, layer]))
    words = rng.random_raw(count)
    pool = list(pool)
    out = []
    for i in range(count):
        j = i + int(words[i]) % (len(pool) - i)
        pool[i], pool[j] = pool[j], pool[i]
        out.append(pool[i])
    return out


class Mest:
    """Mask mutation on an IntNet trained by back-propagation. ``every``: steps between
    mutations; ``drop``: share of a layer's kept channels swapped at each mutation (at least
    one); ``seed``: the regrowth draws'."""

    def __init__(self, net, *, every=5, drop=0.125, seed=0):
        # <= 2**20 steps between resets keeps the int64 importance sums (each < 2**41) exact
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) \
                or not 1 <= every <= 1 << 20:
            raise ValueError(f"every must be an integer in 1..{1 << 20}, not {every}")
        if not 0 < drop <= 0.5:
            raise ValueError(f"drop must be in (0, 0.5], not {drop}")
        self.net, self.every, self.seed = net, int(every), int(seed)
        # swap counts fixed once, at the boundary (drop is a user's float)
        self.swap = [max(1, int(k.size * drop)) for k in net.kept]
        self.t, self.mutations = 0, 0
        self._reset()

    def _reset(self):
        self.importance = [np.zeros(k.size, np.int64) for k in self.net.kept]
        self.exp = [None] * NUM_LAYERS

    def observe(self, layer, gq):
        """IntNet.backward's hook: add |gradient| per kept channel of ``layer``."""
        col = np.abs(gq.value.astype(np.int64)).sum(axis=0)  # |v| < 2**31, <= 576 rows
        e, old = gq.exp, self.exp[layer]
        # One exponent per layer, the coarser of the two: the finer sum is floored to it (its
        # lost bits are below the other's last). Sums of < 2**41 over
        # `every` <= 2**20 steps stay below 2**62.
        if old is not None and e > old:
            self.importance[layer] >>= np.int64(min(e - old, 63))
        elif old is not None and e < old:
            col >>= np.int64(min(old - e, 63))
            e = old
        self.importance[layer] += col
        self.exp[layer] = e

    def lr_divisor(self):
        return 1

    def step(self, inp, target, lr_mult, lr_shift):
        """One back-propagation step (IntNet.step), then a mutation every ``every`` steps."""
        out = self.net.step(inp, target, lr_mult, lr_shift, observe=self.observe)
        self.t += 1
        if self.t % self.every == 0:
            self.mutate()
        return out

    def mutate(self):
        """Swap channels in every layer that can (see the module docstring)."""
        net = self.net
        for layer in range(NUM_LAYERS - 1):
            kept, c_out = net.kept[layer], net.w8[layer].shape[3]
            if kept.size == 0 or kept.size == c_out:
                continue
            n = min(self.swap[layer], kept.size, c_out - kept.size)
            order = np.lexsort((kept, self.importance[layer]))  # by importance, then index
            dropped = kept[order[:n]]
            free = np.setdiff1d(np.arange(c_out), kept)
            grown = _draw(self.seed, self.mutations, layer, free, n)
            new = np.union1d(np.setdiff1d(kept, dropped), grown).astype(np.int64)
            net.kept[layer] = new
        self.mutations += 1
        self._reset()
