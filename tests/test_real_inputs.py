"""Issue 28, real inputs: the degradation model (resizers as Eq. 1 kernels, noise, JPEG), the
son degraded like its image on the device, the JPEG quality read from a file, the noise level
estimate and the safety net."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import example, given, settings, strategies as st
from PIL import Image

from cli.main import main
from intsr.blind import estimate_chroma_noise, estimate_noise, grid_prior
from intsr.floatpath.convert import kernel_to_fixed, noise_to_fixed
from intsr.floatpath.gaussian import gaussian
from intsr.floatpath.realdeg import (
    RESIZERS,
    Degradation,
    make_lr,
    random_degradation,
    resizer_kernel,
)
from intsr.io import InputError, ijg_table, jpeg_quality, jpeg_roundtrip
from intsr.kernels.noise_u8 import add_noise_u8, add_noise_u8_ref
from intsr.kernels.resample import bicubic_upsample_u8
from intsr.online import Adapter, _safety_net, adapt, make_training_pair, super_resolve

DATA = os.path.join(os.path.dirname(__file__), "data")
PIL_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "box": Image.BOX,
               "lanczos": Image.LANCZOS}


@pytest.fixture(scope="module")
def photo():
    return np.asarray(Image.open(os.path.join(DATA, "butterfly.png")).convert("RGB"))


# --- the degradation model -----------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PIL_FILTERS))
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_resizer_kernel_on_the_centre_grid_is_pillows_resize(photo, name, scale):
    """A Pillow resize at an integer factor is Eq. 1 with resizer_kernel on the centre grid:
    equal up to Pillow's 8-bit rounding between its two passes (Lanczos' lobes also clip
    there), away from the borders (Pillow renormalises its edge taps, Eq. 1 reflects)."""
    h, w = photo.shape[0] // scale * scale, photo.shape[1] // scale * scale
    hr = np.ascontiguousarray(photo[:h, :w])
    ref = np.asarray(Image.fromarray(hr).resize((w // scale, h // scale), PIL_FILTERS[name]))
    ours = make_lr(hr, Degradation(resizer_kernel(name, scale), name), scale)
    d = np.abs(ref.astype(int) - ours.astype(int))[4:-4, 4:-4]
    assert d.mean() < 0.45
    assert d.max() <= (4 if name == "lanczos" else 1)


@pytest.mark.parametrize("name", sorted(RESIZERS))
@pytest.mark.parametrize("scale", [2, 4])
def test_resizer_kernels_sum_to_one_and_the_device_takes_them(name, scale):
    k = resizer_kernel(name, scale)
    assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    assert abs(k.sum() - 1) < 1e-12
    assert kernel_to_fixed(k).sum() == 1 << 16


def test_resizer_phase_is_half_a_pixel_before_the_kept_one_for_even_scales():
    """Pillow centres output pixel i at input (i + 1/2) s - 1/2: for even s, half a pixel
    before the pixel the centre grid keeps (s i + s/2); for odd s on it."""
    for scale, centroid in ((2, -0.5), (4, -0.5), (3, 0.0)):
        k = resizer_kernel("bilinear", scale)
        r = np.arange(k.shape[0]) - k.shape[0] // 2
        assert abs((k.sum(axis=0) * r).sum() - centroid) < 1e-12


def test_random_degradation_is_a_function_of_the_generator():
    a = [random_degradation(np.random.default_rng(5), 4).describe() for _ in range(2)]
    assert a[0] == a[1]
    draws = [random_degradation(np.random.default_rng(i), 4) for i in range(300)]
    names = {d.name for d in draws}
    assert names == {"gauss"} | set(RESIZERS)
    assert 0.3 < np.mean([d.noise > 0 for d in draws]) < 0.7
    assert 0.3 < np.mean([d.jpeg is not None for d in draws]) < 0.7
    assert all(50 <= d.jpeg <= 95 for d in draws if d.jpeg is not None)
    assert {d.grid for d in draws} == {"centre"}


def test_corner_share_moves_only_gaussians_and_keeps_draws_without_it():
    """``p_corner`` = 0 leaves the generator's draws as before; 1 puts every Gaussian blur (and
    no resizer, centred by construction) on the corner grid."""
    for i in range(60):
        a = random_degradation(np.random.default_rng(i), 4)
        b = random_degradation(np.random.default_rng(i), 4, p_corner=0.0)
        assert a.describe() == b.describe() and np.array_equal(a.kernel, b.kernel)
        c = random_degradation(np.random.default_rng(i), 4, p_corner=1.0)
        assert c.grid == ("corner" if c.name == "gauss" else "centre")


# --- JPEG ------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(q=st.integers(1, 100), sub=st.sampled_from([0, 1, 2]))
def test_jpeg_quality_is_read_exactly_from_the_tables(tmp_path_factory, q, sub):
    path = tmp_path_factory.mktemp("j") / "a.jpg"
    img = np.random.default_rng(q).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(img).save(path, quality=q, subsampling=sub)
    assert jpeg_quality(path) == (q, sub)


def test_jpeg_quality_of_other_files_is_none(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    assert jpeg_quality(tmp_path / "a.png") is None
    assert jpeg_quality(tmp_path / "b.jpg") is None


def test_ijg_table_is_libjpegs():
    assert ijg_table(50)[:8].tolist() == [16, 11, 10, 16, 24, 40, 51, 61]
    assert ijg_table(100).max() == 1 and ijg_table(1).min() == 255


def test_jpeg_roundtrip_is_pillows_and_deterministic(photo):
    a = jpeg_roundtrip(photo[:40, :40], 60)
    assert (a == jpeg_roundtrip(photo[:40, :40], 60)).all()
    assert 0 < np.abs(a.astype(int) - photo[:40, :40]).mean() < 8
    assert jpeg_roundtrip(photo[:40, :40, 0], 60).shape == (40, 40)


# --- the son's noise (intsr.kernels.noise_u8) -------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), sigma_q8=st.integers(0, 64 * 256), seed=st.integers(0, 2**63 - 1),
       fill=st.sampled_from(["random", "zeros", "full"]))
def test_add_noise_u8_is_its_reference_bit_for_bit(n, sigma_q8, seed, fill):
    """Extremes included: 0 and 255 everywhere (saturation) and the largest sigma."""
    rng = np.random.default_rng(n)
    img = {"random": rng.integers(0, 256, n).astype(np.uint8),
           "zeros": np.zeros(n, np.uint8), "full": np.full(n, 255, np.uint8)}[fill]
    out = np.empty_like(img)
    add_noise_u8(img, sigma_q8, seed, out)
    assert (out == add_noise_u8_ref(img, sigma_q8, seed)).all()


@pytest.mark.parametrize("sigma", [1.0, 5.0, 10.0])
def test_son_noise_has_the_asked_standard_deviation(sigma):
    """Irwin-Hall with 12 terms, then rounding to a level: variance sigma^2 + 1/12."""
    img = np.full(200_000, 128, np.uint8)
    out = np.empty_like(img)
    add_noise_u8(img, noise_to_fixed(sigma), 3, out)
    d = out.astype(np.float64) - 128
    assert abs(d.mean()) < 0.05
    assert abs(d.std() - np.sqrt(sigma ** 2 + 1 / 12)) < 0.02 * sigma


def test_son_noise_is_the_same_for_any_thread_count():
    code = ("import numpy as np, numba; from intsr.kernels.noise_u8 import add_noise_u8; "
            "numba.set_num_threads(int(__import__('sys').argv[1])); "
            "a = np.arange(100_000, dtype=np.int64).astype(np.uint8); o = np.empty_like(a); "
            "add_noise_u8(a, 1280, 9, o); print(int(o.astype(np.int64) @ np.arange(o.size)))")
    outs = {subprocess.run([sys.executable, "-c", code, str(t)], capture_output=True,
                           text=True, check=True).stdout for t in (1, 2)}
    assert len(outs) == 1


def test_noise_to_fixed_refuses_what_the_kernel_cannot_take():
    assert noise_to_fixed(2.5) == 640
    for bad in (-1.0, float("nan"), 65.0):
        with pytest.raises(ValueError):
            noise_to_fixed(bad)


def test_the_son_is_degraded_like_its_image(photo):
    lr = np.ascontiguousarray(photo[:64, :64])
    k = kernel_to_fixed(resizer_kernel("bicubic", 4))
    clean = make_training_pair(lr, k, 4)
    noisy = make_training_pair(lr, k, 4, noise_q8=noise_to_fixed(5.0), seed=1)
    again = make_training_pair(lr, k, 4, noise_q8=noise_to_fixed(5.0), seed=1)
    other = make_training_pair(lr, k, 4, noise_q8=noise_to_fixed(5.0), seed=2)
    jpg = make_training_pair(lr, k, 4, jpeg=(50, 2))
    assert (noisy[1] == clean[1]).all()  # the target is the image itself
    assert (noisy[0] == again[0]).all() and (noisy[0] != other[0]).any()
    assert (noisy[0] != clean[0]).any() and (jpg[0] != clean[0]).any()


# --- the noise level estimate ----------------------------------------------------------------

def _smooth_scene():
    """Gradients, a soft blob and two hard edges: flat enough for the quiet blocks to exist
    (a textured photo reads 1-2 levels of 'noise' from its texture: docs/real-inputs.md)."""
    y, x = np.mgrid[:256, :256] / 256.0
    base = 0.3 + 0.4 * x * y + 0.2 * np.exp(-((x - 0.6) ** 2 + (y - 0.4) ** 2) * 20)
    base = base + 0.2 * (x > 0.3) - 0.15 * (y > 0.7)
    return (np.clip(np.stack([base, base * 0.8, base * 0.6], axis=-1), 0, 1) * 255).astype(
        np.uint8)


def test_noise_estimate_reads_clean_as_zero_and_noise_near_its_level():
    rng = np.random.default_rng(0)
    scene = _smooth_scene()
    deg = Degradation(resizer_kernel("bicubic", 2), "bicubic")
    assert estimate_noise(make_lr(scene, deg, 2)) == 0
    for sigma in (3.0, 5.0, 10.0):
        noisy = make_lr(scene, Degradation(deg.kernel, "bicubic", noise=sigma), 2, rng)
        est = estimate_noise(noisy) / 256
        assert 0.6 * sigma < est < 1.3 * sigma, est


def test_noise_estimate_of_tiny_and_flat_images():
    assert estimate_noise(np.zeros((5, 5, 3), np.uint8)) == 0
    assert estimate_noise(np.full((40, 40, 3), 255, np.uint8)) == 0
    assert estimate_chroma_noise(np.zeros((5, 5, 3), np.uint8)) == 0
    assert grid_prior(np.full((40, 40, 3), 255, np.uint8)) == ("centre", 0)


# --- blind mode's grid: a prior read from colour noise ----------------------------------------

def _quiet_blocks_ref(y, block, share):
    """blind._quiet_blocks in plain loops: Immerkaer's mask, block sums, the smallest sums."""
    h, w = y.shape
    r = [[abs(sum(m * int(y[i + a, j + b]) for (a, b), m in np.ndenumerate(
            np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]])))) for j in range(w - 2)]
         for i in range(h - 2)]
    bh, bw = (h - 2) // block, (w - 2) // block
    if bh == 0 or bw == 0:
        return 0, 0
    sums = sorted(sum(r[bi * block + a][bj * block + b] for a in range(block)
                      for b in range(block)) for bi in range(bh) for bj in range(bw))
    n = max(1, len(sums) // share)
    return sum(sums[:n]), n * block * block


@settings(max_examples=30, deadline=None)
@given(st.integers(3, 30), st.integers(3, 30), st.integers(0, 2**32 - 1))
def test_quiet_blocks_match_plain_loops_at_the_extremes(h, w, seed):
    """The integer core of both noise estimates, bit-exact against plain loops, on planes of
    luma (0-1020) and colour differences (-255..255) with their extremes."""
    from intsr.blind import NOISE_BLOCK, NOISE_SHARE, _quiet_blocks

    rng = np.random.default_rng(seed)
    for lo, hi in ((0, 1020), (-255, 255)):
        y = np.where(rng.random((h, w)) < 0.5, rng.choice([lo, hi], (h, w)),
                     rng.integers(lo, hi + 1, (h, w))).astype(np.int32)
        assert _quiet_blocks(y) == _quiet_blocks_ref(y, NOISE_BLOCK, NOISE_SHARE)


def test_colour_noise_reads_white_noise_per_channel_and_not_grey_noise():
    """estimate_chroma_noise: clean reads under a level, white noise of sigma in every channel
    near sigma; the same noise in all three channels (grey, no colour) reads as clean."""
    rng = np.random.default_rng(3)
    scene = _smooth_scene()[::2, ::2].astype(np.float64)
    assert estimate_chroma_noise(scene.astype(np.uint8)) < 256
    for sigma in (3.0, 5.0, 10.0):
        noisy = np.clip(np.rint(scene + rng.normal(0, sigma, scene.shape)), 0, 255)
        est = estimate_chroma_noise(noisy.astype(np.uint8)) / 256
        assert 0.7 * sigma < est < 1.3 * sigma, (sigma, est)
        grey = np.clip(np.rint(scene + rng.normal(0, sigma, scene.shape[:2])[..., None]), 0, 255)
        assert estimate_chroma_noise(grey.astype(np.uint8)) < 256


def test_grid_prior_reads_noisy_lossless_images_as_the_corner_grid():
    """Noise of 5 levels per channel, lossless: corner; clean, or the same saved as a JPEG
    (4:2:0 at 85, which removes colour noise): centre; a list: the mean reading."""
    rng = np.random.default_rng(4)
    scene = _smooth_scene()[::2, ::2].astype(np.float64)
    clean = scene.astype(np.uint8)
    noisy = np.clip(np.rint(scene + rng.normal(0, 5.0, scene.shape)), 0, 255).astype(np.uint8)
    assert grid_prior(noisy)[0] == "corner" and grid_prior(clean)[0] == "centre"
    assert grid_prior(jpeg_roundtrip(noisy, 85, 2))[0] == "centre"
    both = grid_prior([noisy, clean])[1]
    assert both == (grid_prior(noisy)[1] + grid_prior(clean)[1]) // 2


def test_adapt_and_sr_report_and_use_the_grid_they_chose():
    """Blind adapt and sr take the prior's grid (the same pixels as that grid given); a kernel
    given keeps Eq. 1's centre grid unless told; an adapter keeps its own; the report says how."""
    rng = np.random.default_rng(5)
    scene = _smooth_scene()[::4, ::4].astype(np.float64)
    noisy = np.clip(np.rint(scene + rng.normal(0, 6.0, scene.shape)), 0, 255).astype(np.uint8)
    rep = {}
    out = adapt(noisy, steps=1, report=rep)
    deg = rep["degradation"]
    assert deg["grid"] == "corner" and deg["grid_from"] == "prior" and deg["colour_noise"] > 3
    assert np.array_equal(out, adapt(noisy, steps=1, grid="corner"))
    assert not np.array_equal(out, adapt(noisy, steps=1, grid="centre"))
    assert np.array_equal(super_resolve(noisy), super_resolve(noisy, grid="corner"))
    rep = {}
    adapt(noisy, gaussian(1.6), steps=1, report=rep)
    assert rep["degradation"]["grid"] == "centre" and rep["degradation"]["grid_from"] == "default"
    rep = {}
    adapt(noisy, gaussian(1.6), steps=1, report=rep, grid="auto")
    assert rep["degradation"]["grid"] == "corner"
    rep = {}
    adapt(noisy, gaussian(1.6), steps=1, report=rep, adapter=Adapter(grid="centre"))
    assert rep["degradation"]["grid"] == "centre" and rep["degradation"]["grid_from"] == "adapter"
    with pytest.raises(InputError, match="grid"):
        adapt(noisy, steps=1, grid="middle")


# --- the safety net ----------------------------------------------------------------------------

def test_safety_net_keeps_bicubic_when_it_is_exact():
    rng = np.random.default_rng(0)
    up = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    ad = Adapter(scale=4)
    chosen, scores, _ = _safety_net(ad, (up, up.copy()), 4, "centre")
    assert chosen == "bicubic" and scores["bicubic"] == 0
    assert scores["adapted"] > 0 and scores["sr-weights"] > 0
    # without bicubic (a JPEG's check): the better network, the adapted one on a tie
    chosen, scores, _ = _safety_net(ad, (up, up.copy()), 4, "centre", with_bicubic=False)
    assert set(scores) == {"adapted", "sr-weights"}
    assert chosen == ("adapted" if scores["adapted"] <= scores["sr-weights"] else "sr-weights")


def test_a_jpegs_check_has_no_bicubic_candidate(photo):
    """The safety net of a JPEG input scores the adapted network and the direct-SR weights
    only; a lossless input's also bicubic."""
    lr = jpeg_roundtrip(np.ascontiguousarray(photo[:64, :64]), 80, 2)
    for jpeg, want in ((80, {"adapted", "sr-weights"}),
                       (None, {"adapted", "sr-weights", "bicubic"})):
        rep = {}
        adapt(lr, steps=1, report=rep, jpeg=jpeg)
        assert set(rep["check"]["l1"]) == want and rep["check"]["chosen"] in want


def test_blind_adapt_reports_its_check_and_degradation(photo):
    lr = np.ascontiguousarray(photo[:64, :64])
    rep = {}
    out = adapt(lr, steps=2, report=rep)
    check = rep["check"]
    assert check["chosen"] in ("adapted", "sr-weights", "bicubic")
    assert check["held_out_rows"] == 64 // 4
    assert set(check["l1"]) == {"adapted", "sr-weights", "bicubic"}
    assert rep["degradation"]["noise_estimated"] is True
    if check["chosen"] == "bicubic":
        assert (out == bicubic_upsample_u8(lr, 4)).all()
    told = adapt(lr, "bicubic", steps=2, report={})
    assert told.shape == out.shape


def test_told_adapt_runs_no_check_unless_asked(photo):
    lr = np.ascontiguousarray(photo[:64, :64])
    rep = {}
    adapt(lr, "lanczos", steps=1, report=rep, noise=2.0, jpeg=80)
    assert "check" not in rep
    assert rep["degradation"] == {"grid": "centre", "grid_from": "default", "noise": 2.0,
                                  "noise_estimated": False, "jpeg": 80, "subsampling": 2,
                                  "kernel": "lanczos"}
    rep = {}
    adapt(lr, "lanczos", steps=1, report=rep, check=True)
    assert "check" in rep


# --- the CLI -------------------------------------------------------------------------------------

def _run(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_says_when_the_prior_took_the_corner_grid(tmp_path):
    """`intsr sr` and blind `intsr adapt` on a noisy lossless image name the grid they bet on
    (and --json records it); told the grid, they say nothing."""
    rng = np.random.default_rng(6)
    scene = _smooth_scene()[::4, ::4].astype(np.float64)
    noisy = np.clip(np.rint(scene + rng.normal(0, 6.0, scene.shape)), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(tmp_path / "noisy.png")
    for cmd in (["sr", "--json", tmp_path / "s.json"],
                ["adapt", "--steps", "1", "--json", tmp_path / "r.json"]):
        res = _run(cmd[:1] + [tmp_path / "noisy.png", tmp_path / "out.png"] + cmd[1:])
        assert res.exit_code == 0, res.output
        assert "grid: corner (colour noise" in res.output
        rep = json.loads((tmp_path / ("s.json" if cmd[0] == "sr" else "r.json")).read_text())
        rep = rep["images"][0] if cmd[0] == "sr" else rep["degradation"]
        assert (rep["grid"], rep["grid_from"]) == ("corner", "prior") and rep["colour_noise"] > 3
        res = _run(cmd[:1] + [tmp_path / "noisy.png", tmp_path / "o2.png", "--grid", "centre"]
                   + cmd[1:])
        assert res.exit_code == 0 and "grid:" not in res.output, res.output
    rep = json.loads((tmp_path / "s.json").read_text())["images"][0]
    assert (rep["grid"], rep["grid_from"]) == ("centre", "given")
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["grid"] == rep["degradation"]["grid"] == "centre"
    assert rep["degradation"]["grid_from"] == "given"
    res = _run(["eval", tmp_path, "--kernel", "bicubic", "--grid", "auto"])
    assert res.exit_code != 0 and "auto" in res.output


def test_batches_take_the_grid_per_batch_for_adapt_and_per_image_for_sr(tmp_path):
    """A blind batch reads one grid from the images its estimate reads, a told batch keeps the
    centre grid; `sr` reads each image's own."""
    from intsr.jobs import adapt_paths, sr_paths

    rng = np.random.default_rng(7)
    scene = _smooth_scene()[::4, ::4]
    noisy = np.clip(np.rint(scene + rng.normal(0, 6.0, scene.shape)), 0, 255).astype(np.uint8)
    for name, img in (("a_noisy", noisy), ("b_noisy", noisy[::-1]), ("c_clean", scene)):
        Image.fromarray(np.ascontiguousarray(img)).save(tmp_path / f"{name}.png")
    two = [tmp_path / "a_noisy.png", tmp_path / "b_noisy.png"]
    rep = adapt_paths(two, tmp_path / "out", steps=1, report_path=tmp_path / "r.json",
                      adapt_on=two[1])
    assert (rep["grid"], rep["grid_from"]) == ("corner", "prior")
    assert rep["input"] == [str(p) for p in two]  # every input, not the one the estimate read
    rep = adapt_paths(two, tmp_path / "out2", "bicubic", steps=1)
    assert (rep["grid"], rep["grid_from"]) == ("centre", "default")
    rep = sr_paths([two[0], tmp_path / "c_clean.png"], tmp_path / "out3")
    assert [(e["grid"], e["grid_from"]) for e in rep["images"]] == \
        [("corner", "prior"), ("centre", "prior")]


def test_cli_reads_a_jpeg_inputs_quality_and_takes_named_resizers(photo, tmp_path):
    Image.fromarray(photo[:48, :48]).save(tmp_path / "in.jpg", quality=70)
    res = _run(["adapt", tmp_path / "in.jpg", tmp_path / "out.png", "--kernel", "bicubic",
                "--steps", "1", "--json", tmp_path / "r.json", "--quiet"])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["degradation"]["jpeg"] == 70 and rep["degradation"]["kernel"] == "bicubic"
    res = _run(["adapt", tmp_path / "in.jpg", tmp_path / "out2.png", "--kernel", "bicubic",
                "--steps", "1", "--jpeg", "none", "--json", tmp_path / "r2.json", "--quiet"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "r2.json").read_text())["degradation"]["jpeg"] is None


@pytest.mark.parametrize("args, message", [
    (["--noise", "loud"], "--noise must be a number"),
    (["--noise", "-2"], "noise must be a finite number"),
    (["--jpeg", "0"], "--jpeg must be a quality 1-100"),
    (["--jpeg", "high"], "--jpeg must be a quality 1-100"),
    (["--kernel", "sinc"], "not found"),
])
def test_cli_refuses_bad_degradations_in_one_line(photo, tmp_path, args, message):
    Image.fromarray(photo[:48, :48]).save(tmp_path / "in.png")
    res = _run(["adapt", tmp_path / "in.png", tmp_path / "out.png", "--quiet", *args])
    assert res.exit_code != 0
    assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "out.png").exists()


# --- the family estimator (intsr.blind) ------------------------------------------------------

def _family_estimator(tmp_path, family_bias, resizer_bias, outputs=None):
    """The shipped x4 estimator with a head widened to the family outputs: (u, v, w) as
    shipped, the family and resizer logits constant (biases only)."""
    from intsr.blind import FAMILY_OUTPUTS
    from intsr.weights import WEIGHTS_DIR

    z = dict(np.load(WEIGHTS_DIR / "estimator_x4.npz"))
    n = FAMILY_OUTPUTS if outputs is None else outputs
    w = np.zeros((z["head_w"].shape[0], n), np.float32)
    w[:, :3] = z["head_w"]
    b = np.zeros(n, np.float32)
    b[:3] = z["head_b"]
    if n > 3:
        b[3] = family_bias
        b[4:] = resizer_bias
    z["head_w"], z["head_b"] = w, b
    path = tmp_path / f"est_{n}_{family_bias}.npz"
    np.savez(path, **z)
    return path


def test_family_estimator_names_the_resizer_and_takes_its_taps(photo, tmp_path):
    from intsr.online import estimate_kernel

    lr = np.ascontiguousarray(photo[:64, :64])
    logits = np.zeros(len(RESIZERS), np.float32)
    logits[list(RESIZERS).index("box")] = 2.0
    est = estimate_kernel(lr, estimator=_family_estimator(tmp_path, 1.0, logits))
    assert est.resizer == "box" and est.index == -1
    assert (est.k_fixed == kernel_to_fixed(resizer_kernel("box", 4))).all()
    assert est.describe()["family"] == "resizer"
    rep = {}
    adapt(lr, estimator=_family_estimator(tmp_path, 1.0, logits), steps=1, report=rep)
    assert rep["weights"] != "meta.npz" and rep["degradation"]["kernel"] == "box"


def test_family_estimator_reading_a_gaussian_is_the_plain_estimator(photo, tmp_path):
    from intsr.online import estimate_kernel

    lr = np.ascontiguousarray(photo[:64, :64])
    gauss = estimate_kernel(lr, estimator=_family_estimator(tmp_path, -1.0, 0.0))
    plain = estimate_kernel(lr)
    assert gauss.resizer is None and gauss.index == plain.index
    assert gauss.uvw == plain.uvw and gauss.describe()["family"] == "gauss"


def test_an_estimator_head_of_another_width_is_refused(tmp_path):
    from intsr.blind import KernelEstimator
    from intsr.io import InputError

    with pytest.raises(InputError, match="neither"):
        KernelEstimator(_family_estimator(tmp_path, 0.0, 0.0, outputs=5))


def test_a_saved_resizer_kernel_reads_back_as_that_resizer(photo, tmp_path):
    """--save-kernel of a resizer estimate writes its taps; --kernel of them is that resizer
    again (the same weights and rate), so the blind run is reproducible from the file."""
    Image.fromarray(photo[:48, :48]).save(tmp_path / "in.png")
    np.save(tmp_path / "k.npy", resizer_kernel("lanczos", 4))
    res = _run(["adapt", tmp_path / "in.png", tmp_path / "out.png", "--kernel",
                tmp_path / "k.npy", "--steps", "1", "--json", tmp_path / "r.json", "--quiet"])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["degradation"]["kernel"] == "lanczos" and rep["weights"] != "meta.npz"


def test_the_safety_net_is_for_one_image(photo, tmp_path):
    for name in ("a.png", "b.png"):
        Image.fromarray(photo[:48, :48]).save(tmp_path / name)
    res = _run(["adapt", tmp_path / "a.png", tmp_path / "b.png", tmp_path / "out", "--kernel",
                "bicubic", "--check", "--quiet"])
    assert res.exit_code != 0 and "--check is for one input image" in res.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("mode", [[], ["--continual"]])
def test_a_batch_gives_each_son_its_own_image_noise(photo, tmp_path, mode):
    """--noise auto in a batch: each image's son gets that image's estimate (it had none), the
    levels in --json's son_noise; a noisy image reads noisier than its clean self, and the
    adapted outputs differ from a batch without noise."""
    lr = np.ascontiguousarray(photo[::4, ::4][:60, :60])
    noisy = np.clip(lr + np.random.default_rng(0).normal(0, 8, lr.shape), 0, 255).astype(np.uint8)
    Image.fromarray(lr).save(tmp_path / "clean.png")
    Image.fromarray(noisy).save(tmp_path / "noisy.png")
    ins = [str(tmp_path / "clean.png"), str(tmp_path / "noisy.png")]
    runs = {}
    for noise in ("auto", "0"):
        out, rep = tmp_path / f"out{noise}", tmp_path / f"r{noise}.json"
        res = CliRunner().invoke(main, ["adapt", *ins, str(out), "--kernel", "bicubic",
                                        "--steps", "2", "--noise", noise, "--json", str(rep),
                                        "--quiet", *mode])
        assert res.exit_code == 0, res.output
        runs[noise] = (json.loads(rep.read_text()), np.asarray(Image.open(out / "noisy.png")))
    levels = runs["auto"][0]["son_noise"]
    assert set(levels) == set(ins)
    assert levels[ins[1]] > levels[ins[0]] and levels[ins[1]] >= 4
    assert levels[ins[1]] == estimate_noise(noisy) / 256
    assert "son_noise" not in runs["0"][0]
    assert not np.array_equal(runs["auto"][1], runs["0"][1])


# --- which shipped weights blind mode adapts from -------------------------------------------

def _clean_and_noisy(photo):
    """A smooth 64 px LR image (Gaussian blur, x4: reads as clean and as a Gaussian) and the same
    with noise of 8 levels (reads as noisy)."""
    from intsr.floatpath.degrade import lr_image
    from intsr.floatpath.gaussian import gaussian

    lr = lr_image(np.ascontiguousarray(photo[:256, :256]), gaussian(1.6, 1.6, 0.0), 4)
    noisy = np.clip(lr + np.random.default_rng(1).normal(0, 8, lr.shape), 0, 255)
    return lr, noisy.astype(np.uint8)


def test_blind_mode_adapts_from_the_real_input_weights_only_for_degraded_images(photo):
    """adapts_from_meta and shipped_start: an estimated Gaussian on a clean image starts from
    blind mode's meta-learned point (meta_blind.npz), on a noisy image or a JPEG from the
    direct-SR weights trained over real inputs; a told kernel always from the paper's point
    (meta.npz), a resizer from the direct-SR weights."""
    from intsr.online import adapt_result
    from intsr.weights import shipped_config

    cfg = shipped_config(4)
    lr, noisy = _clean_and_noisy(photo)
    assert estimate_noise(lr) == 0 and estimate_noise(noisy) > 0
    assert adapt_result(lr, steps=1).weights == cfg["blind_weights"]
    assert adapt_result(noisy, steps=1).weights == cfg["sr_weights"]
    assert adapt_result(lr, steps=1, jpeg=85).weights == cfg["sr_weights"]
    assert adapt_result(lr, steps=1, noise=3.0).weights == cfg["sr_weights"]
    assert adapt_result(noisy, steps=1, noise=0.0).weights == cfg["blind_weights"]
    k = np.ones((4, 4)) / 16
    assert adapt_result(lr, k, steps=1).weights == cfg["weights"]
    assert adapt_result(noisy, k, steps=1, noise="auto").weights == cfg["weights"]
    assert adapt_result(noisy, "bicubic", steps=1).weights == cfg["sr_weights"]
    assert len({cfg["sr_weights"], cfg["weights"], cfg["blind_weights"]}) == 3
    # a scale without blind_weights (x2) adapts from its meta-learned point either way
    from intsr.weights import shipped_start
    assert "blind_weights" not in shipped_config(2)
    assert shipped_start(2, True, True) == shipped_start(2, True, False) == \
        shipped_config(2)["weights"]
    assert shipped_start(2, False, True) == shipped_config(2)["sr_weights"]


def test_cli_blind_route_is_the_librarys(photo, tmp_path):
    """`intsr adapt IN OUT` (one image, a batch) reports and runs the weights the library picks;
    the same output bytes as intsr.adapt."""
    from intsr.weights import shipped_config

    cfg = shipped_config(4)
    lr, noisy = _clean_and_noisy(photo)
    for name, img in (("clean", lr), ("noisy", noisy)):
        Image.fromarray(img).save(tmp_path / f"{name}.png")
        rep, out = tmp_path / f"{name}.json", tmp_path / f"{name}_out.png"
        res = _run(["adapt", tmp_path / f"{name}.png", out, "--steps", "1", "--json", rep,
                    "--quiet"])
        assert res.exit_code == 0, res.output
        want = cfg["blind_weights"] if name == "clean" else cfg["sr_weights"]
        assert json.loads(rep.read_text())["weights"] == want
        assert np.array_equal(np.asarray(Image.open(out)), adapt(img, steps=1))
    # the noisy run told what it did (kernel, grid, noise, weights, their rate, the check): the
    # same
    res = _run(["adapt", tmp_path / "noisy.png", tmp_path / "k_out.png", "--steps", "1",
                "--save-kernel", tmp_path / "k.npy", "--json", tmp_path / "k.json", "--quiet"])
    deg = json.loads((tmp_path / "k.json").read_text())["degradation"]
    assert deg["grid_from"] == "prior"
    res = _run(["adapt", tmp_path / "noisy.png", tmp_path / "told.png", "--steps", "1",
                "--kernel", tmp_path / "k.npy", "--noise", deg["noise"], "--grid", deg["grid"],
                "--check", "--weights", "weights/" + cfg["sr_weights"], "--lr", cfg["sr_lr"],
                "--quiet"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "told.png").read_bytes() == (tmp_path / "k_out.png").read_bytes()
    batch = tmp_path / "batch"
    batch.mkdir()
    Image.fromarray(noisy).save(batch / "a.png")
    res = _run(["adapt", batch, tmp_path / "bout", "--steps", "1", "--json",
                tmp_path / "b.json", "--quiet"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "b.json").read_text())["weights"] == cfg["sr_weights"]


# --- JPEG quality from pixels ------------------------------------------------------------------

def _small(photo):
    return np.asarray(Image.fromarray(photo).resize((photo.shape[1] // 3, photo.shape[0] // 3),
                                                    Image.BICUBIC))


@settings(max_examples=25, deadline=None)
@given(q=st.integers(35, 96), sub=st.sampled_from([0, 2]), noisy=st.booleans())
@example(q=93, sub=2, noisy=False)  # failed once: 4:2:0 read as 4:4:4
def test_jpeg_quality_of_a_png_that_was_a_jpeg_is_read_from_its_pixels(photo, q, sub, noisy):
    """blind.estimate_jpeg ("JPEG ghosts"): an image saved once as a JPEG and then kept as
    pixels reads as that quality and subsampling exactly, noisy or not before the save (4:2:0 at
    89-96 is where subsampling is read from the error ratio, not the deeper dip)."""
    from intsr.blind import estimate_jpeg

    img = _small(photo)
    if noisy:
        img = np.clip(img + np.random.default_rng(q).normal(0, 3, img.shape), 0, 255)
        img = img.astype(np.uint8)
    assert estimate_jpeg(jpeg_roundtrip(img, q, sub)) == (q, sub)


def test_an_image_never_saved_as_a_jpeg_reads_as_none(photo):
    from intsr.blind import estimate_jpeg

    img = _small(photo)
    noisy = np.clip(img + np.random.default_rng(0).normal(0, 5, img.shape), 0, 255)
    assert estimate_jpeg(img) is None
    assert estimate_jpeg(noisy.astype(np.uint8)) is None
    assert estimate_jpeg(img[:15, :40]) is None  # smaller than one 16-pixel block row
    # off the block grid (a crop of the JPEG by 3 pixels): the dip is gone, it reads as none
    assert estimate_jpeg(jpeg_roundtrip(img, 75, 2)[3:, 3:]) is None


def test_a_png_of_a_jpeg_gets_its_son_round_trip_and_route(photo, tmp_path):
    """--jpeg auto (the default) on a PNG that was a JPEG: the quality is read from its pixels,
    reported, given to the son, and the image adapts from the direct-SR weights in blind mode;
    --jpeg none turns it off; the library's jpeg="auto" does the same."""
    from intsr.online import adapt_result
    from intsr.weights import shipped_config

    cfg = shipped_config(4)
    lr = jpeg_roundtrip(_clean_and_noisy(photo)[0], 70, 2)
    Image.fromarray(lr).save(tmp_path / "in.png")
    for opt, want in (([], 70), (["--jpeg", "none"], None)):
        rep = tmp_path / "r.json"
        res = _run(["adapt", tmp_path / "in.png", tmp_path / "o.png", "--steps", "1", "--json",
                    rep, "--quiet", *opt])
        assert res.exit_code == 0, res.output
        r = json.loads(rep.read_text())
        assert r["degradation"]["jpeg"] == want
        assert r["weights"] == (cfg["sr_weights"] if want else cfg["blind_weights"])
    res = adapt_result(lr, steps=1, jpeg="auto")
    assert res.degradation["jpeg"] == 70 and res.degradation["subsampling"] == 2
    assert res.weights == cfg["sr_weights"]
    assert adapt_result(lr, steps=1).degradation["jpeg"] is None  # the library: None unless told
