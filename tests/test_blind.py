"""Blind mode (intsr.blind): the integer kernel estimator against its float twin, the bank and
its exact nearest-entry choice, reuse of a saved estimate bit for bit, determinism across
thread counts, bad estimator files, and the CLI."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st
from PIL import Image

from cli.main import main
from intsr import blind
from intsr.floatpath.convert import kernel_to_fixed
from intsr.floatpath.degrade import lr_image
from intsr.floatpath.gaussian import from_log_cov, gaussian, kernel_distance, log_cov, log_cov_of
from intsr.floatpath.network import conv3x3
from intsr.io import InputError
from intsr.online import adapt, estimate_kernel

from helpers import DATA

ESTIMATOR = blind.shipped_estimator(4)


@pytest.fixture(scope="module")
def hr():
    return np.asarray(Image.open(DATA / "butterfly.png").convert("RGB"))


def float_prediction(image):
    """The estimator in float64 (NumPy), as training/estimator.py's KernelNet computes it."""
    z = np.load(ESTIMATOR)
    h, w = image.shape[:2]
    y0, x0 = max(0, (h - blind.WINDOW) // 2), max(0, (w - blind.WINDOW) // 2)
    x = image[y0:y0 + blind.WINDOW, x0:x0 + blind.WINDOW] / 256.0
    for i in range(blind.LAYERS):
        x = np.maximum(conv3x3(x, z[f"conv{i + 1}"].astype(np.float64)), 0)
    f = x.sum(axis=(0, 1))
    return blind.WIDTH * f / f.sum() @ z["head_w"] + z["head_b"]


@pytest.mark.parametrize("kernel", [(1.2, 1.2, 0.0), (2.4, 2.4, 0.0), (2.6, 1.1, 0.7)])
def test_integer_estimator_matches_its_float_twin(hr, kernel):
    """int8 weights and activations (Eq. 10-11) change the prediction by little: the integer
    path computes the network that was trained."""
    for im in (lr_image(hr, gaussian(*kernel), 4), lr_image(hr[::-1, :200], gaussian(*kernel), 4)):
        got = np.array(blind.estimator(4).predict(im)) / (1 << blind.FRAC)
        assert np.abs(got - float_prediction(im)).max() < 0.03


def test_estimates_land_near_the_true_kernel(hr):
    """Set5 butterfly (a test image, not tuned on) x4: the size estimate is within 0.35
    sigma of the truth."""
    for s in (1.2, 1.6, 2.0, 2.4):
        est = estimate_kernel(lr_image(hr, gaussian(s, s, 0, 15), 4))
        got = math.exp(log_cov_of(est.kernel())[0] / 2)
        assert abs(got - math.exp(log_cov_of(gaussian(s, s, 0, 15))[0] / 2)) < 0.35, (s, got)


def test_bank_is_the_documented_grid_and_its_taps_are_its_kernels():
    b = blind.bank()
    n = len(blind.SIGMAS)
    n_aniso = sum(min(i, blind.MAX_RATIO_STEPS) for i in range(n)) * blind.ORIENTATIONS
    assert len(b.params) == n + n_aniso == len(b.taps) == len(b.uvw)
    for i in (0, n - 1, n, len(b.params) // 2, len(b.params) - 1):
        s1, s2, th = b.params[i]
        assert (b.taps[i] == kernel_to_fixed(gaussian(s1, s2, th))).all()
        assert b.taps[i].sum() == 1 << 16
        assert np.allclose(b.uvw[i] / (1 << blind.FRAC), log_cov(s1, s2, th), atol=2 ** -12)
        # the taps carry the parameters (truncation at +-3 sigma narrows them a little; below
        # sigma 0.8 a sampled Gaussian is narrower than its sigma)
        if s2 >= 0.8:
            assert np.allclose(log_cov_of(b.taps[i]), log_cov(s1, s2, th), atol=0.12)


@settings(max_examples=60, deadline=None)
@given(st.tuples(*[st.one_of(st.integers(-3 << blind.FRAC, 3 << blind.FRAC),
                              st.integers(-(1 << 70), 1 << 70))] * 3),
       st.one_of(st.none(), st.integers(5, 25)))
def test_nearest_entry_is_exact(uvw, max_size):
    """The choice is the exact integer argmin (Python ints, no rounding) of the prediction
    clamped to +-LIMIT, lowest index on a tie, never a kernel wider than max_size; a head that
    predicts absurd values (a bad estimator file) cannot overflow it."""
    b = blind.bank()

    class Fixed(blind.KernelEstimator):
        resize_u = None  # no "resize_sigma" rule: the bank only

        def __init__(self):
            pass

        def predict(self, image):
            return uvw

    est = Fixed().estimate(np.zeros((8, 8, 3), np.uint8), max_size=max_size)
    uvw = [max(-blind.LIMIT, min(blind.LIMIT, c)) for c in uvw]
    d = [sum((int(p) - q) ** 2 for p, q in zip(row, uvw, strict=True)) if max_size is None or
         int(sz) <= max_size else None for row, sz in zip(b.uvw, b.sizes, strict=True)]
    best = min(v for v in d if v is not None)
    assert est.index == d.index(best)
    assert (est.k_fixed == b.taps[est.index]).all()


def test_mean_prediction_of_several_images(hr):
    e = blind.estimator(4)
    a, b = lr_image(hr, gaussian(1.4), 4), lr_image(hr[::-1].copy(), gaussian(1.4), 4)
    pa, pb = e.predict(a), e.predict(b)
    want = tuple((x + y + 1) // 2 for x, y in zip(pa, pb, strict=True))
    assert e.estimate([a, b]).uvw == want


def test_featureless_image_still_gets_a_kernel():
    for v in (0, 128, 255):
        est = estimate_kernel(np.full((20, 20, 3), v, np.uint8))
        assert est.k_fixed.sum() == 1 << 16 and est.k_fixed.shape[0] <= 20


def test_small_image_gets_a_kernel_that_fits():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (16, 18, 3), dtype=np.uint8)
    est = estimate_kernel(img)
    assert est.k_fixed.shape[0] <= 16
    assert adapt(img, steps=1).shape == (64, 72, 3)


@pytest.mark.slow
def test_saved_estimate_reproduces_blind_run_bit_for_bit(hr, tmp_path):
    lr = lr_image(hr, gaussian(2.0), 4)
    report = {}
    blind_out = adapt(lr, steps=3, report=report)
    est = estimate_kernel(lr)
    assert report["kernel_estimate"]["bank_index"] == est.index
    assert (kernel_to_fixed(est.kernel()) == est.k_fixed).all()
    # blind mode also estimates the noise, runs the safety net and starts from its own
    # meta-learned point: told the same, it is the same run
    assert report["weights"] == "meta_blind.npz"
    told = adapt(lr, est.kernel(), steps=3, noise=report["degradation"]["noise"], check=True,
                 weights="weights/" + report["weights"])
    assert (told == blind_out).all()
    assert (adapt(lr, "auto", steps=3) == blind_out).all()


@pytest.mark.slow
def test_blind_adapt_is_bit_identical_across_thread_counts(tmp_path):
    """Clean (centre grid) and with white colour noise (the prior's corner grid, a noisy son,
    the safety net)."""
    script = ("import sys, numpy as np; from PIL import Image; from intsr.online import adapt; "
              "im = np.asarray(Image.open(sys.argv[1]).convert('RGB'))[:96, :96]; "
              "noisy = np.clip(im + np.random.default_rng(0).normal(0, 6, im.shape), 0, 255); "
              "np.save(sys.argv[2], np.stack([adapt(im, steps=2), "
              "adapt(noisy.astype(np.uint8), steps=2)]))")
    outs = []
    for n in ("1", "2"):
        out = tmp_path / f"o{n}.npy"
        env = dict(os.environ, NUMBA_NUM_THREADS=n)
        subprocess.run([sys.executable, "-c", script, str(DATA / "butterfly.png"), str(out)],
                       env=env, check=True, timeout=600)
        outs.append(np.load(out))
    assert (outs[0] == outs[1]).all()


def test_bad_estimator_files_are_refused_in_one_line(tmp_path):
    np.savez(tmp_path / "wrong.npz", conv1=np.zeros((3, 3)))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 junk")
    z = dict(np.load(ESTIMATOR))
    z["scale"] = np.array(2)
    np.savez(tmp_path / "x2.npz", **z)
    z["head_w"] = z["head_w"].astype(object)
    np.savez(tmp_path / "obj.npz", **z)
    for name, msg in (("wrong.npz", "keys differ"), ("junk.npz", "not a readable"),
                      ("x2.npz", "for x2, not x4"), ("obj.npz", "dtype")):
        with pytest.raises((InputError, ValueError), match=msg) as e:
            blind.KernelEstimator(tmp_path / name, 4)
        assert "\n" not in str(e.value)


def test_gaussian_family_round_trips():
    for p in ((1.6, 1.6, 0.0), (2.4, 1.0, 0.5), (1.0, 0.5, 2.9)):
        got = from_log_cov(*log_cov(*p))
        assert np.allclose(got[:2], p[:2])
        assert p[0] == p[1] or abs(got[2] - p[2]) < 1e-9
    assert kernel_distance(gaussian(1.6, size=15), gaussian(1.6, size=21)) < 1e-3


# --- the CLI -----------------------------------------------------------------------------------

def _run(args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.slow
def test_cli_blind_adapt_reports_and_saves_the_estimate(tmp_path, hr):
    lr = lr_image(hr, gaussian(2.0), 4)[:48, :48]
    Image.fromarray(lr).save(tmp_path / "in.png")
    res = _run(["adapt", tmp_path / "in.png", tmp_path / "out.png", "--steps", "2",
                "--save-kernel", tmp_path / "k.npy", "--json", tmp_path / "r.json"])
    assert res.exit_code == 0, res.output
    assert "estimating the blur kernel" in res.output and "kernel: Gaussian sigma" in res.output
    rep = json.loads((tmp_path / "r.json").read_text())
    est = rep["kernel_estimate"]
    assert {"sigma1", "sigma2", "theta_deg", "bank_index", "bank_size", "seconds",
            "predicted"} <= set(est)
    assert rep["seconds"]["estimate"] == est["seconds"]
    k = np.load(tmp_path / "k.npy")
    assert k.shape == (est["size"], est["size"]) and abs(k.sum() - 1) < 1e-12
    # the noise estimate, the safety net and the starting weights are blind mode's too: told
    # them, the same run
    assert rep["weights"] == "meta_blind.npz"
    res = _run(["adapt", tmp_path / "in.png", tmp_path / "told.png", "--steps", "2",
                "--kernel", tmp_path / "k.npy", "--noise", rep["degradation"]["noise"], "--check",
                "--weights", "weights/" + rep["weights"]])
    assert res.exit_code == 0, res.output
    assert (np.asarray(Image.open(tmp_path / "told.png")) ==
            np.asarray(Image.open(tmp_path / "out.png"))).all()
    res = _run(["adapt", tmp_path / "in.png", tmp_path / "auto.png", "--steps", "2",
                "--kernel", "auto", "--quiet"])
    assert res.exit_code == 0 and res.output == ""
    assert (np.asarray(Image.open(tmp_path / "auto.png")) ==
            np.asarray(Image.open(tmp_path / "out.png"))).all()


@pytest.mark.parametrize("args, msg", [
    (["--kernel", "{d}/k.npy", "--save-kernel", "{d}/s.npy"], "without --kernel"),
    (["--save-kernel", "{d}/s.png"], "must name a .npy"),
    (["--save-kernel", "{d}/nofolder/s.npy"], "does not exist"),
    (["--scale", "3"], "no weights are shipped for x3"),
])
def test_cli_blind_bad_options_fail_in_one_line(tmp_path, args, msg):
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(tmp_path / "in.png")
    np.save(tmp_path / "k.npy", gaussian(1.6, 1.6, 0, 7))
    res = _run(["adapt", tmp_path / "in.png", tmp_path / "out.png", "--steps", "1"]
               + [a.format(d=tmp_path) for a in args])
    assert res.exit_code != 0
    assert msg in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "s.npy").exists()


@pytest.mark.parametrize("sigma,reads_resize", [(0.2, False), (8.0, True)])
def test_an_estimate_narrower_than_resize_sigma_reads_as_the_assumed_resize(
        monkeypatch, hr, sigma, reads_resize):
    """A scale whose configuration sets "resize_sigma": an estimate whose geometric-mean sigma
    is below it is the assumed resizer (its taps, reported as a resizer, the direct-SR
    weights, every turn of the self-ensemble); above it, the bank's Gaussian as before. The
    comparison is on the integer prediction u against 2 ln(sigma) in FRAC bits."""
    cfg = dict(blind.shipped_config(4), resize_sigma=sigma)
    monkeypatch.setattr(blind, "shipped_config", lambda scale=4: cfg)
    e = blind.KernelEstimator(ESTIMATOR, scale=4)
    lr = lr_image(hr, gaussian(1.6), 4)
    est = e.estimate(lr)
    u = e.predict(lr)[0]
    assert (u < math.floor(2 * math.log(sigma) * (1 << blind.FRAC) + 0.5)) == reads_resize
    if reads_resize:
        assert est.resizer == blind.ASSUMED_RESIZER and est.index == -1
        assert (est.k_fixed == kernel_to_fixed(
            blind.resizer_kernel(blind.ASSUMED_RESIZER, 4))).all()
        assert est.describe()["family"] == "resizer"
    else:
        assert est.resizer is None and est.index >= 0
    monkeypatch.setattr(blind, "estimator", lambda scale, path=None: e)
    rep = {}
    adapt(lr, steps=1, report=rep)
    assert rep["kernel_estimate"]["family"] == ("resizer" if reads_resize else "gauss")
    assert (rep["weights"] == blind.shipped_config(4)["sr_weights"]) == reads_resize
    assert (len(rep["ensemble"]) == 8) == reads_resize
