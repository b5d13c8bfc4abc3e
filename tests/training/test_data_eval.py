"""One helper per fact: the trainer's LR images are intsr's ``lr_image``, its architecture is
``intsr.arch``, its ratios ``intsr.pruning.RATIOS``, and its float evaluation is a runner of
the one harness (``intsr.evaluate``)."""
import os
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from intsr import evaluate as harness  # noqa: E402
from intsr.arch import CHANNELS, oihw_shapes  # noqa: E402
from intsr.floatpath.degrade import bicubic_upsample, degrade, lr_image  # noqa: E402
from intsr.io import read_kernel  # noqa: E402
from intsr.pruning import RATIOS  # noqa: E402
from training import data  # noqa: E402
from training.cli import build_parser  # noqa: E402
from training.evaluate import load_hwio, torch_fp_runner  # noqa: E402
from training.net import SRNet  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tie_image():
    """Columns alternating 2 and 3: a horizontal [0.5, 0.5] kernel gives exactly 2.5 levels."""
    hr = np.zeros((16, 16, 3), np.uint8)
    hr[:, 0::2], hr[:, 1::2] = 2, 3
    return hr, np.array([[0.5, 0.5]])


def test_lr_images_are_lr_image_rounded_half_up():
    hr, k = _tie_image()
    raw = degrade(hr / 255.0, k, 2) * 255
    assert np.all(raw == 2.5)  # an exact tie: half up gives 3, ties-to-even would give 2
    lr = lr_image(hr, k, 2)
    assert np.all(lr == 3) and np.all(np.round(raw) == 2)
    x, y = data.sr_pair(hr, 2, k)
    np.testing.assert_array_equal(x, bicubic_upsample(lr / 255.0, 2))
    np.testing.assert_array_equal(y, hr / 255.0)
    x_tr, y_tr, x_te, y_te = data.task(hr, k, 2)
    np.testing.assert_array_equal(y_tr * 255, lr)
    np.testing.assert_array_equal(x_tr, bicubic_upsample(lr_image(lr, k, 2) / 255.0, 2))
    np.testing.assert_array_equal(x_te, bicubic_upsample(lr / 255.0, 2))
    np.testing.assert_array_equal(y_te, hr / 255.0)


def test_task_lr_and_son_are_lr_image_on_real_crops():
    rng = np.random.default_rng(1)
    hr = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    k = data.random_kernel(rng)
    x_tr, y_tr, x_te, _ = data.task(hr, k, 4)
    lr = lr_image(hr, k, 4)
    np.testing.assert_array_equal(np.round(y_tr * 255), lr)
    np.testing.assert_array_equal(x_tr, bicubic_upsample(lr_image(lr, k, 4) / 255.0, 4))
    np.testing.assert_array_equal(data.sr_pair(hr, 4, k)[0], x_te)
    assert not hasattr(data, "quantize8")


def test_network_and_ratios_come_from_intsr():
    net = SRNet()
    assert net.channels == tuple(CHANNELS)
    assert [tuple(c.weight.shape) for c in net.convs] == oihw_shapes()
    args = build_parser().parse_args(["masks", "--weights", "w", "--data", "d", "--out", "o"])
    assert args.ratios == list(RATIOS)
    for name in sorted(os.listdir(os.path.join(ROOT, "training"))):
        if name.endswith(".py"):
            with open(os.path.join(ROOT, "training", name)) as f:
                src = f.read()
            assert "0.27" not in src and "CHANNELS = " not in src, name


def test_eval_needs_images():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "--weights", "w.pt", "--kernels", "k.npy"])


def _weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "w.pt"
    torch.save(SRNet().state_dict(), path)
    return load_hwio(str(path))


@pytest.mark.slow
def test_torch_runner_through_the_harness(tiny_images, kernel_file, tmp_path):
    w = _weights(tmp_path)
    kernels = [("k", read_kernel(kernel_file))]
    rng = np.random.default_rng(0)
    masks = [rng.random(c) < 0.5 for c in CHANNELS[1:]]
    masks[-1][:] = True
    recs = list(harness.evaluate(tiny_images, kernels, weights=w, masks=masks, lr=0.01,
                                 scale=4, steps=3,
                                 configs=("bicubic", "fp", "fp-torch"),
                                 runners={"fp-torch": torch_fp_runner}))
    assert len(recs) == 3 * 3
    for r in recs:
        assert np.isfinite(r["psnr_init"]) and np.isfinite(r["psnr"]), r
    by = {(r["image"], r["config"]): r for r in recs}
    for (img, cfg), r in by.items():
        if cfg == "fp-torch":  # the same float steps as the harness's NumPy reference
            assert abs(r["psnr"] - by[img, "fp"]["psnr"]) < 0.02
            assert abs(r["psnr_init"] - by[img, "fp"]["psnr_init"]) < 0.02
            assert r["psnr"] != r["psnr_init"]


@pytest.mark.slow
def test_torch_runner_zero_steps_and_masks(tiny_images, kernel_file, tmp_path):
    w = _weights(tmp_path)
    cases = harness.make_cases(harness.load_hr(tiny_images, 4)[:1], read_kernel(kernel_file), 4)
    case = cases[0]
    sr0, sr, macs = torch_fp_runner(case, harness.Setup(w, None, 0.01, 4, 0, cases))
    np.testing.assert_array_equal(sr0, sr)
    assert sr.dtype == np.float64 and sr.shape == case.hr.shape and macs == 0
    assert sr.min() >= 0 and sr.max() <= 1
    # masks are bool arrays, as the harness passes them; all-True masks are no masks
    masks = [np.ones(c, bool) for c in CHANNELS[1:]]
    a = torch_fp_runner(case, harness.Setup(w, masks, 0.01, 4, 2, cases))
    b = torch_fp_runner(case, harness.Setup(w, None, 0.01, 4, 2, cases))
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], a[0])


def test_no_machine_specific_paths():
    """Docs, model card and trainer name data relative to the repository, never absolute."""
    files = [os.path.join(ROOT, "docs", "training.md"),
             os.path.join(ROOT, "weights", "README.md")]
    for d in ("training", os.path.join("tests", "training")):
        files += [os.path.join(ROOT, d, n) for n in sorted(os.listdir(os.path.join(ROOT, d)))
                  if n.endswith((".py", ".md"))]
    pattern = re.compile(r"(?<![\w.])/(?:" + "|".join(["wo" + "rk", "home", "root", "mnt"])
                         + r")/")
    for path in files:
        with open(path) as f:
            for i, line in enumerate(f, 1):
                assert not pattern.search(line), f"{path}:{i}: {line.strip()}"


def test_training_data_follows_the_grid():
    """--grid corner: LR images, sons and network inputs on MZSR's grid, as the device makes
    them with intsr adapt --grid corner."""
    from intsr.floatpath.degrade import bicubic_upsample, lr_image
    from training import data
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    k = data.gaussian(1.3, size=7)
    x, y = data.sr_pair(hr, 2, k, "corner")
    lr = lr_image(hr, k, 2, "corner")
    np.testing.assert_array_equal(x, bicubic_upsample(lr / 255.0, 2, grid="corner"))
    x_tr, y_tr, x_te, _ = data.task(hr, k, 4, "corner")
    np.testing.assert_array_equal(y_tr * 255, lr_image(hr, k, 4, "corner"))
    assert not np.array_equal(x_te, data.task(hr, k, 4)[2])
