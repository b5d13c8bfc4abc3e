"""Cost-constrained gradient pruning (paper Section IV-B, Eq. 6-9), pure NumPy.

Conventions (layer l = 1..L, L = NUM_LAYERS; layer l maps CHANNELS[l-1] -> CHANNELS[l]):

* Importance (Eq. 7). ``norms[l]`` (shape ``[c_out^(l)]``) holds, per output filter of layer l, the
  L2 norm of the weight gradient accumulated over the D_gp tasks. It is L2-normalised along the
  filter axis (``hat I = norms / ||norms||_2``), sorted in descending order, and
  ``I_(s) = sum_{j<=s} hat I_(j)`` (cumulative).
* Value of keeping ``c`` filters in layer l. Default (``objective="kept"``): ``I_(c)``, the kept
  share of the normalised gradient, so that Eq. 8 maximises "the sum of the total gradient" as
  the paper's text says. ``objective="eq8"`` reads the printed Eq. 8 literally,
  ``sum_{s=1}^{c} I_(s)``, which sums the already cumulative Eq. 7 a second time and favours
  all-or-nothing layers; with the engine's Eq. 9 backward (activation gradients carried over
  kept channels only) its masks starve the early layers: Set5 x4, 10 int8 steps, 29.54 / 28.65
  dB at 50 / 85 % against 29.80 / 29.42 for "kept" (docs/results.md).
* Cost (Eq. 9): ``R(cbar^(l-1), c^(l)) = c^(l) * cbar^(l-1) + c^(l) * c_out^(l-1)`` where cbar is
  the kept count of the previous layer, ``c_out^(l-1)`` its full width (``c_out^(0)`` = image
  channels) and ``cbar^(0) = cbar^(1)``. The budget sums l = 1..L-1 as in Eq. 8; the last layer is
  never pruned.
* Pruning ratio rho: the fraction of the Eq. 9 cost removed relative to no pruning,
  ``rho = 1 - sum_l R(c) / sum_l R(c_full)``. A requested ratio rho sets
  ``tau = (1 - rho) * sum_l R(c_full)``; the solution's own ratio is >= rho.

Eq. 8 is solved exactly by dynamic programming along the layer chain: for every choice of
c^(l), keep the Pareto front of (cost, value) over choices of c^(1..l-1). The cost of layer l only
couples c^(l-1) and c^(l), so fronts compose exactly.
"""
import numpy as np

from intsr.arch import CHANNELS

STEP = 8
# The pruning ratios shipped masks exist for (weights/masks.npz), nothing pruned first.
RATIOS = (0.0, 0.27, 0.5, 0.67, 0.85)


def candidates(c_out):
    """C^(l) = {8, ..., 8 * floor(c_out / 8)}."""
    return tuple(range(STEP, STEP * (c_out // STEP) + 1, STEP))


def cumulative_importance(norms):
    """Eq. 7 for one layer: (I, order) with I[s-1] = I_(s) and ``order`` the filter indices by
    decreasing importance (ties broken by lower index, so masks are deterministic)."""
    n = np.asarray(norms, np.float64)
    if n.ndim != 1 or n.size == 0:
        raise ValueError("importance norms must be a non-empty 1-D array per layer")
    if not np.all(np.isfinite(n)) or np.any(n < 0):
        raise ValueError("importance norms must be finite and non-negative")
    total = np.sqrt(np.sum(n * n))
    hat = n / total if total > 0 else np.full_like(n, 1.0 / np.sqrt(n.size))
    order = np.argsort(-hat, kind="stable")
    return np.cumsum(hat[order]), order


def layer_values(norms, choices, objective="eq8"):
    """Value of each candidate count for one layer (see module docstring)."""
    cum, _ = cumulative_importance(norms)
    if objective == "eq8":
        acc = np.cumsum(cum)
        return np.array([acc[c - 1] for c in choices])
    if objective == "kept":
        return np.array([cum[c - 1] for c in choices])
    raise ValueError(f"unknown objective {objective!r}")


def layer_cost(c_prev_kept, c, c_out_prev):
    """Eq. 9."""
    return c * c_prev_kept + c * c_out_prev


def chain_cost(counts, c_out_prev):
    """sum_{l=1}^{n} R(cbar^(l-1), c^(l)) with cbar^(0) = cbar^(1)."""
    total = 0
    prev = counts[0]
    for c, cin in zip(counts, c_out_prev, strict=True):
        total += layer_cost(prev, c, cin)
        prev = c
    return total


def solve(values, choices, c_out_prev, tau):
    """Exact Eq. 8: maximise sum_l values[l][i_l] s.t. chain_cost <= tau.

    ``values[layer]``/``choices[layer]``: per-layer arrays over the candidate counts;
    ``c_out_prev[layer]``: full width of the layer feeding that layer. Returns (counts, value,
    cost); among optimal solutions the cheapest is returned. Raises ValueError when no choice
    fits the budget."""
    n = len(choices)
    if not (len(values) == len(c_out_prev) == n) or n == 0:
        raise ValueError("values, choices and c_out_prev must have the same non-zero length")
    # fronts[j]: list of (cost, value, path) non-dominated, for c^(l) = choices[l][j]
    fronts = []
    for j, c in enumerate(choices[0]):
        cost = layer_cost(c, c, c_out_prev[0])
        fronts.append([(cost, float(values[0][j]), (c,))] if cost <= tau else [])
    for layer in range(1, n):
        new = []
        for j, c in enumerate(choices[layer]):
            cand = []
            for i, cp in enumerate(choices[layer - 1]):
                add = layer_cost(cp, c, c_out_prev[layer])
                v = float(values[layer][j])
                cand.extend((cost + add, val + v, path + (c,))
                            for cost, val, path in fronts[i] if cost + add <= tau)
            new.append(_pareto(cand))
        fronts = new
    best = _pareto([e for f in fronts for e in f])
    if not best:
        raise ValueError(f"budget tau={tau} is below the cheapest configuration")
    cost, val, path = best[-1]
    return list(path), val, cost


def _pareto(entries):
    """Keep entries whose value strictly exceeds every cheaper entry's value."""
    entries = sorted(entries, key=lambda e: (e[0], -e[1]))
    out = []
    for e in entries:
        if not out or e[1] > out[-1][1]:
            out.append(e)
    return out


def full_cost(channels=CHANNELS):
    n = len(channels) - 2
    return chain_cost(list(channels[1:n + 1]), list(channels[0:n]))


def pruning_ratio(counts, channels=CHANNELS):
    """Fraction of the Eq. 9 cost removed by keeping ``counts`` (layers 1..L-1)."""
    n = len(channels) - 2
    return 1.0 - chain_cost(list(counts), list(channels[0:n])) / full_cost(channels)


def masks_for_ratio(norms, ratio, channels=CHANNELS, objective="kept"):
    """Gradient masks m^(l) (Eq. 6) for one pruning ratio.

    ``norms``: one array per layer (all L layers; the last is only checked). Returns
    (masks, counts, tau): masks is a list of L bool arrays of shape [c_out^(l)], True = the
    filter's gradient is computed and applied; layer L is all True."""
    L = len(channels) - 1
    if len(norms) != L:
        raise ValueError(f"expected importance norms for {L} layers, got {len(norms)}")
    for layer, n in enumerate(norms):
        if np.shape(n) != (channels[layer + 1],):
            raise ValueError(f"layer {layer + 1}: importance shape {np.shape(n)}, "
                             f"expected ({channels[layer + 1]},)")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"pruning ratio must be in [0, 1), got {ratio}")
    n = L - 1
    choices = [candidates(channels[layer + 1]) for layer in range(n)]
    values = [layer_values(norms[layer], choices[layer], objective) for layer in range(n)]
    tau = (1.0 - ratio) * full_cost(channels)
    counts, _, _ = solve(values, choices, list(channels[0:n]), tau)
    masks = []
    for layer in range(n):
        _, order = cumulative_importance(norms[layer])
        m = np.zeros(channels[layer + 1], bool)
        m[order[:counts[layer]]] = True
        masks.append(m)
    masks.append(np.ones(channels[L], bool))
    return masks, counts, tau



def layerwise_masks(n_front, channels=CHANNELS):
    """The layer-wise baseline of Table 6: the first ``n_front`` layers are frozen (no gradient
    computed, and none propagates below them), the rest train fully. Returns L bool masks."""
    L = len(channels) - 1
    if not 0 <= n_front < L:
        raise ValueError(f"can freeze 0..{L - 1} front layers, not {n_front}")
    return [np.full(channels[layer + 1], layer >= n_front) for layer in range(L)]
