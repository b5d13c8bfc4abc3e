"""Trainer tests on tiny configurations (a few steps of the real network on 32-48 px crops)."""
import os
import pickle
import shutil
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training import common  # noqa: E402
from training.cli import main  # noqa: E402
from training.meta import inner_adapt  # noqa: E402
from training.net import functional_forward  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _pretrain(images, ckpt, *extra):
    main(["pretrain", "--data", images, "--ckpt", ckpt, "--batch", "2", "--crop", "32",
          "--log-every", "1", "--seed", "3", *extra])


def _meta(images, ckpt, *extra):
    main(["meta", "--data", images, "--ckpt", ckpt, "--tasks", "2", "--crop", "32",
          "--inner-steps", "2", "--log-every", "1", "--seed", "5", *extra])


def _weights(ckpt):
    return common.load_checkpoint(ckpt)["model"]


@pytest.mark.parametrize("stage", ["pretrain", "meta"])
def test_killed_run_resumes_to_identical_weights(tiny_images, tmp_path, stage):
    run = _pretrain if stage == "pretrain" else _meta
    a, b = str(tmp_path / "a.pt"), str(tmp_path / "b.pt")
    run(tiny_images, a, "--steps", "4")
    run(tiny_images, b, "--steps", "4", "--stop-after", "2")
    assert common.load_checkpoint(b)["step"] == 2
    run(tiny_images, b, "--steps", "4")
    ca, cb = common.load_checkpoint(a), common.load_checkpoint(b)
    assert cb["step"] == 4
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k


def test_checkpoint_falls_back_to_previous_when_latest_is_corrupt(tiny_images, tmp_path):
    ck = str(tmp_path / "c.pt")
    _pretrain(tiny_images, ck, "--steps", "2", "--stop-after", "1")
    _pretrain(tiny_images, ck, "--steps", "2")
    with open(ck, "wb") as f:
        f.write(b"truncated")
    assert common.load_checkpoint(ck)["step"] == 1


def test_refuses_test_sets(tmp_path):
    d = tmp_path / "set5"
    d.mkdir()
    with pytest.raises(ValueError, match="test set"):
        _pretrain(str(d), str(tmp_path / "x.pt"), "--steps", "1")


def test_meta_records_alpha_and_order(tiny_images, tmp_path):
    ck = str(tmp_path / "m.pt")
    _meta(tiny_images, ck, "--steps", "1", "--first-order", "--alpha", "0.02")
    c = common.load_checkpoint(ck)
    assert c["alpha"] == 0.02 and c["first_order"] is True and c["inner_steps"] == 2


CKPT_KEYS = ["stage", "model", "opt", "torch_rng", "step", "wall", "history"]


@pytest.mark.parametrize("stage", ["pretrain", "meta"])
def test_train_loop_checkpoint_and_history(tiny_images, tmp_path, capsys, stage):
    """The one loop (common.train_loop): checkpoint contents, a history entry per logging step
    (and the last step), the progress lines."""
    run = _pretrain if stage == "pretrain" else _meta
    ck = str(tmp_path / "c.pt")
    run(tiny_images, ck, "--steps", "3", "--log-every", "2")
    c = common.load_checkpoint(ck)
    extra = [] if stage == "pretrain" else ["alpha", "inner_steps", "first_order"]
    assert list(c) == CKPT_KEYS + extra + ["args"]
    assert c["stage"] == stage and c["step"] == 3 and c["args"]["steps"] == 3
    assert [h[0] for h in c["history"]] == [2, 3]
    assert all(len(h) == (2 if stage == "pretrain" else 3) for h in c["history"])
    assert all(np.isfinite(v) for h in c["history"] for v in h)
    out = capsys.readouterr().out
    assert "step 2/3" in out and "step 3/3" in out and f"saved {ck} at step 3" in out
    assert ("lr=" if stage == "pretrain" else "beta=") in out
    assert (stage == "meta") == ("adapt_gain_last=" in out)


def test_save_atomic_keeps_previous_and_leaves_no_temporaries(tmp_path):
    path = str(tmp_path / "sub" / "x.pt")
    common.save_atomic({"v": 1}, path)
    common.save_atomic({"v": 2}, path)
    assert torch.load(path)["v"] == 2 and torch.load(path + ".prev")["v"] == 1
    # not picklable (AttributeError here, PicklingError on other Pythons): nothing may move
    with pytest.raises((AttributeError, pickle.PicklingError)):
        common.save_atomic({"v": lambda: 3}, path)
    assert torch.load(path)["v"] == 2 and torch.load(path + ".prev")["v"] == 1
    assert sorted(os.listdir(tmp_path / "sub")) == ["x.pt", "x.pt.prev"]


def test_second_order_inner_loop_matches_finite_differences():
    """Eq. 4: d/dtheta L_te(theta - alpha grad L_tr(theta)) including the Hessian term."""
    torch.manual_seed(0)
    chans = (3, 4, 3)
    theta = [torch.randn(chans[i + 1], chans[i], 3, 3, dtype=torch.float64) * 0.3
             for i in range(2)]
    x_tr, y_tr = torch.rand(1, 3, 6, 6, dtype=torch.float64), torch.rand(1, 3, 6, 6,
                                                                          dtype=torch.float64)
    x_te, y_te = torch.rand(1, 3, 8, 8, dtype=torch.float64), torch.rand(1, 3, 8, 8,
                                                                          dtype=torch.float64)

    def objective(params, first_order=False):
        w = inner_adapt(params, x_tr, y_tr, 2, 0.5, first_order)
        return torch.nn.functional.mse_loss(functional_forward(x_te, w), y_te)

    # MSE outer loss keeps the objective smooth enough for a central difference; the inner L1
    # is piecewise linear, so its Hessian term vanishes almost everywhere except through ReLU
    # and the composition, which the two-step loop exercises.
    params = [t.clone().requires_grad_(True) for t in theta]
    g_so = torch.autograd.grad(objective(params), params)
    params = [t.clone().requires_grad_(True) for t in theta]
    g_fo = torch.autograd.grad(objective(params, True), params)
    eps = 1e-6
    idx = (0, 1, 1, 2)
    tp = [t.clone() for t in theta]
    tm = [t.clone() for t in theta]
    tp[0][idx] += eps
    tm[0][idx] -= eps
    tp = [t.requires_grad_(True) for t in tp]
    tm = [t.requires_grad_(True) for t in tm]
    fd = (objective(tp) - objective(tm)).detach() / (2 * eps)
    assert abs(g_so[0][idx].item() - fd.item()) < 1e-5 * max(1.0, abs(fd.item()))
    assert not torch.allclose(g_so[0], g_fo[0])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
@pytest.mark.parametrize("stage", ["pretrain", "meta"])
def test_ddp_two_processes(tiny_images, tmp_path, stage):
    ck = str(tmp_path / f"{stage}.pt")
    extra = (["--batch", "2", "--crop", "32"] if stage == "pretrain"
             else ["--tasks", "1", "--crop", "32", "--inner-steps", "1"])
    cmd = ["torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=2", "-m", "training",
           stage, "--data", tiny_images, "--ckpt", ck, "--steps", "2", "--log-every", "1",
           *extra]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    c = common.load_checkpoint(ck)
    assert c["step"] == 2
    assert "step 2/2" in p.stdout


def test_masks_and_export_stages(tiny_images, kernel_file, tmp_path):
    import json

    from intsr.pruning import RATIOS
    from intsr.weights import load_masks, load_weights, save_weights_npz
    ck = str(tmp_path / "p.pt")
    _pretrain(tiny_images, ck, "--steps", "1")
    pt, npz, m = str(tmp_path / "w.pt"), str(tmp_path / "w.npz"), str(tmp_path / "masks.npz")
    main(["export", "--ckpt", ck, "--pt", pt, "--npz", npz])
    for a, b in zip(load_weights(pt), load_weights(npz), strict=True):
        np.testing.assert_array_equal(a, b)
    # --blend: T * checkpoint + (1 - T) * other, in the .pt and the .npz alike
    other = str(tmp_path / "other.npz")
    save_weights_npz(other, [w * 0 + 1 for w in load_weights(npz)])
    bpt, bnpz = str(tmp_path / "b.pt"), str(tmp_path / "b.npz")
    main(["export", "--ckpt", ck, "--pt", bpt, "--npz", bnpz, "--blend", other,
          "--share", "0.25"])
    for a, b, c in zip(load_weights(npz), load_weights(bpt), load_weights(bnpz), strict=True):
        np.testing.assert_allclose(b, 0.25 * a + 0.75, rtol=1e-6)
        np.testing.assert_array_equal(b, c)
    with pytest.raises(SystemExit, match="--share"):
        main(["export", "--ckpt", ck, "--npz", bnpz, "--blend", other, "--share", "1.5"])
    main(["masks", "--weights", pt, "--data", tiny_images, "--out", m, "--tasks", "2",
          "--crop", "48", "--steps", "2"])
    masks = load_masks(m)
    assert sorted(masks) == sorted(RATIOS)
    assert all(x.all() for x in masks[0.0])
    assert sum(x.sum() for x in masks[0.85]) < sum(x.sum() for x in masks[0.27])
    # the float evaluation with these masks, through the harness, JSON written atomically
    out = tmp_path / "eval.json"
    main(["eval", "--weights", pt, "--images", tiny_images, "--kernels", kernel_file,
          "--sgd-steps", "1", "--masks", m, "--ratio", "0.5", "--json", str(out)])
    res = json.loads(out.read_text())
    assert res["args"]["masks"] == m and res["args"]["ratio"] == 0.5
    assert {r["config"] for r in res["records"]} == {"bicubic", "fp-torch"}
    assert len(res["records"]) == 2 * 3 and all(np.isfinite(r["psnr"]) for r in res["records"])
    assert {r["kernel"] for r in res["records"]} == {"gauss_s1.0_7"}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_ddp_averages_second_order_meta_gradients():
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ddp_meta_sync.py")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    p = subprocess.run(["torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=2", script],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "rank 0 ok" in p.stdout and "rank 1 ok" in p.stdout


def test_masked_float_step_is_the_engines_backward():
    """The trainer's masked SGD (grad_masks hooks) and intsr's float reference (FloatNet, the
    engine's Eq. 9 backward: activation gradients over kept channels only) take the same step."""
    from intsr.arch import layer_shapes
    from intsr.floatpath.network import FloatNet
    rng = np.random.default_rng(0)
    hwio = [rng.normal(0, 0.1, s).astype(np.float32) for s in layer_shapes()]
    masks = [rng.random(s[3]) < 0.5 for s in layer_shapes()]
    masks[-1][:] = True
    x = rng.random((12, 10, 3)).astype(np.float32)
    y = rng.random((12, 10, 3)).astype(np.float32)
    ref = FloatNet(hwio, masks)
    ref.step(x, y, 0.1)
    w = [torch.tensor(a.transpose(3, 2, 0, 1).copy(), requires_grad=True) for a in hwio]
    gm = [torch.tensor(m.astype(np.float32)) for m in masks]
    xt, yt = (torch.tensor(a.transpose(2, 0, 1)[None].copy()) for a in (x, y))
    torch.nn.functional.l1_loss(functional_forward(xt, w, gm), yt).backward()
    for a, b, m in zip(w, ref.weights, masks, strict=True):
        new = (a - 0.1 * a.grad).detach().numpy().transpose(2, 3, 1, 0)
        np.testing.assert_allclose(new, b, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(a.grad.numpy()[~m], 0)


def test_real_input_stages_run_and_resume(tiny_images, tmp_path):
    """Issue 28's stages on tiny data: direct SR over the real-input model, MAML with the sons
    blind mode makes, the estimator with the kernel family; each checkpoints its step and
    the family estimator exports the widened head the device reads."""
    from intsr.blind import FAMILY_OUTPUTS, KernelEstimator

    ck = str(tmp_path / "real.pt")
    _pretrain(tiny_images, ck, "--steps", "2", "--degradation", "real")
    assert common.load_checkpoint(ck)["step"] == 2
    ck = str(tmp_path / "blind.pt")
    _meta(tiny_images, ck, "--steps", "1", "--degradation", "blind")
    assert common.load_checkpoint(ck)["step"] == 1
    ck, out = str(tmp_path / "est.pt"), str(tmp_path / "est.npz")
    args = ["estimator", "--family", "--data", tiny_images, "--ckpt", ck, "--batch", "2",
            "--crop", "32", "--scale", "4", "--seed", "3"]
    main(args + ["--steps", "1", "--init", os.path.join(ROOT, "weights", "estimator_x4.npz")])
    main(args + ["--steps", "1", "--export", out])
    assert np.load(out)["head_w"].shape == (32, FAMILY_OUTPUTS)
    assert KernelEstimator(out, scale=4).resizer_taps is not None


def test_family_estimator_clean_draws_blur_only():
    """``estimator --family --clean``: every draw is a blur alone (no noise, no JPEG), half
    Gaussians half resizers as without it; without it some draws are noisy or JPEGs."""
    import argparse

    from training.estimator import family_draw

    def draws(clean):
        args = argparse.Namespace(scale=4, sigma_min=0.6, sigma_max=3.2, aniso=0.5, clean=clean)
        rng = np.random.default_rng(5)
        return [family_draw(rng, args) for _ in range(200)]

    clean = draws(True)
    assert all(d.noise == 0 and d.jpeg is None for d, _ in clean)
    assert 60 < sum(t[3] == 1 for _, t in clean) < 140
    assert any(d.noise > 0 or d.jpeg is not None for d, _ in draws(False))


@pytest.mark.parametrize("told", [0.0, 0.5, 1.0])
def test_blind_meta_mixes_the_papers_tasks_in_the_told_share(monkeypatch, told):
    """``--degradation blind --told P``: a share P of the tasks are the paper's (a Gaussian,
    the son made with the true kernel), the rest blind mode's (data.task_blind)."""
    import argparse

    from training import data, meta

    calls = {"blind": 0, "told": 0}

    def fake(kind):
        def f(*a, **k):
            calls[kind] += 1
            return [np.zeros((4, 4, 3))] * 4
        return f

    monkeypatch.setattr(data, "task_blind", fake("blind"))
    monkeypatch.setattr(data, "task", fake("told"))
    sampler = data.CropSampler([np.zeros((32, 32, 3), np.uint8)], None)
    args = argparse.Namespace(tasks=200, degradation="blind", told=told, corner=0.0, clean=False,
                              crop=16, scale=4, sigma_min=0.8, sigma_max=3.0, grid="centre")
    meta.make_tasks(sampler, args, np.random.default_rng(0), estimator=None)
    assert calls["blind"] + calls["told"] == 200
    assert abs(calls["told"] / 200 - told) < 0.1


@pytest.mark.parametrize("clean", [False, True])
def test_blind_meta_clean_tasks_are_blur_only(monkeypatch, clean):
    """``--degradation blind --clean``: blind mode's tasks are drawn blur only (Gaussians and
    resizers, no noise, no JPEG), as the images blind mode adapts from the meta point are."""
    from PIL import Image

    from intsr.blind import estimator
    from training import data

    hr = np.asarray(Image.open(os.path.join(os.path.dirname(__file__), "..", "data",
                                            "butterfly.png")).convert("RGB"))[:128, :128]
    drawn, make_lr = [], data.make_lr

    def spy(img, deg, scale, rng):
        drawn.append(deg)
        return make_lr(img, deg, scale, rng)

    monkeypatch.setattr(data, "make_lr", spy)
    rng = np.random.default_rng(3)
    for _ in range(16):
        data.task_blind(np.ascontiguousarray(hr), 4, rng, estimator(4), clean=clean)
    lrs = drawn[0::2]  # each task makes its LR, then its son
    degraded = sum(d.noise > 0 or d.jpeg is not None for d in lrs)
    assert (degraded == 0) if clean else degraded > 0
    assert {d.name == "gauss" for d in lrs} == {True, False}

