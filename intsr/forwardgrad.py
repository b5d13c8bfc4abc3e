"""Forward gradients on integers: SGD without a backward pass ("Stepping Forward on the Last
Mile", on this engine).

One step, for directions k = 1..n, each a Rademacher vector u_k (+-1 per perturbed weight):

    L+_k = loss(w8 + u_k),  L-_k = loss(w8 - u_k)        (int8 forward weights, one LSB)
    d_k  = (L+_k - L-_k) / 2                              ("central"; "one-sided": L+_k - L0)
    g_l  = sum_k d_k u_k / eps_l,  eps_l = 2**(s_l - 7)   (one int8 LSB of layer l, real units)

g_l is an unbiased estimate of the layer's gradient (E[u u^T] = I, the 1/eps_l undoes the
per-layer perturbation size); the 1/n of the average is folded into the learning rate
(lr_fixed). g_l goes through the same path as a back-propagated gradient: Eq. 11 + Eq. 14 to a
32-bit QTensor (model._weight_grad), then the Eq. 15 update of the int32 masters.

Integers only: the losses are exact integer sums with a power-of-two exponent (IntNet.loss,
tile by tile, nothing stored between layers), their differences are Python ints, rounded half
up to 31 bits before they multiply the int8 directions in int64. The directions come from PCG64
raw 64-bit words (integer only), seeded by (seed, step, direction, layer), so they are
regenerated for the update instead of stored: one direction of one layer is alive at a time.

Saturation: a perturbed weight is clipped to [-128, 127]; the weight at +-127/128 that Eq. 11
puts at the top of the range moves by one LSB on one side only (its estimate is halved).
"""
import numpy as np

from intsr.arch import NUM_LAYERS
from intsr.model import _weight_grad
from intsr.quant import QTensor, ceil_log2

ESTIMATES = ("central", "one-sided")
TILE = 128  # output pixels per tile side of a loss pass: bounds a step's memory at any size


def parse_layers(spec):
    """``"8"``, ``"6-8"``, ``"1,4,8"`` or ``"all"`` -> sorted 0-based layer indices."""
    spec = str(spec).strip().lower()
    if spec == "all":
        return list(range(NUM_LAYERS))
    out = set()
    for part in spec.split(","):
        a, _, b = part.strip().partition("-")
        if not (a.isdigit() and (not b or b.isdigit())):
            raise ValueError(f"layers must look like 8, 6-8, 1,4,8 or all, not {spec!r}")
        lo, hi = int(a), int(b or a)
        if not 1 <= lo <= hi <= NUM_LAYERS:
            raise ValueError(f"layers are numbered 1..{NUM_LAYERS}, not {part.strip()!r}")
        out.update(range(lo - 1, hi))
    return sorted(out)


def direction(seed, step, k, layer, shape):
    """Rademacher int8 (+-1) array of ``shape`` from PCG64's raw words: bit i of the stream
    is +1 when set. The same arguments give the same bits on every machine and thread count."""
    n = int(np.prod(shape))
    rng = np.random.PCG64(np.random.SeedSequence([seed, step, k, layer]))
    bits = np.unpackbits(rng.random_raw((n + 63) // 64).view(np.uint8), bitorder="little")[:n]
    return (bits.astype(np.int8) * 2 - 1).reshape(shape)


class ForwardGradient:
    """Forward-gradient SGD on an IntNet. ``layers``: 0-based layers to perturb (their kept
    output channels, Eq. 6 masks; None: all, what the meta-learned start needs, measured in
    docs/learners.md); ``directions``: n per step; ``estimate``: "central" (2n loss
    passes) or "one-sided" (n + 1); ``tile``: loss-pass tile side; ``seed``: the directions'."""

    def __init__(self, net, *, layers=None, directions=4, estimate="central", tile=TILE,
                 seed=0):
        if estimate not in ESTIMATES:
            raise ValueError(f"estimate must be one of {ESTIMATES}, not {estimate!r}")
        if isinstance(directions, bool) or not isinstance(directions, (int, np.integer)) \
                or not 1 <= directions <= 4096:
            raise ValueError(f"directions must be an integer in 1..4096, not {directions}")
        if net.mode != "ours":
            raise ValueError("forward gradients update 32-bit masters (mode 'ours')")
        if any(b != 8 for b in net.prec.fwd):
            raise ValueError("forward gradients perturb int8 forward weights: choose a "
                             "precision with 8-bit forward weights")
        self.net, self.n, self.estimate, self.tile = net, int(directions), estimate, tile
        layers = range(NUM_LAYERS) if layers is None else layers
        self.layers = [layer for layer in sorted(set(layers)) if net.kept[layer].size]
        if not self.layers:
            raise ValueError("no perturbed layer keeps a channel: nothing to train")
        self.seed, self.t = int(seed), 0

    def lr_divisor(self):
        """The learning rate is divided by n (the average over directions), at the boundary."""
        return self.n

    def passes(self):
        """Loss passes (forward passes over the pair) per step."""
        return 2 * self.n if self.estimate == "central" else self.n + 1

    def _dir(self, k, layer):
        w = self.net.w8[layer]
        return direction(self.seed, self.t, k, layer, (w.shape[0] * w.shape[1] * w.shape[2],
                                                       self.net.kept[layer].size))

    def _perturbed(self, k, sign):
        w8 = list(self.net.w8)
        for layer in self.layers:
            flat = w8[layer].value.reshape(-1, w8[layer].shape[3])
            cols = self.net.kept[layer]
            p = flat.astype(np.int16)
            p[:, cols] += sign * self._dir(k, layer)
            w8[layer] = QTensor(np.clip(p, -128, 127).astype(np.int8).reshape(w8[layer].shape),
                                w8[layer].scale)
        return w8

    def step(self, inp, target, lr_mult, lr_shift):
        """One forward-gradient step on (inp -> target); returns (loss_num, loss_exp) of the
        unperturbed weights for "one-sided", of the mean of the first pair for "central"."""
        net = self.net
        base = None if self.estimate == "central" else net.loss(inp, target, tile=self.tile)
        pairs = []
        for k in range(self.n):
            plus = net.loss(inp, target, self._perturbed(k, 1), self.tile)
            minus = net.loss(inp, target, self._perturbed(k, -1), self.tile) \
                if base is None else base
            pairs.append((plus, minus))
        e = min(min(p[1], m[1]) for p, m in pairs)
        diffs = [(p[0] << (p[1] - e)) - (m[0] << (m[1] - e)) for p, m in pairs]
        # Round the differences half up to 31 bits so that sum_k D_k u_k is exact in int64
        # (|D_k| < 2**31, n <= 4096: |sum| < 2**43).
        r = max(0, max(abs(d) for d in diffs).bit_length() - 31)
        if r:
            diffs = [(d + (1 << (r - 1))) >> r for d in diffs]
        # Real d_k = D_k * 2**(e + r) / (2 if central) * 2**-ceil(log2 N), the mean-L1 folding
        # of IntNet.loss_grad (lr_to_fixed holds the rest of 1/N).
        exp = e + r - ceil_log2(target.size) - (1 if self.estimate == "central" else 0)
        for layer in self.layers:
            wq = net.w8[layer]
            acc = np.zeros((int(np.prod(wq.shape[:3])), net.kept[layer].size), np.int64)
            for k, d in enumerate(diffs):
                if d:
                    acc += np.int64(d) * self._dir(k, layer)
            # divided by eps_l = 2**(s_l - 7): the exponent of g_l
            gq = _weight_grad(acc, exp - (wq.scale - 7), net._master_bits(layer), net.nearest)
            net._update_layer(layer, gq, lr_mult, lr_shift)
        net._derive_forward_weights()
        self.t += 1
        if base is not None:
            return base
        p, m = pairs[0]
        return (p[0] << (p[1] - e)) + (m[0] << (m[1] - e)), e - 1
