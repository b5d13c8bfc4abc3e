"""Per-tensor bit widths (intsr.precision): Eq. 10-15 at 16 bits, the 16-bit engine against the
float path, Eq. 16-17 with per-layer widths, the allocation knapsack, the shipped profiles."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from intsr import cost
from intsr.arch import KSIZE, layer_shapes
from intsr.floatpath.convert import lr_to_fixed, weights_to_int
from intsr.floatpath.network import FloatNet
from intsr.io import InputError
from intsr.model import GROUP_DEPTH, IntNet, requantize, requantize_grouped, requantize_padded
from intsr.online import Adapter
from intsr.precision import INT8, LENGTH, WIDTHS, Precision, allocate, uniform
from intsr.quant import ceil_log2
from intsr.weights import default_precision, precision_profiles, shipped_precision

from helpers import last_line_per_thread_count

LR = 0.01


def test_precision_refuses_what_it_cannot_run():
    for bad in ({"act": (8,) * 6}, {"grad": (8,) * 6 + (12,)}, {"master": (8,) * 8},
                {"fwd": (True,) * 8}, {"act": [8] * 7}):
        with pytest.raises(ValueError):
            Precision(**bad)
    for bad in ({"acts": [8] * 7}, [8], {"act": ["x"] * 7}):
        with pytest.raises(ValueError):
            Precision.from_dict(bad)
    assert Precision.from_dict({"master": [16] * 8}) == uniform(master=16)
    assert Precision.from_dict(uniform(16, 16, 16, 16).to_dict()) == uniform(16, 16, 16, 16)
    with pytest.raises(ValueError, match="mode 'ours'"):
        IntNet(weights_to_int([np.zeros(s) for s in layer_shapes()], "standard"),
               mode="standard", precision=uniform(act=16))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-(1 << 40), 1 << 40), min_size=1, max_size=40),
       st.integers(-40, 10), st.booleans())
def test_eq10_eq11_at_16_bits(values, exp, unsigned):
    """Eq. 11: s = ceil(log2 max|acc|) + exp; Eq. 10 at 16 bits: v = round(acc * 2**(15 - c))
    (2**(16 - c) unsigned), half up, saturated; so |v * 2**(s - frac) - acc * 2**exp| is at
    most half a step, but for the saturated top element."""
    acc = np.array(values, np.int64).reshape(1, -1)
    if unsigned:
        acc = np.abs(acc)
    q = requantize(acc, exp, None, 0, True, unsigned=unsigned, bits=16)
    c = ceil_log2(int(np.abs(acc).max()))
    frac = 16 if unsigned else 15
    assert q.scale == c + exp and q.value.dtype == (np.uint16 if unsigned else np.int16)
    from fractions import Fraction
    for a, v in zip(acc.ravel(), q.value.ravel(), strict=True):
        real = Fraction(int(a)) * Fraction(2) ** exp
        got = Fraction(int(v)) * Fraction(2) ** (q.scale - frac)
        step = Fraction(2) ** (q.scale - frac)
        top = int(v) in (np.iinfo(q.value.dtype).max, np.iinfo(q.value.dtype).min)
        assert abs(got - real) <= (step if top else step / 2)


def test_eq14_eq15_with_16_bit_masters():
    """Eq. 14 to 16 bits from the 32-bit masters (round half up of m / 2**16, same scale), the
    forward weights derived from them (Eq. 15 -> 8 bits: m16 / 2**8), and Eq. 15's scale growth
    when an update outgrows 16 bits."""
    rng = np.random.default_rng(0)
    w32 = weights_to_int([rng.normal(0, 0.05, s) for s in layer_shapes()])
    net = IntNet(w32, precision=uniform(master=16))
    for q32, q16, w8 in zip(w32, net.weights, net.w8, strict=True):
        assert q16.value.dtype == np.int16 and q16.scale == q32.scale
        want = np.clip((q32.value.astype(np.int64) + (1 << 15)) >> 16, -32768, 32767)
        np.testing.assert_array_equal(q16.value, want)
        np.testing.assert_array_equal(
            w8.value, np.clip((want + 128) >> 8, -128, 127).astype(np.int8))
    # an update that pushes a master past 2**15 - 1: the layer's scale grows by one
    from intsr.quant import QTensor
    layer = 7
    flat = net.weights[layer].value.reshape(-1, 3)
    flat[0, 0] = 32767
    g = QTensor(np.zeros((flat.shape[0], 3), np.int16), net.weights[layer].scale)
    g.value[0, 0] = -32768
    before = net.weights[layer].scale
    net._update_layer(layer, g, 1 << 15, 15)
    assert net.weights[layer].scale == before + 1
    assert int(np.abs(net.weights[layer].value.astype(np.int64)).max()) <= 32767


def _steps(precision, weights, pair, steps=10):
    inp, tgt = pair
    net = IntNet(weights_to_int(weights), precision=precision)
    for _ in range(steps):
        net.step(inp, tgt, *lr_to_fixed(LR, tgt.size))
    return [q.dequantize() - w for q, w in zip(net.weights, weights, strict=True)]


@pytest.mark.slow
def test_sixteen_bits_everywhere_follow_the_float_path_closer(shipped_weights, butterfly_pair):
    """Ten steps from the shipped start: the update with every tensor 16-bit is closer to the
    float path's update than int8's (cosine), and very close (>= 0.995)."""
    fnet = FloatNet(shipped_weights)
    inp, tgt = butterfly_pair
    for _ in range(10):
        fnet.step(inp / 255.0, tgt / 255.0, LR)
    df = np.concatenate([(a - w).ravel()
                         for a, w in zip(fnet.weights, shipped_weights, strict=True)])
    cos = {}
    for name, prec in (("int8", INT8), ("int16", uniform(16, 16, 16, 32))):
        di = np.concatenate([d.ravel() for d in _steps(prec, shipped_weights, butterfly_pair)])
        cos[name] = float(di @ df / np.linalg.norm(di) / np.linalg.norm(df))
    print(cos)
    assert cos["int16"] > cos["int8"] and cos["int16"] >= 0.995


def test_eq16_eq17_with_per_tensor_widths():
    """INT8 is Eq. 16-17 at b_F = 8, b_theta = 32 exactly; one wider tensor adds exactly its
    own term: activation of layer l (the k^2 h w c_in input term of layer l+1), gradient (h w
    c~_out), forward weights (k^2 c_in c_out (16 - 8)); 16-bit masters save k^2 c c 16."""
    k2, hw = KSIZE * KSIZE, 32 * 32
    assert cost.memory_bits(precision=INT8) == cost.memory_bits(32, 8, 32)
    assert cost.cost(precision=INT8) == cost.cost(32, 8)
    base = sum(cost.memory_bits(precision=INT8))
    shapes = layer_shapes()
    for fam in WIDTHS:
        for layer in range(LENGTH[fam]):
            b0 = getattr(INT8, fam)[layer]
            b1 = [b for b in WIDTHS[fam] if b != b0][0]
            d = sum(cost.memory_bits(precision=INT8.with_bits(fam, layer, b1))) - base
            _, _, ci, co = shapes[layer]
            want = {"act": k2 * hw * co * 8, "grad": hw * co * 8, "fwd": k2 * ci * co * 8,
                    "master": -k2 * ci * co * 16}[fam]
            assert d == want, (fam, layer)
    # step work: int8 is step_macs; every tensor 16-bit quadruples the 64 -> 64 products
    assert cost.step_work(20, 12, precision=INT8) == cost.step_macs(20, 12)
    all16 = cost.step_work(20, 12, precision=uniform(16, 16, 16, 32))
    assert 3 * cost.step_macs(20, 12) < all16 < 4 * cost.step_macs(20, 12)
    # Eq. 17 grows with a wider operand and never shrinks
    assert sum(cost.cost(precision=uniform(16, 16, 16))) > sum(cost.cost(precision=INT8))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 20), st.integers(-30, 60)), min_size=1, max_size=9),
       st.integers(-20, 80))
def test_allocation_is_the_exact_knapsack(items, budget):
    """allocate = brute force over every subset (negative costs included)."""
    items = [(i, float(g), c) for i, (g, c) in enumerate(items)]
    best = None
    for r in range(len(items) + 1):
        for sub in itertools.combinations(items, r):
            c = sum(x[2] for x in sub)
            g = sum(x[1] for x in sub)
            if c <= budget and (best is None or g > best[0] or g == best[0] and c < best[1]):
                best = (g, c)
    if best is None:
        with pytest.raises(ValueError):
            allocate(items, budget)
        return
    names, gain, c = allocate(items, budget)
    assert (gain, c) == best
    assert c == sum(items[n][2] for n in names) <= budget


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 20), st.integers(-30, 60), st.integers(0, 40)),
                min_size=1, max_size=8), st.integers(-10, 80), st.integers(0, 60))
def test_allocation_with_two_resources_is_exact(items, b1, b2):
    """Memory and time at once: the best gain over every subset that fits both."""
    items = [(i, float(g), (c1, c2)) for i, (g, c1, c2) in enumerate(items)]
    best = None
    for r in range(len(items) + 1):
        for sub in itertools.combinations(items, r):
            c = tuple(sum(x[2][k] for x in sub) for k in (0, 1))
            if c[0] <= b1 and c[1] <= b2:
                g = sum(x[1] for x in sub)
                best = g if best is None else max(best, g)
    if best is None:
        with pytest.raises(ValueError):
            allocate(items, (b1, b2))
        return
    names, gain, c = allocate(items, (b1, b2))
    assert gain == best and c[0] <= b1 and c[1] <= b2


def test_shipped_profiles_and_refusals():
    profiles = precision_profiles()
    assert {"int8", "mixed", "mixed-x2", "grouped-x2", "int16", "small"} <= set(profiles)
    # grouped-x2 trains as mixed-x2; only its SR pass differs
    g, m = profiles["grouped-x2"], profiles["mixed-x2"]
    assert (g.act, g.grad, g.fwd, g.master) == (m.act, m.grad, m.fwd, m.master)
    assert g.sr_widths == (8,) * 7 and g.sr_groups == 4
    assert profiles["int8"] == INT8 and shipped_precision(None) == INT8
    assert profiles["int16"] == uniform(16, 16, 16, 32)
    assert profiles["small"] == uniform(master=16)
    # mixed, mixed-x2: the documented budget, at most +20 % Eq. 16 memory (32 px, Table-5
    # reading) and +30 % step work; small: less memory than int8, the same work
    for name in ("mixed", "mixed-x2"):
        mixed = profiles[name]
        assert cost.memory_kb(precision=mixed) <= 1.2 * cost.memory_kb(precision=INT8)
        assert cost.step_work(32, 32, precision=mixed) <= 1.3 * cost.step_work(32, 32)
    small = profiles["small"]
    assert cost.memory_kb(precision=small) < cost.memory_kb(precision=INT8)
    assert cost.step_work(32, 32, precision=small) == cost.step_work(32, 32)
    with pytest.raises(InputError, match="no precision profile"):
        shipped_precision("int4")


@pytest.mark.slow
def test_each_scale_adapts_with_its_shipped_precision(butterfly_lr):
    """Without a precision a run takes its scale's from weights/default.json: grouped-x2 at x2
    (mixed-x2's training widths, allocated on the x2 weights, and an 8-bit SR pass with Eq. 11
    per channel group; docs/precision.md), int8 at x4 and at a scale nothing is
    shipped for; back-propagation only (forward gradients need 8-bit forward weights). A
    precision given wins."""
    from intsr.online import adapt

    from helpers import gaussian
    assert (default_precision(4), default_precision(2)) == ("int8", "grouped-x2")
    assert default_precision(3) == "int8" and default_precision(2, "forward") == "int8"
    x2 = precision_profiles()["grouped-x2"]
    assert x2 != INT8 and Adapter(scale=2).net.prec == x2 and x2.sr_groups
    assert Adapter(scale=2, precision="int8").net.prec == INT8
    assert Adapter(scale=2, method="forward").net.prec == INT8
    assert Adapter(scale=4).net.prec == INT8
    img, k = butterfly_lr[:24, :28], gaussian(1.2)
    run = {p: adapt(img, k, scale=2, steps=2, precision=p) for p in (None, "grouped-x2", "int8")}
    np.testing.assert_array_equal(run[None], run["grouped-x2"])
    assert not np.array_equal(run[None], run["int8"])


@pytest.mark.slow
def test_sr_act_widths_the_sr_pass_only(shipped_weights, butterfly_pair):
    """``sr_act``: the activation widths of the SR pass (None: the training ones). Training is
    untouched by it (same masters after two steps); the SR pass with 16-bit activations is
    the 16-bit forward pass and lands closer to the float network's output than with 8."""
    with pytest.raises(ValueError):
        Precision(sr_act=(8,) * 6)
    with pytest.raises(ValueError):
        Precision(sr_act=(12,) * 7)
    wide = Precision(sr_act=(16,) * 7)
    assert Precision.from_dict(wide.to_dict()) == wide and "sr_act" not in INT8.to_dict()
    assert INT8.sr_widths == INT8.act and wide.sr_widths == (16,) * 7
    inp, tgt = butterfly_pair
    nets = [IntNet(weights_to_int(shipped_weights), precision=p)
            for p in (INT8, Precision(sr_act=INT8.act), wide)]
    for net in nets:
        for _ in range(2):
            net.step(inp, tgt, *lr_to_fixed(LR, tgt.size))
    for net in nets[1:]:
        for a, b in zip(nets[0].weights, net.weights, strict=True):
            assert a.scale == b.scale and np.array_equal(a.value, b.value)
    same, explicit, sr16 = (net.predict(inp) for net in nets)
    np.testing.assert_array_equal(same, explicit)
    fnet = FloatNet([q.dequantize() for q in nets[0].weights])
    ref = np.clip(fnet.predict(inp / np.float32(255)) * 255, 0, 255)
    err = {k: float(np.abs(v.astype(np.float64) - ref).mean()) for k, v in
           (("8", same), ("16", sr16))}
    print(err)
    assert err["16"] < err["8"]


def test_sixteen_bit_masters_survive_a_saved_state(tmp_path, butterfly_lr):
    """A state holds int32: 16-bit masters widen exactly (v << 16) and come back the same."""
    from intsr.state import load_state, save_state

    from helpers import gaussian
    ad = Adapter(precision="small")
    ad.learn([ad.pair(butterfly_lr, gaussian(1.6))], 2)
    save_state(tmp_path / "s.npz", ad.state())
    again = Adapter(load_state(tmp_path / "s.npz"), precision="small")
    for a, b in zip(ad.net.weights, again.net.weights, strict=True):
        assert a.scale == b.scale and np.array_equal(a.value, b.value)


_DET = """
import hashlib, numpy as np, sys
sys.path.insert(0, {tests!r})
from helpers import gaussian
from intsr.online import adapt
img = np.random.default_rng(5).integers(0, 256, (40, 36, 3), dtype=np.uint8)
h = hashlib.sha256()
for p in ("int16", "small", "mixed", "mixed-x2", "grouped-x2"):
    h.update(adapt(img, gaussian(1.6), steps=3, precision=p).tobytes())
print(h.hexdigest())
"""


@pytest.mark.slow
def test_profiles_are_bit_identical_across_thread_counts():
    one, two = last_line_per_thread_count(_DET)
    assert one == two


def test_sr_groups_is_validated_and_round_trips():
    with pytest.raises(ValueError, match="sr_groups"):
        Precision(sr_groups=6)
    with pytest.raises(ValueError, match="sr_groups"):
        Precision.from_dict({"sr_groups": True})
    p = Precision(sr_act=(8,) * 7, sr_groups=4)
    assert Precision.from_dict(p.to_dict()) == p and "sr_groups" not in INT8.to_dict()


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([4, 8, 16]), st.lists(st.integers(0, 30), min_size=16, max_size=16),
       st.integers(0, 2**32 - 1), st.booleans())
def test_eq11_per_group_of_channels(gsize, bits, seed, unsigned):
    """Eq. 11 per group (model.requantize_grouped): each group of ``gsize`` adjacent channels
    takes s_g = ceil(log2(its maximum)), at most GROUP_DEPTH finer than the tensor's own Eq. 11
    scale, so every value is held to half a step of its group's scale (round half up), the
    coarsest group's scale is the tensor's, and the steps that conv3x3_grouped shifts by add up
    to the distance between the coarsest and finest groups."""
    rng = np.random.default_rng(seed)
    c, width = 64, 5
    mags = np.repeat(np.array(bits[:c // gsize]), gsize)  # each group's magnitude, 2**0..2**30
    acc = (rng.integers(-(2**30), 2**30, (20, c)) >> (30 - mags)).astype(np.int32)
    scale, exp, xp, (order, gs, steps) = requantize_grouped(acc, width, 0, True, gsize, unsigned)
    frac = 8 if unsigned else 7
    relu = np.maximum(acc.astype(np.int64), 0)
    tensor = ceil_log2(int(relu.max()))
    assert scale == tensor and gs == gsize and steps[0] == 0
    gmax = relu.reshape(20, c // gsize, gsize).max(axis=(0, 2))
    sg = np.maximum([ceil_log2(int(m)) for m in gmax], tensor - GROUP_DEPTH)
    assert list(sg[order]) == sorted(sg, reverse=True)
    assert int(np.sum(steps)) == sg.max() - sg.min() <= GROUP_DEPTH and exp == sg.min() - frac
    v = xp[1:-1, 1:-1].reshape(-1, c).astype(np.int64)
    step = np.repeat(sg, gsize) - frac  # each channel's real step, 2**step
    hi = 255 if unsigned else 127
    for j in range(c):  # |v * 2**st - acc| <= 2**(st - 1), times 2**(1 - min(st, 0)): integers
        st = int(step[j])
        if st >= 0:
            d, half = np.abs((v[:, j] << (st + 1)) - 2 * relu[:, j]), 1 << st
        else:
            d, half = np.abs(2 * v[:, j] - (relu[:, j] << (1 - st))), 1
        assert np.all((d <= half) | (v[:, j] == hi))  # saturation only at the group's top
    # with one scale for every group, the bytes are the per-tensor ones (Eq. 11 per tensor)
    flat = np.full((20, c), 1 << 20, np.int32)
    flat[3] = acc[3] & 0xFFFFF
    _, e1, xp1, (_, _, s1) = requantize_grouped(flat, width, 0, True, gsize, unsigned)
    _, e2, xp2 = requantize_padded(flat, width, 0, True, None, unsigned)
    assert e1 == e2 and not s1.any()
    np.testing.assert_array_equal(xp1, xp2)


_GROUPED = """
import hashlib, numpy as np
from intsr.model import IntNet
from intsr.floatpath.convert import weights_to_int
from intsr.precision import Precision
from intsr.weights import load_model
rng = np.random.default_rng(7)
img = rng.integers(0, 256, (150, 170, 3), dtype=np.uint8)
net = IntNet(weights_to_int(load_model()[0]), precision=Precision(sr_act=(8,) * 7, sr_groups=4))
print(hashlib.sha256(net.predict(img, tile=64).tobytes()).hexdigest())
"""


@pytest.mark.slow
def test_sr_groups_nearer_float_and_thread_count_free(shipped_weights, butterfly_pair):
    """The SR pass with Eq. 11 per group of 4 channels lands nearer the float network's output
    than per tensor (same weights, nothing trained), and its bytes do not depend on the number
    of threads (tiles on threads, 1 vs 2)."""
    inp, _ = butterfly_pair
    ints = weights_to_int(shipped_weights)
    outs = {g: IntNet(ints, precision=Precision(sr_groups=g)).predict(inp) for g in (0, 4, 8)}
    ref = np.clip(FloatNet(shipped_weights).predict(inp / np.float32(255)) * 255, 0, 255)
    err = {g: float(np.abs(o.astype(np.float64) - ref).mean()) for g, o in outs.items()}
    print(err)
    assert err[4] < err[0] and err[8] < err[0]
    one, two = last_line_per_thread_count(_GROUPED)
    assert one == two
