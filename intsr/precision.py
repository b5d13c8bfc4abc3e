"""Per-tensor bit widths: multi-precision on-device training (after Liu et al., "Super-resolution
model quantized in multi-precision", Electronics 2021, which gives more bits to the stages of
an SR network that are sensitive to quantization; here applied to the training step).

Families, per layer l = 1..8 (0-based in the tuples):
  act     the post-ReLU output of layers 1..7, stored for the backward pass: 8 or 16 bits
  grad    the activation gradient at the output of layers 1..7: 8 or 16 bits
  fwd     the forward weights derived from the masters (Eq. 15 -> b bits): 8 or 16 bits
  master  the master weights the SGD updates (Eq. 14-15): 16 or 32 bits
and, apart from training, the activations of the super-resolution pass that follows it:
  sr_act  the post-ReLU output of layers 1..7 in ``IntNet.predict``: 8 or 16 bits (None: the
          training widths ``act``); the SR pass stores nothing for a backward pass and is
          tiled, so it costs no Eq. 16 memory and no step time, only SR time
The image (uint8), the L1 sign (int8, exact) and the accumulators are not choices.
``INT8`` is the engine of the paper (Eq. 10-15: 8-bit activations, gradients and forward
weights, 32-bit masters), and IntNet with it computes exactly what it did before this module.

``allocate`` is the cost-constrained choice of widths: the Eq. 8 knapsack's idea over bits
instead of channels, solved exactly along the same Pareto-front dynamic programme.
"""
from dataclasses import dataclass, replace

from intsr.arch import NUM_LAYERS

GROUP_SIZES = (0, 4, 8, 16, 32)  # divide 64 channels into whole 4-byte steps of the tile
WIDTHS = {"act": (8, 16), "grad": (8, 16), "fwd": (8, 16), "master": (16, 32)}
LENGTH = {"act": NUM_LAYERS - 1, "grad": NUM_LAYERS - 1, "fwd": NUM_LAYERS,
          "master": NUM_LAYERS, "sr_act": NUM_LAYERS - 1}


@dataclass(frozen=True)
class Precision:
    act: tuple = (8,) * (NUM_LAYERS - 1)
    grad: tuple = (8,) * (NUM_LAYERS - 1)
    fwd: tuple = (8,) * NUM_LAYERS
    master: tuple = (32,) * NUM_LAYERS
    sr_act: tuple = None
    sr_groups: int = 0

    def __post_init__(self):
        if isinstance(self.sr_groups, bool) or self.sr_groups not in GROUP_SIZES:
            raise ValueError(f"sr_groups must be one of {list(GROUP_SIZES)}, "
                             f"not {self.sr_groups!r}")
        checks = list(WIDTHS.items())
        if self.sr_act is not None:
            checks.append(("sr_act", WIDTHS["act"]))
        for fam, allowed in checks:
            v = getattr(self, fam)
            n = LENGTH[fam]
            if not isinstance(v, tuple) or len(v) != n:
                raise ValueError(f"{fam}: {n} widths, one per layer, not {v!r}")
            if any(isinstance(b, bool) or b not in allowed for b in v):
                raise ValueError(f"{fam} widths must be {' or '.join(map(str, allowed))}, "
                                 f"not {list(v)}")

    @property
    def sr_widths(self):
        """Activation widths of the SR pass: ``sr_act``, else the training ones."""
        return self.act if self.sr_act is None else self.sr_act

    @classmethod
    def from_dict(cls, d):
        """From {"act": [...], "grad": [...], "fwd": [...], "master": [...]} (any omitted
        family keeps INT8's widths); ValueError on anything else."""
        if not isinstance(d, dict) or set(d) - set(WIDTHS) - {"sr_act", "sr_groups"}:
            raise ValueError(f"a precision is a dict of {', '.join(WIDTHS)} (and sr_act, "
                             "sr_groups)")
        d = dict(d)
        groups = d.pop("sr_groups", 0)
        try:
            return cls(**{k: tuple(int(b) for b in v) for k, v in d.items()}, sr_groups=groups)
        except TypeError:
            raise ValueError("precision widths must be lists of integers") from None

    def to_dict(self):
        d = {fam: list(getattr(self, fam)) for fam in WIDTHS}
        if self.sr_act is not None:
            d["sr_act"] = list(self.sr_act)
        if self.sr_groups:
            d["sr_groups"] = self.sr_groups
        return d

    def with_bits(self, family, layer, bits):
        """This precision with one tensor's width changed (0-based layer)."""
        v = list(getattr(self, family))
        v[layer] = bits
        return replace(self, **{family: tuple(v)})

    def changes(self, base=None):
        """[(family, layer, bits)] where this differs from ``base`` (INT8)."""
        base = base or INT8
        return [(fam, layer, b) for fam in WIDTHS for layer, (b, b0) in
                enumerate(zip(getattr(self, fam), getattr(base, fam), strict=True)) if b != b0]


INT8 = Precision()


def uniform(act=8, grad=8, fwd=8, master=32):
    return Precision((act,) * LENGTH["act"], (grad,) * LENGTH["grad"],
                     (fwd,) * LENGTH["fwd"], (master,) * LENGTH["master"])


def allocate(items, budget):
    """Exact 0/1 choice: ``items`` [(name, gain, cost)] with integer costs (may be negative:
    a change that saves memory), maximise the summed gain with the summed cost <= ``budget``.
    A cost and the budget may be tuples (several resources, e.g. memory and time: every one
    must fit). Returns (names chosen, gain, cost); among equal gains the cheapest (first
    resource first). Exact: a set is dropped only when another is no worse in gain and in
    every resource, and the same items then extend both alike."""
    one = not isinstance(budget, tuple)
    budget = (budget,) if one else budget
    front = [((0,) * len(budget), 0.0, ())]
    for name, gain, cost in items:
        cost = (cost,) if one else tuple(cost)
        cand = front + [(tuple(a + b for a, b in zip(c, cost, strict=True)), g + gain,
                         names + (name,)) for c, g, names in front]
        cand.sort(key=lambda e: (e[0], -e[1]))
        front = []
        for e in cand:  # keep e unless a kept entry (cheaper first resource) dominates it
            if not any(g >= e[1] and all(x <= y for x, y in zip(c, e[0], strict=True))
                       for c, g, _ in front):
                front.append(e)
    feasible = [e for e in front if all(x <= y for x, y in zip(e[0], budget, strict=True))]
    if not feasible:
        raise ValueError(f"no allocation fits the budget {budget if not one else budget[0]}")
    best = max(feasible, key=lambda e: (e[1], tuple(-x for x in e[0])))
    return list(best[2]), best[1], best[0][0] if one else best[0]
