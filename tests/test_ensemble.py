"""The SR pass's self-ensemble (intsr.ensemble): which turns of an image leave Eq. 1's son
unchanged, the integer average, and the pass itself against turning by hand."""
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from cli.main import main
from intsr import blind, ensemble
from intsr.floatpath.convert import KERNEL_BITS, kernel_to_fixed
from intsr.floatpath.realdeg import RESIZERS, resizer_kernel
from intsr.io import InputError
from intsr.kernels.resample import degrade_u8

from helpers import gaussian


def _compose(a, b):
    """The code of turn(turn(x, a), b), found by turning a labelled grid."""
    x = np.arange(12).reshape(3, 4)
    want = ensemble.turn(ensemble.turn(x, a), b)
    return next(c for c in ensemble.ORDER if ensemble.turn(x, c).shape == want.shape
                and np.array_equal(ensemble.turn(x, c), want))


@given(st.integers(1, 9), st.integers(1, 9), st.sampled_from(ensemble.ORDER))
def test_unturn_undoes_turn(h, w, code):
    x = np.arange(h * w * 3).reshape(h, w, 3)
    assert np.array_equal(ensemble.unturn(ensemble.turn(x, code), code), x)


@given(st.sampled_from([1, 2, 4, 8]), st.integers(0, 2**32 - 1))
def test_average_is_the_mean_rounded_half_up(n, seed):
    rng = np.random.default_rng(seed)
    outs = [rng.integers(0, 256, (5, 7), dtype=np.uint8) for _ in range(n)]
    outs[0][0, 0] = 255  # the extremes: n x 255 must not wrap (uint16 sum)
    for o in outs:
        o[0, 1] = 255
    got = ensemble.average(outs)
    total = sum(o.astype(np.int64) for o in outs)
    assert got.dtype == np.uint8
    assert np.array_equal(got, (2 * total + n) // (2 * n))  # floor(mean + 1/2)
    assert got[0, 1] == 255
    assert np.array_equal(ensemble.average(iter(outs)), got)  # summed as they come


def _turned_son_gap(k_fixed, code, scale, grid, seed=3):
    """Largest level difference between the son of a turned image and the turned son (an LR
    image of scale * n pixels a side, as the steps' window is cropped)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (8 * scale, 8 * scale, 3), dtype=np.uint8)
    a = degrade_u8(ensemble.turn(img, code), k_fixed, KERNEL_BITS, scale, grid)
    b = ensemble.turn(degrade_u8(img, k_fixed, KERNEL_BITS, scale, grid), code)
    return int(np.abs(a.astype(np.int16) - b).max())


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("grid", ["centre", "corner"])
def test_a_turn_is_a_symmetry_exactly_when_it_maps_the_son_onto_itself(scale, grid):
    """Eq. 1 (the son): for resizers' taps and Gaussians, every turn is_symmetry calls one makes
    the same son to within a level (the taps' rounding residue), and every other turn makes a
    different son (more than a level apart somewhere): the criterion is the son's, not a rule."""
    kernels = [kernel_to_fixed(resizer_kernel(n, scale)) for n in RESIZERS]
    kernels += [kernel_to_fixed(gaussian(1.6)), kernel_to_fixed(gaussian(1.0, size=7))]
    kernels += [blind.bank().taps[i] for i in (0, 100, 700)]  # anisotropic bank entries
    g = gaussian(1.5)  # a user's kernel may have an even size or not be square
    kernels += [kernel_to_fixed(gaussian(1.6, size=14)), kernel_to_fixed(g[3:12] / g[3:12].sum())]
    for k in kernels:
        for code in ensemble.ORDER[1:]:
            if code & 4 and k.shape[0] != k.shape[1]:
                assert not ensemble.is_symmetry(k, code, scale, grid)  # no transpose
                continue
            gap = _turned_son_gap(k, code, scale, grid)
            if ensemble.is_symmetry(k, code, scale, grid):
                assert gap <= 1, (k.shape, code)
            else:
                assert gap > 1, (k.shape, code)


def test_which_turns_the_shipped_degradations_allow():
    """Resizers on the centre grid: all eight. Eq. 1's centre grid keeps s // 2, half a pixel
    from a resizer's centre at even s, so an isotropic Gaussian keeps only the transpose; the
    corner grid likewise; an anisotropic Gaussian off the diagonals nothing; no kernel (plain
    SR): all eight."""
    for name in RESIZERS:
        assert ensemble.symmetries(kernel_to_fixed(resizer_kernel(name, 4)), 4, "centre") == \
            ensemble.ORDER
        assert ensemble.symmetries(kernel_to_fixed(resizer_kernel(name, 2)), 2, "corner") == \
            (0, 4)
    assert ensemble.symmetries(kernel_to_fixed(gaussian(1.6)), 4, "centre") == (0, 4)
    assert ensemble.symmetries(kernel_to_fixed(gaussian(1.6)), 4, "corner") == (0, 4)
    bank = blind.bank()
    aniso = next(i for i, (s1, s2, th) in enumerate(bank.params)
                 if s1 > 1.5 * s2 and abs(math.sin(4 * th)) > 0.5)  # off the axes and diagonals
    assert ensemble.symmetries(bank.taps[aniso], 4, "centre") == (0,)
    assert ensemble.symmetries(None, 4, "centre") == ensemble.ORDER


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_plain_sr_on_the_corner_grid_keeps_the_turns_that_keep_its_pixels(scale):
    """Without a kernel the corner grid allows the turns that map its kept pixels onto
    themselves whatever the blur: those of a one-tap kernel (the transpose; a reversal keeps
    pixel s i + s - 1)."""
    delta = np.ones((1, 1), np.int32)
    assert ensemble.symmetries(None, scale, "corner") == \
        ensemble.symmetries(delta, scale, "corner") == (0, 4)


@settings(max_examples=50)
@given(st.sampled_from(["auto", 1, 2, 4, 8, "2"]), st.integers(1, 3000), st.integers(1, 3000),
       st.sampled_from([None, "bicubic", "gauss"]))
def test_chosen_turns_are_a_group_within_the_setting_and_the_budget(setting, h, w, kind):
    k = {None: None, "bicubic": kernel_to_fixed(resizer_kernel("bicubic", 4)),
         "gauss": kernel_to_fixed(gaussian(1.6))}[kind]
    pixels = h * w
    turns = ensemble.choose(k, 4, "centre", setting, pixels)
    n = len(turns)
    assert turns[0] == 0 and n in (1, 2, 4, 8)
    assert set(turns) <= set(ensemble.symmetries(k, 4, "centre"))
    assert all(_compose(a, b) in turns for a in turns for b in turns)  # closed: a group
    cap = int(setting) if setting != "auto" else max(1, ensemble.BUDGET // pixels)
    assert n <= cap
    # and no larger group fits: doubling would pass the cap or the symmetries
    assert 2 * n > min(cap, len(ensemble.symmetries(k, 4, "centre")))


def test_a_1080p_frame_keeps_one_pass_and_a_photo_gets_all():
    assert ensemble.choose(None, 4, "centre", "auto", 1920 * 1080) == (0,)
    assert len(ensemble.choose(None, 4, "centre", "auto", 480 * 540)) == 8
    assert len(ensemble.choose(None, 4, "centre", "auto", 512 * 512)) == 4
    assert len(ensemble.choose(None, 4, "centre", 8, 1920 * 1080)) == 8  # told: no budget


@pytest.mark.parametrize("bad", [0, 3, 16, -1, "x", "", None, True, 2.0])
def test_bad_settings_are_refused(bad):
    with pytest.raises(InputError, match="ensemble"):
        ensemble.check_setting(bad)


def test_sr_pass_averages_the_turned_outputs():
    """Adapter.super_resolve with turns: the integer mean of the network's outputs on each
    turned image, turned back (the pass a user gets), grey inputs averaged before the grey."""
    from intsr.kernels.resample import bicubic_upsample_u8
    from intsr.online import SR_TILE, Adapter

    rng = np.random.default_rng(11)
    img = rng.integers(0, 256, (21, 17, 3), dtype=np.uint8)
    ad = Adapter(None, adapting=False)
    turns = ensemble.ORDER
    by_hand = [ensemble.unturn(ad.net.predict(bicubic_upsample_u8(ensemble.turn(img, c), 4),
                                              tile=SR_TILE), c) for c in turns]
    want = ensemble.average(by_hand)
    assert np.array_equal(ad.super_resolve(img, turns), want)
    assert np.array_equal(ad.super_resolve(img), by_hand[0])  # the default: one pass
    assert not np.array_equal(want, by_hand[0])
    grey = ad.super_resolve(img[:, :, 0], turns[:2])
    assert grey.shape == (84, 68)


def test_adapt_reports_its_turns_and_keeps_one_pass_when_told(tmp_path):
    """`intsr adapt --json` names the turns; --ensemble 1 is one pass; a bad value is one line,
    exit 1, the output untouched; `intsr sr` takes the option too."""
    out, rep = tmp_path / "o.png", tmp_path / "r.json"
    res = CliRunner().invoke(main, ["adapt", "--example", str(out), "--steps", "1", "--json",
                                    str(rep), "--quiet"])
    assert res.exit_code == 0, res.output
    assert json.loads(rep.read_text())["ensemble"] == ["identity", "transpose"]  # a Gaussian
    res = CliRunner().invoke(main, ["adapt", "--example", str(out), "--steps", "1", "--json",
                                    str(rep), "--quiet", "--ensemble", "1"])
    assert res.exit_code == 0, res.output
    assert json.loads(rep.read_text())["ensemble"] == ["identity"]
    before = out.read_bytes()
    for cmd in (["adapt", "--example", str(out)], ["sr", str(out), str(out)]):
        res = CliRunner().invoke(main, cmd + ["--ensemble", "3"])
        assert res.exit_code != 0
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "ensemble" in lines[0] and "Traceback" not in res.output
        assert out.read_bytes() == before


def test_a_bad_setting_fails_before_any_estimate(monkeypatch):
    """adapt refuses a bad --ensemble before blind mode's estimate runs (no work to throw away)."""
    import intsr.online as online

    calls = []
    monkeypatch.setattr(online, "estimate_kernel", lambda *a, **k: calls.append(a))
    img = np.zeros((40, 40, 3), np.uint8)
    with pytest.raises(InputError, match="ensemble"):
        online.adapt(img, ensemble=3)
    assert calls == []
