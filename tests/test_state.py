"""Learned state that persists (intsr.state) and the batch modes of `intsr adapt` / `intsr sr`:
save, reuse and resume are bit-exact; a state file is plain arrays (no pickle)."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli.main import main
from intsr.floatpath.convert import kernel_to_fixed
from intsr.online import Adapter, sr_turns
from intsr.state import FORMAT, load_state, save_state

from helpers import gaussian


def _turns(img):
    """The self-ensemble `intsr adapt --kernel k.npy` runs for ``img`` (the folder's kernel)."""
    return sr_turns(kernel_to_fixed(gaussian(1.6, 13)), 4, "centre", "auto", img.shape)


def _run(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res


@pytest.fixture(scope="module")
def folder(tmp_path_factory, butterfly_lr):
    d = tmp_path_factory.mktemp("batch")
    for i, (y, x) in enumerate([(0, 0), (8, 4), (16, 12)]):
        Image.fromarray(np.ascontiguousarray(butterfly_lr[y:y + 44, x:x + 48])).save(
            d / f"im{i}.png")
    np.save(d.parent / "k.npy", gaussian(1.6, 13))
    return d


@pytest.mark.slow
def test_save_then_resume_equals_one_run_and_sr_reproduces(folder, tmp_path):
    """adapt 5 steps + save + adapt 5 more from the state == adapt 10 in one go, bit for bit;
    `intsr sr --weights STATE` reproduces the adapted output bit for bit (with the same
    self-ensemble: the transpose, which the Gaussian allows; sr alone would take all eight)."""
    img, k = folder / "im0.png", folder.parent / "k.npy"
    _run("adapt", img, tmp_path / "ten.png", "--kernel", k, "--steps", 10, "--quiet",
         "--save-state", tmp_path / "ten.npz")
    _run("adapt", img, tmp_path / "five.png", "--kernel", k, "--steps", 5, "--quiet",
         "--save-state", tmp_path / "five.npz")
    _run("adapt", img, tmp_path / "five5.png", "--kernel", k, "--steps", 5, "--quiet",
         "--weights", tmp_path / "five.npz", "--save-state", tmp_path / "five5.npz")
    ten, resumed = load_state(tmp_path / "ten.npz"), load_state(tmp_path / "five5.npz")
    for a, b in zip(ten.weights, resumed.weights, strict=True):
        assert a.scale == b.scale
        np.testing.assert_array_equal(a.value, b.value)
    assert (ten.steps, resumed.steps) == (10, 10) and ten.kernel_sha256 == resumed.kernel_sha256
    assert np.array_equal(np.asarray(Image.open(tmp_path / "ten.png")),
                          np.asarray(Image.open(tmp_path / "five5.png")))
    _run("sr", img, tmp_path / "again.png", "--weights", tmp_path / "ten.npz", "--quiet",
         "--ensemble", 2)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "ten.png")),
                          np.asarray(Image.open(tmp_path / "again.png")))


def test_state_file_is_plain_arrays_and_checked(folder, tmp_path):
    ad = Adapter()
    ad.learn([ad.pair(np.asarray(Image.open(folder / "im1.png")), gaussian(1.6))], 2)
    save_state(tmp_path / "s.npz", ad.state())
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        assert str(z["format"]) == FORMAT and z["w1"].dtype == np.int32
        assert z["base"] == "meta.npz" and int(z["steps"]) == 2
        files = {k: z[k] for k in z.files}
    bad = dict(files, w3=files["w3"].astype(np.int64))
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(ValueError, match="w3"):
        load_state(tmp_path / "bad.npz")
    short = {k: v for k, v in files.items() if k != "m8"}
    np.savez(tmp_path / "short.npz", **short)
    res = CliRunner().invoke(main, ["sr", str(folder / "im0.png"), str(tmp_path / "o.png"),
                                    "--weights", str(tmp_path / "short.npz")])
    assert res.exit_code == 1 and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.png").exists()
    res = CliRunner().invoke(main, ["sr", str(folder / "im0.png"), str(tmp_path / "o.png"),
                                    "--weights", str(tmp_path / "s.npz"), "--scale", "2"])
    assert res.exit_code == 1 and "adapted for x4" in res.stderr


@pytest.mark.slow
def test_continual_batch_is_image_by_image_adaptation(folder, tmp_path):
    """--continual: each image adapts `steps` steps starting where the previous one ended, and
    is super-resolved with what has been learned so far."""
    k = folder.parent / "k.npy"
    _run("adapt", folder, tmp_path / "out", "--kernel", k, "--steps", 2, "--continual",
         "--quiet", "--json", tmp_path / "r.json", "--save-state", tmp_path / "s.npz")
    ad = Adapter()
    for i in range(3):
        img = np.asarray(Image.open(folder / f"im{i}.png"))
        ad.learn([ad.pair(img, gaussian(1.6, 13))], 2)
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / f"im{i}.png")),
                                      ad.super_resolve(img, _turns(img)))
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["mode"] == "continual" and len(report["images"]) == 3
    assert report["images_per_s"] > 0 and report["output_mp_per_s"] > 0
    assert load_state(tmp_path / "s.npz").steps == 6


@pytest.mark.slow
def test_batch_once_over_windows_and_adapt_on(folder, tmp_path):
    k = folder.parent / "k.npy"
    _run("adapt", folder / "im0.png", folder / "im1.png", tmp_path / "a", "--kernel", k,
         "--steps", 3, "--window", 32, "--quiet", "--save-state", tmp_path / "a.npz")
    ad = Adapter()
    imgs = [np.asarray(Image.open(folder / f"im{i}.png")) for i in range(2)]
    ad.learn([ad.pair(im, gaussian(1.6, 13), max_side=32) for im in imgs], 3)
    for i, im in enumerate(imgs):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a" / f"im{i}.png")),
                                      ad.super_resolve(im, _turns(im)))
    _run("adapt", folder, tmp_path / "b", "--kernel", k, "--steps", 3, "--adapt-on",
         folder / "im2.png", "--quiet")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["im0.png", "im1.png", "im2.png"]
    _run("sr", folder, tmp_path / "c", "--quiet")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["im0.png", "im1.png", "im2.png"]


def test_batch_refuses_before_any_work(folder, tmp_path):
    k = folder.parent / "k.npy"
    (tmp_path / "file.png").write_bytes(b"x")
    for args, needle in [([folder, tmp_path / "file.png"], "must be a folder"),
                         ([folder / "im0.png", folder / "im0.png", tmp_path / "d"],
                          "same output"),
                         ([folder / "im0.png", tmp_path / "o.png", "--continual"],
                          "several inputs"),
                         ([folder, folder], "overwrite an input")]:
        res = CliRunner().invoke(main, ["adapt"] + [str(a) for a in args] + ["--kernel", str(k)])
        assert res.exit_code == 1 and needle in res.stderr, res.output
    assert not (tmp_path / "d").exists()  # refused before making anything


@pytest.mark.slow
def test_eval_and_info_accept_a_state(folder, tmp_path):
    """`intsr eval --weights STATE` starts int8-ours from the state's masters: at 0 steps it
    scores exactly what `intsr sr --weights STATE` writes."""
    from intsr.evaluate import load_hr
    from intsr.floatpath.degrade import lr_image
    from intsr.floatpath.metrics import psnr_y

    from helpers import DATA
    k = folder.parent / "k.npy"
    _run("adapt", folder / "im0.png", tmp_path / "o.png", "--kernel", k, "--steps", 3,
         "--quiet", "--save-state", tmp_path / "s.npz")
    _run("eval", DATA, "--kernel", k, "--steps", 0, "--config", "int8-ours", "--quiet",
         "--weights", tmp_path / "s.npz", "--json", tmp_path / "r.json")
    recs = {r["image"]: r for r in json.loads((tmp_path / "r.json").read_text())["records"]}
    name, hr = load_hr(DATA, 4)[0]
    Image.fromarray(lr_image(hr, np.load(k), 4)).save(tmp_path / "lr.png")
    _run("sr", tmp_path / "lr.png", tmp_path / "sr.png", "--weights", tmp_path / "s.npz",
         "--quiet", "--ensemble", 1)  # the harness scores one pass
    sr = np.asarray(Image.open(tmp_path / "sr.png"))
    assert recs[name]["psnr_init"] == psnr_y(sr / 255.0, hr / 255.0, 4)
    assert "adapted state: x4, 3 steps from meta.npz" in _run("info", tmp_path / "s.npz").output
