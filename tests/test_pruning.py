"""Gradient pruning (paper Section IV-B): Eq. 7 importance, Eq. 9 cost, exact Eq. 8 solver."""
import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from intsr import pruning
from intsr.arch import CHANNELS


def test_eq7_cumulative_importance():
    """Eq. 7: I_(s)^(l) = sum_{j=1}^{s} hat I_(j)^(l), where hat I^(l) in R^{c_out} is the
    L2-normalized gradients along the filter axis, sorted in the descending order."""
    norms = np.array([3.0, 0.0, 4.0])
    cum, order = pruning.cumulative_importance(norms)
    np.testing.assert_allclose(cum, [0.8, 1.4, 1.4])
    assert list(order) == [2, 0, 1]


def test_eq9_cost_and_first_layer_convention():
    """Eq. 9: R(cbar^(l-1), c^(l)) = c^(l) cbar^(l-1) + c^(l) c_out^(l-1), cbar^(0) = cbar^(1)."""
    assert pruning.layer_cost(16, 8, 64) == 8 * 16 + 8 * 64
    # layer 1: 3 input channels, cbar^(0) = cbar^(1) = 24; layer 2: 40 after 24 kept
    assert pruning.chain_cost([24, 40], [3, 64]) == (24 * 24 + 24 * 3) + (40 * 24 + 40 * 64)
    assert pruning.full_cost() == 64 * 64 + 64 * 3 + 6 * (64 * 64 + 64 * 64)


def _brute(values, choices, cin, tau):
    best = None
    for idx in itertools.product(*[range(len(c)) for c in choices]):
        counts = [choices[layer][i] for layer, i in enumerate(idx)]
        if pruning.chain_cost(counts, cin) <= tau:
            v = sum(values[layer][i] for layer, i in enumerate(idx))
            best = v if best is None else max(best, v)
    return best


@st.composite
def instances(draw):
    n = draw(st.integers(1, 4))
    choices, values = [], []
    for _ in range(n):
        k = draw(st.integers(1, 4))
        cs = sorted(draw(st.lists(st.integers(1, 12), min_size=k, max_size=k, unique=True)))
        choices.append(tuple(cs))
        values.append(draw(st.lists(st.floats(0, 10, allow_nan=False), min_size=k,
                                    max_size=k)))
    cin = draw(st.lists(st.integers(1, 12), min_size=n, max_size=n))
    tau = draw(st.integers(0, 600))
    return values, choices, cin, tau


@settings(max_examples=300, deadline=None)
@given(instances())
def test_eq8_solver_matches_brute_force(inst):
    """Eq. 8: max_{c^(1..L-1)} sum_l sum_{s=1}^{c^(l)} I_(s)^(l)
    s.t. sum_{l=1}^{L-1} R(c^(l-1), c^(l)) <= tau, c^(l) in C^(l).
    The solver sees per-choice values, so arbitrary values test the search itself."""
    values, choices, cin, tau = inst
    want = _brute(values, choices, cin, tau)
    if want is None:
        with pytest.raises(ValueError, match="budget"):
            pruning.solve(values, choices, cin, tau)
        return
    counts, got, cost = pruning.solve(values, choices, cin, tau)
    assert got == pytest.approx(want, abs=1e-9)
    assert cost == pruning.chain_cost(counts, cin) <= tau
    recomputed = sum(values[layer][choices[layer].index(c)] for layer, c in enumerate(counts))
    assert recomputed == pytest.approx(got, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["eq8", "kept"]))
def test_eq8_on_real_sized_layers_matches_brute_force(seed, objective):
    """The network's own shape (7 prunable layers of 64, C = {8..64}) is too big for brute force,
    so check 3-layer chains of 64-wide layers against enumeration of all 8^3 choices."""
    rng = np.random.default_rng(seed)
    ch = (3, 64, 64, 64, 3)
    norms = [rng.gamma(0.5, size=64) for _ in range(3)]
    choices = [pruning.candidates(64)] * 3
    values = [pruning.layer_values(n, c, objective) for n, c in zip(norms, choices, strict=True)]
    tau = rng.uniform(0.1, 1.0) * pruning.full_cost(ch)
    want = _brute(values, choices, [3, 64, 64], tau)
    assume(want is not None)  # a budget below the cheapest choice: covered by the test above
    _, got, _ = pruning.solve(values, choices, [3, 64, 64], tau)
    assert got == pytest.approx(want)


@pytest.mark.parametrize("ratio", pruning.RATIOS)
def test_masks_for_paper_ratios(ratio):
    """Eq. 6: m^(l) in {0,1}^{c_out}; top-c^(l) filters by importance kept, layer L never pruned."""
    rng = np.random.default_rng(7)
    norms = [rng.gamma(1.0, size=c) for c in CHANNELS[1:]]
    masks, counts, tau = pruning.masks_for_ratio(norms, ratio)
    assert len(masks) == len(CHANNELS) - 1
    assert masks[-1].all() and masks[-1].shape == (3,)
    assert all(c % 8 == 0 and 8 <= c <= 64 for c in counts)
    for layer, (m, c) in enumerate(zip(masks[:-1], counts, strict=True)):
        assert m.dtype == bool and m.sum() == c
        _, order = pruning.cumulative_importance(norms[layer])
        assert m[order[:c]].all()
    achieved = pruning.pruning_ratio(counts)
    assert achieved >= ratio - 1e-12
    assert pruning.chain_cost(counts, list(CHANNELS[:7])) <= tau
    if ratio == 0.0:
        assert counts == [64] * 7


def test_bad_inputs_are_refused():
    good = [np.ones(c) for c in CHANNELS[1:]]
    with pytest.raises(ValueError, match="layers"):
        pruning.masks_for_ratio(good[:-1], 0.5)
    with pytest.raises(ValueError, match="shape"):
        pruning.masks_for_ratio([np.ones(5)] + good[1:], 0.5)
    with pytest.raises(ValueError, match="finite"):
        pruning.masks_for_ratio([np.full(64, np.nan)] + good[1:], 0.5)
    with pytest.raises(ValueError, match="ratio"):
        pruning.masks_for_ratio(good, 1.0)


def test_layerwise_baseline_masks_freeze_the_front():
    """Table 6's layer-wise baseline: the first N layers keep nothing, the rest everything."""
    from intsr.pruning import layerwise_masks
    m = layerwise_masks(3)
    assert [int(x.sum()) for x in m] == [0, 0, 0, 64, 64, 64, 64, 3]
    assert pruning.pruning_ratio([int(x.sum()) for x in m[:-1]]) > 0
    with pytest.raises(ValueError):
        layerwise_masks(8)
