"""The other on-device learners on the same engine: forward gradients (intsr.forwardgrad) and
mutating masks (intsr.mest); back-propagation unchanged."""
import hashlib
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from intsr import cost, pruning
from intsr.arch import CHANNELS, HALO, NUM_LAYERS, layer_shapes
from intsr.floatpath.convert import lr_to_fixed, weights_to_int
from intsr.forwardgrad import ForwardGradient, direction, parse_layers
from intsr.io import InputError
from intsr.jobs import example_paths
from intsr.mest import Mest
from intsr.model import IntNet
from intsr.online import Adapter, adapt, make_learner
from intsr.quant import ceil_log2

from helpers import WEIGHTS, last_line_per_thread_count


def _net(seed=0, masks=None):
    rng = np.random.default_rng(seed)
    return IntNet(weights_to_int([rng.normal(0, 0.05, s) for s in layer_shapes()]), masks)


def _pair(seed, h=20, w=18):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
            rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _real_loss(net, inp, tgt, w8=None):
    cache = net.forward(inp, w8=w8)
    total, e, _ = net.loss_grad(cache, tgt)
    return Fraction(total) * Fraction(2) ** e


# -- back-propagation is today's --------------------------------------------------------------
def test_backprop_is_bit_identical_to_the_engine_before_the_new_methods():
    """`intsr adapt --example`'s computation, 3 steps, unpruned and at 50 %: the same bytes as
    commit 316b97e (before this file existed; digests printed by that commit's engine)."""
    inp, k = example_paths()
    img, ker = np.asarray(Image.open(inp).convert("RGB")), np.load(k)
    for prune, want in ((None, "e3df79890ea47d1f1321b7023c75cfb6ce3e125c353c13a25c0fbef8e8858b5e"),
                        (0.5, "7cf1dac466f436c42e5bba6e9ec40e3c02a39610fcdb8d3d539ad40a501b3293")):
        out = adapt(img, ker, steps=3, prune=prune, method="backprop", seed=7, ensemble=1)
        assert hashlib.sha256(out.tobytes()).hexdigest() == want


# -- the loss-only pass -------------------------------------------------------------------------
def test_loss_pass_equals_the_training_forward_exactly():
    net = _net(1)
    inp, tgt = _pair(2)
    total, e = net.loss(inp, tgt)
    assert Fraction(total) * Fraction(2) ** e == _real_loss(net, inp, tgt)


@pytest.mark.slow
def test_tiled_loss_adds_tiles_exactly_and_stays_close_to_untiled():
    """Tiles of 8 output pixels with a HALO margin: the sum equals the tiles' own losses added
    (each computed on its crop as one untiled pass), and the whole within 2 %."""
    net = _net(3)
    inp, tgt = _pair(4, 21, 19)
    total, e = net.loss(inp, tgt, tile=8)
    want = Fraction(0)
    for y in range(0, 21, 8):
        for x in range(0, 19, 8):
            y0, x0 = max(0, y - HALO), max(0, x - HALO)
            crop = np.ascontiguousarray(inp[y0:y + 8 + HALO, x0:x + 8 + HALO])
            cache = net.forward(crop)
            out = cache.out.reshape(crop.shape)[y - y0:y - y0 + 8, x - x0:x - x0 + 8]
            t = tgt[y:y + 8, x:x + 8].astype(object) * 2 ** (-8 - cache.out_exp)
            want += sum(abs(int(a) - int(b)) for a, b in zip(out.ravel(), t.ravel(), strict=True)) \
                * Fraction(2) ** cache.out_exp
    got = Fraction(total) * Fraction(2) ** e
    assert got == want
    assert abs(got / _real_loss(net, inp, tgt) - 1) < 0.02


# -- forward gradients -------------------------------------------------------------------------
@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2 ** 32), st.integers(0, 50), st.integers(1, 300))
def test_directions_are_rademacher_and_reproducible(seed, t, n):
    d = direction(seed, t, 0, 7, (n, 3))
    assert d.dtype == np.int8 and set(np.unique(d)) <= {-1, 1}
    assert np.array_equal(d, direction(seed, t, 0, 7, (n, 3)))
    if n >= 100:
        assert not np.array_equal(d, direction(seed, t, 1, 7, (n, 3)))
        assert abs(int(d.sum())) < 0.5 * d.size


def test_parse_layers():
    assert parse_layers("8") == [7]
    assert parse_layers("6-8") == [5, 6, 7]
    assert parse_layers("1,4,8") == [0, 3, 7]
    assert parse_layers("all") == list(range(NUM_LAYERS))
    for bad in ("0", "9", "3-2", "x", "1,,2"):
        with pytest.raises(ValueError):
            parse_layers(bad)


@pytest.mark.parametrize("estimate", ["central", "one-sided"])
def test_forward_step_equals_its_rational_reference(estimate):
    """One step, masters of the perturbed layers: the engine's update equals, within the Eq. 15
    rounding, lr_eff * sum_k d_k u_k / eps_l computed in exact rationals from the losses at
    w8 +- u_k (the definition in intsr.forwardgrad), where lr_eff = mult * 2**-shift / n."""
    net = _net(5)
    inp, tgt = _pair(6)
    n, layers = 3, [6, 7]
    fg = ForwardGradient(net, layers=layers, directions=n, estimate=estimate, seed=11)
    before = [w.value.astype(np.int64) for w in net.weights]
    scales = [w.scale for w in net.weights]
    base = _real_loss(net, inp, tgt)
    ds, us = [], []
    for k in range(n):
        plus = _real_loss(net, inp, tgt, fg._perturbed(k, 1))
        minus = base if estimate == "one-sided" else _real_loss(net, inp, tgt, fg._perturbed(k, -1))
        ds.append((plus - minus) / (2 if estimate == "central" else 1))
        us.append({layer: fg._dir(k, layer) for layer in layers})
    mult, shift = lr_to_fixed(0.01 / n, tgt.size)
    lr_eff = Fraction(mult, 2 ** shift) / 2 ** ceil_log2(tgt.size)
    fg.step(inp, tgt, mult, shift)
    for layer in range(NUM_LAYERS):
        got = net.weights[layer].value.astype(np.int64).reshape(-1, CHANNELS[layer + 1])
        was = before[layer].reshape(got.shape)
        if layer not in layers:
            assert np.array_equal(got, was) and net.weights[layer].scale == scales[layer]
            continue
        assert net.weights[layer].scale == scales[layer]
        eps = Fraction(2) ** (scales[layer] - 7)
        lsb = Fraction(2) ** (scales[layer] - 31)
        g = sum(np.vectorize(lambda v, d=d: d * int(v), otypes=[object])(u[layer])
                for d, u in zip(ds, us, strict=True))
        want = np.vectorize(lambda v: float(v), otypes=[float])(
            -lr_eff * g / eps / lsb)
        delta = (got - was).astype(float)
        tol = 1e-6 * np.abs(want).max() + 2
        assert np.abs(delta - want).max() <= tol
        assert np.abs(want).max() > 100  # the step moved something measurable


@pytest.mark.slow
def test_many_directions_point_along_the_backpropagated_gradient():
    """E[(g . u) u] = g: with 1024 directions the forward estimate of the last layer's gradient
    has a clearly positive cosine with the back-propagated one (Eq. 6-15 path)."""
    masks = [np.zeros(c, bool) for c in CHANNELS[1:-1]] + [np.ones(3, bool)]
    inp, tgt = _pair(8, 24, 24)
    bp, fw = _net(9, masks), _net(9, masks)
    start = bp.weights[7].value.astype(np.int64)
    mult, shift = lr_to_fixed(0.01, tgt.size)
    bp.step(inp, tgt, mult, shift)
    ForwardGradient(fw, layers=[7], directions=1024, seed=1).step(
        inp, tgt, *lr_to_fixed(0.01 / 1024, tgt.size))
    a = (bp.weights[7].value.astype(np.int64) - start).ravel().astype(float)
    b = (fw.weights[7].value.astype(np.int64) - start).ravel().astype(float)
    cos = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    assert cos > 0.4, cos  # sqrt(n / (n + d)) = 0.61 for n = 1024, d = 1728; 0 +- 0.03 by chance


@pytest.mark.slow
def test_forward_method_keeps_no_activation_and_fits_in_a_quarter_of_backprop():
    """The loss-only passes store no layer input: a forward-gradient step at 160 px (two tiles
    a side) peaks well under a back-propagation step (traced, all transient buffers)."""
    import tracemalloc
    inp, tgt = _pair(10, 160, 160)
    peaks = []
    for method in ("backprop", "forward"):
        net = _net(11)
        learner = make_learner(net, method, options={"tile": 64} if method == "forward" else {})
        tracemalloc.start()
        learner.step(inp, tgt, *lr_to_fixed(0.01, tgt.size))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < peaks[0] / 4, peaks
    assert peaks[1] <= cost.forward_memory_kb(160, tile=64) * 1000 * 1.5


def test_forward_method_refuses_bad_options():
    net = _net(0)
    for kw in ({"directions": 0}, {"directions": True}, {"estimate": "sign"},
               {"layers": []}):
        with pytest.raises(ValueError):
            ForwardGradient(net, **kw)
    pruned = [np.zeros(c, bool) for c in CHANNELS[1:-1]] + [np.ones(3, bool)]
    with pytest.raises(ValueError, match="keeps"):
        ForwardGradient(_net(0, pruned), layers=[2])
    with pytest.raises(InputError, match="does not apply"):
        make_learner(net, "backprop", options={"directions": 2})
    with pytest.raises(InputError, match="method"):
        make_learner(net, "adam")


# -- MEST ---------------------------------------------------------------------------------------
def test_importance_is_the_summed_gradient_magnitude_per_kept_channel():
    masks = [np.arange(c) % 3 == 0 for c in CHANNELS[1:-1]] + [np.ones(3, bool)]
    net = _net(12, masks)
    m = Mest(net, every=100)
    seen = {layer: [] for layer in range(NUM_LAYERS)}

    def spy(layer, gq):
        seen[layer].append((np.abs(gq.value.astype(np.int64)).sum(axis=0), gq.exp))
        m.observe(layer, gq)

    inp, tgt = _pair(13)
    for _ in range(3):
        net.step(inp, tgt, *lr_to_fixed(0.01, tgt.size), observe=spy)
    for layer in range(NUM_LAYERS):
        exact = [sum(Fraction(int(c[j])) * Fraction(2) ** e for c, e in seen[layer])
                 for j in range(net.kept[layer].size)]
        unit = Fraction(2) ** m.exp[layer]
        got = [int(v) * unit for v in m.importance[layer]]
        # each step's sum floored to the coarsest exponent seen: under one unit per step
        assert all(0 <= a - b < 3 * unit for a, b in zip(exact, got, strict=True))
        assert m.exp[layer] == max(e for _, e in seen[layer])


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10 ** 6), st.sampled_from(pruning.RATIOS[1:]))
def test_mutation_keeps_the_eq9_cost_and_swaps_the_least_important(seed, ratio):
    """Eq. 9: the counts per layer, hence sum_l R(cbar^(l-1), c^(l)), are the budget's before
    and after; the dropped channels are the least important kept ones, the grown ones were
    not kept; layers fully kept (the last) or empty are left alone."""
    from intsr.weights import load_model
    masks = load_model(prune=ratio)[1]
    net = _net(0, masks)
    m = Mest(net, every=1, seed=seed)
    rng = np.random.default_rng(seed)
    m.importance = [rng.integers(0, 1000, k.size).astype(np.int64) for k in net.kept]
    before = [k.copy() for k in net.kept]
    imp = [i.copy() for i in m.importance]
    m.mutate()
    n_prev = list(CHANNELS[0:NUM_LAYERS - 1])
    assert pruning.chain_cost([k.size for k in before[:-1]], n_prev) == \
        pruning.chain_cost([k.size for k in net.kept[:-1]], n_prev)
    for layer in range(NUM_LAYERS):
        old, new = set(before[layer]), set(net.kept[layer])
        assert len(old) == len(new)
        if len(old) in (0, CHANNELS[layer + 1]) or layer == NUM_LAYERS - 1:
            assert old == new
            continue
        dropped, grown = old - new, new - old
        free = CHANNELS[layer + 1] - len(old)
        assert len(dropped) == len(grown) == min(m.swap[layer], len(old), free)
        order = sorted(range(len(before[layer])), key=lambda j: (imp[layer][j], before[layer][j]))
        assert dropped == {int(before[layer][j]) for j in order[:len(dropped)]}
        assert not grown & old


@pytest.mark.slow
def test_mest_mutates_every_k_steps_and_is_reproducible():
    from intsr.weights import load_model
    masks = load_model(prune=0.5)[1]
    inp, tgt = _pair(14)
    runs = []
    for seed in (3, 3, 4):
        net = _net(1, masks)
        m = Mest(net, every=2, seed=seed)
        history = []
        for _ in range(4):
            m.step(inp, tgt, *lr_to_fixed(0.01, tgt.size))
            history.append([k.copy() for k in net.kept])
        runs.append((history, [w.value.copy() for w in net.weights]))
        assert m.mutations == 2
        assert all(np.array_equal(a, b) for a, b in zip(history[0], masks_idx(masks), strict=True))
        assert any(not np.array_equal(a, b) for a, b in zip(history[1], history[0], strict=True))
    (h0, w0), (h1, w1), (h2, _) = runs
    assert all(np.array_equal(a, b)
               for s, t in zip(h0, h1, strict=True) for a, b in zip(s, t, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(w0, w1, strict=True))
    assert any(not np.array_equal(a, b)
               for s, t in zip(h0, h2, strict=True) for a, b in zip(s, t, strict=True))


def masks_idx(masks):
    return [np.flatnonzero(m) for m in masks]


# -- through the public API, the CLI and threads -------------------------------------------------
_DET = """
import hashlib, numpy as np, sys
sys.path.insert(0, {tests!r})
from helpers import gaussian
from intsr.online import adapt
rng = np.random.default_rng(5)
img = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
h = hashlib.sha256()
for method, opts in (("forward", {{"directions": 2, "layers": "7-8"}}), ("mest", {{"every": 1}})):
    a = adapt(img, gaussian(1.6), steps=3, prune=0.5, method=method, seed=9, options=opts)
    h.update(a.tobytes())
print(h.hexdigest())
"""


@pytest.mark.slow
def test_new_methods_are_bit_identical_across_thread_counts():
    one, two = last_line_per_thread_count(_DET)
    assert one == two


def test_adapter_state_carries_mutated_masks(butterfly_lr):
    from helpers import gaussian
    ad = Adapter(prune=0.5, method="mest", options={"every": 1}, seed=2)
    start = [k.copy() for k in ad.net.kept]
    ad.learn([ad.pair(butterfly_lr, gaussian(1.6))], 2)
    state = ad.state()
    assert any(not np.array_equal(np.flatnonzero(m), k)
               for m, k in zip(state.masks, start, strict=True))
    assert all(np.array_equal(np.flatnonzero(m), k)
               for m, k in zip(state.masks, ad.net.kept, strict=True))


@pytest.mark.slow
def test_forward_method_improves_the_pretrained_net_on_its_pair(butterfly_pair):
    """From the Gaussian pretrain (a good SR net), 30 forward-gradient steps on the last
    layer lower the L1 loss of the training pair."""
    ad = Adapter(WEIGHTS / "pretrained_gauss.npz", method="forward", seed=1,
                 options={"layers": "8"})
    inp, tgt = butterfly_pair
    first = ad.net.loss(inp, tgt)
    ad.learn([butterfly_pair], 30)
    last = ad.net.loss(inp, tgt)
    assert Fraction(last[0]) * Fraction(2) ** last[1] < \
        Fraction(first[0]) * Fraction(2) ** first[1] * Fraction(995, 1000)


@pytest.mark.slow
@pytest.mark.parametrize("config,method", [("int8-forward", "forward"), ("int8-mest", "mest")])
def test_eval_configs_run_what_intsr_adapt_runs(tmp_path, config, method):
    """`intsr eval --config int8-forward / int8-mest` is `intsr adapt --method ...`, exactly."""
    from intsr.evaluate import evaluate
    from intsr.floatpath.degrade import lr_image
    from intsr.floatpath.metrics import psnr_y
    from intsr.weights import load_model

    from helpers import DATA, gaussian
    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    hr = np.asarray(Image.open(DATA / "butterfly.png").convert("RGB"))
    Image.fromarray(hr).save(hr_dir / "b.png")
    k = gaussian(1.6)
    w, masks, lr = load_model(prune=0.5)
    rec = next(evaluate(hr_dir, [("g", k)], weights=w, masks=masks, lr=lr, steps=2,
                        configs=(config,)))
    sr = adapt(lr_image(hr, k, 4), k, steps=2, prune=0.5, method=method, ensemble=1)
    assert rec["psnr"] == psnr_y(sr / 255.0, hr / 255.0, 4)
    assert rec["psnr"] > rec["psnr_init"]
