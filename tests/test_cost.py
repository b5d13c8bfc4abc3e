"""Eq. 16-17 and the counted MACs of one step."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from intsr import cost
from intsr.arch import CHANNELS, layer_shapes
from intsr.floatpath.convert import lr_to_fixed, weights_to_int
from intsr.model import IntNet


@pytest.mark.parametrize("bits,paper", [((32, 32), 19371), ((8, 8), 4840), ((8, 32), 5517)])
def test_eq16_reproduces_table5(bits, paper):
    """Eq. 16 with k^2 on the weight and im2col-input terms, h = w = 32, all 8 layers, KB = 1000
    bytes: Table 5 within 0.1% (19,371.52 / 4,842.88 / 5,516.80 KB)."""
    kb = cost.memory_kb(32, *bits)
    assert abs(kb - paper) / paper < 1e-3
    assert cost.memory_kb(32, 32, 32) / cost.memory_kb(32, 8, 32) == pytest.approx(3.51, 1e-3)


def test_eq16_printed_reading_differs():
    """Eq. 16 exactly as printed (no k^2) gives far less than Table 5: the ambiguity we
    document."""
    assert cost.memory_kb(32, 32, 32, reading="printed") < 0.5 * 19371


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 8), min_size=7, max_size=7))
def test_eq16_eq17_fall_with_pruning(eighths):
    """Pruning (fewer kept filters, Eq. 6) never raises Eq. 16 memory or Eq. 17 cost."""
    masks = [8 * e for e in eighths] + [3]
    full = (cost.memory_kb(), sum(cost.cost()))
    assert cost.memory_kb(masks=masks) <= full[0]
    assert sum(cost.cost(masks=masks)) <= full[1]


def test_counted_macs_of_one_step_equal_the_analytic_count():
    """The MACs the kernels launch in one step (forward, masked weight and activation
    gradients) equal cost.step_macs for the same masks, exactly."""
    rng = np.random.default_rng(0)
    weights = weights_to_int([rng.normal(0, 0.05, s) for s in layer_shapes()])
    inp = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    tgt = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    for masks in [None,
                  [rng.random(c) < 0.5 for c in CHANNELS[1:-1]] + [np.ones(3, bool)],
                  [np.zeros(c, bool) for c in CHANNELS[1:4]] +
                  [np.ones(c, bool) for c in CHANNELS[4:]]]:
        net = IntNet(weights, masks)
        net.step(inp, tgt, *lr_to_fixed(0.01, tgt.size))
        assert net.macs == cost.step_macs(12, 10, masks)
    assert cost.step_macs(12, 10) == 3 * 12 * 10 * 9 * sum(
        a * b for a, b in zip(CHANNELS[:-1], CHANNELS[1:], strict=True)) - 12 * 10 * 9 * 3 * 64
