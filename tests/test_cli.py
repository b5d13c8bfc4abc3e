"""The real CLI on good and bad input: one line on stderr, non-zero exit, no traceback, OUT
untouched."""
import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli.main import main

from helpers import DATA, WEIGHTS, gaussian

SENTINEL = b"previous contents"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (24, 28, 3), dtype=np.uint8)).save(d / "lr.png")
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(d / "tiny.png")
    Image.fromarray(rng.integers(0, 65535, (24, 24), dtype=np.uint16)).save(d / "deep.png")
    rgba = rng.integers(0, 256, (20, 20, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    good = (d / "lr.png").read_bytes()
    (d / "truncated.png").write_bytes(good[: len(good) // 2])
    (d / "text.png").write_text("not an image")
    np.save(d / "k.npy", gaussian(1.6, 7))
    np.save(d / "k_unnorm.npy", gaussian(1.6, 7) * 3)
    np.save(d / "k_nan.npy", np.full((5, 5), np.nan))
    np.save(d / "k_inf.npy", np.full((5, 5), np.inf))
    np.save(d / "k_zero.npy", np.zeros((5, 5)))
    np.save(d / "k_neg.npy", -gaussian(1.6, 5))
    np.save(d / "k_1d.npy", np.ones(5) / 5)
    np.save(d / "k_big.npy", np.ones((41, 41)) / 41 ** 2)
    np.save(d / "k_obj.npy", np.array([[1.0, None]], dtype=object), allow_pickle=True)
    (d / "k_garbage.npy").write_bytes(b"\x93NUMPY garbage")
    (d / "k_garbage.mat").write_bytes(b"MATLAB 5.0 garbage" * 10)
    from scipy.io import savemat
    savemat(d / "k_mzsr.mat", {"kernel": gaussian(1.6, 7)})
    savemat(d / "k_kgan.mat", {"Kernel": gaussian(1.6, 7)})
    savemat(d / "k_nokey.mat", {"other": gaussian(1.6, 7)})
    (d / "weights_bad.npz").write_bytes(b"PK\x03\x04 broken zip")
    np.savez(d / "weights_wrongshape.npz", conv1=np.zeros((3, 3)))
    # A .pt-like zip whose pickle runs code when loaded by a plain unpickler.
    marker = d / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with zipfile.ZipFile(d / "evil.pt", "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"convs.0.weight": Evil()}))
    return d


def _run(args, out=None):
    if out is not None:
        out.write_bytes(SENTINEL)
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res


def _assert_clean_failure(res, out=None, needle=None):
    assert res.exit_code != 0
    assert res.exception is None or isinstance(res.exception, SystemExit)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    if needle:
        assert needle.lower() in lines[0].lower(), lines[0]
    if out is not None:
        assert out.read_bytes() == SENTINEL


BAD = [
    (["missing.png", "k.npy"], "not found"),
    (["truncated.png", "k.npy"], "not a readable image"),
    (["text.png", "k.npy"], "not a readable image"),
    (["deep.png", "k.npy"], "16-bit"),
    (["tiny.png", "k.npy"], "too small"),
    (["lr.png", "k_nan.npy"], "nan"),
    (["lr.png", "k_inf.npy"], "nan or inf"),
    (["lr.png", "k_zero.npy"], "all zero"),
    (["lr.png", "k_neg.npy"], "sums to"),
    (["lr.png", "k_1d.npy"], "2-d"),
    (["lr.png", "k_big.npy"], "larger than the image"),
    (["lr.png", "k_obj.npy"], "kernel"),
    (["lr.png", "k_garbage.npy"], "not a valid"),
    (["lr.png", "k_garbage.mat"], "not a valid"),
    (["lr.png", "k_nokey.mat"], "no 'kernel'"),
    (["lr.png", "missing.npy"], "not found"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[f"{a[0]}-{a[1]}" for a, _ in BAD])
def test_bad_image_or_kernel(files, tmp_path, args, needle):
    out = tmp_path / "out.png"
    res = _run(["adapt", files / args[0], out, "--kernel", files / args[1], "--quiet"], out)
    _assert_clean_failure(res, out, needle)


@pytest.mark.parametrize("extra,needle", [
    (["--steps", "-1"], "steps"), (["--scale", "1"], "scale"), (["--prune", "0.33"], "prun"),
    (["--weights", "missing.npz"], "no such weights file"), (["--weights", "weights_bad.npz"], ""),
    (["--weights", "weights_wrongshape.npz"], ""), (["--lr", "-1"], "learning rate"),
    (["--lr", "nan"], "learning rate")])
def test_bad_options(files, tmp_path, extra, needle):
    out = tmp_path / "out.png"
    extra = [str(files / e) if e.endswith((".npz", ".pt")) else e for e in extra]
    res = _run(["adapt", files / "lr.png", out, "--kernel", files / "k.npy", "--quiet"] + extra,
               out)
    _assert_clean_failure(res, out, needle)


def test_hostile_pickle_weights_run_nothing(files, tmp_path):
    out = tmp_path / "out.png"
    res = _run(["adapt", files / "lr.png", out, "--kernel", files / "k.npy", "--weights",
                files / "evil.pt", "--quiet"], out)
    _assert_clean_failure(res, out)
    assert not (files / "pwned").exists()


def test_unwritable_output_is_refused_before_work(files, tmp_path):
    res = _run(["adapt", files / "lr.png", tmp_path / "nodir" / "o.png", "--kernel",
                files / "k.npy"])
    _assert_clean_failure(res, None, "does not exist")
    res = _run(["adapt", files / "lr.png", tmp_path / "o.xyz", "--kernel", files / "k.npy"])
    _assert_clean_failure(res, None, "must end in")


@pytest.mark.parametrize("kernel", ["k.npy", "k_mzsr.mat", "k_kgan.mat"])
def test_adapt_writes_output_and_report(files, tmp_path, kernel):
    out, rep = tmp_path / "sr.png", tmp_path / "r.json"
    res = _run(["adapt", files / "lr.png", out, "--kernel", files / kernel, "--steps", "2",
                "--json", rep])
    assert res.exit_code == 0, res.output
    assert Image.open(out).size == (112, 96)
    report = json.loads(rep.read_text())
    assert len(report["losses"]) == 2 and report["macs"] > 0 and report["peak_bytes"] > 0
    assert set(report["seconds"]) == {"load", "adapt", "sr"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_unnormalised_kernel_warns(files, tmp_path):
    res = _run(["adapt", files / "lr.png", tmp_path / "o.png", "--kernel",
                files / "k_unnorm.npy", "--steps", "0", "--quiet"])
    assert res.exit_code == 0
    assert "normalised" in res.stderr


def test_rgba_keeps_alpha_and_sr_and_info(files, tmp_path):
    res = _run(["sr", files / "rgba.png", tmp_path / "o.png", "--quiet"])
    assert res.exit_code == 0, res.output
    im = Image.open(tmp_path / "o.png")
    assert im.mode == "RGBA" and im.size == (80, 80)
    res = _run(["info", WEIGHTS / json.load(open(WEIGHTS / "default.json"))["scales"]["4"]
                ["weights"]])
    assert res.exit_code == 0 and "224,640 weights" in res.output


@pytest.mark.slow
def test_example_through_a_real_process(tmp_path):
    """The README's first command, as a user runs it."""
    out = tmp_path / "example_sr.png"
    res = subprocess.run([sys.executable, "-m", "cli.main", "adapt", "--example", str(out),
                          "--steps", "2", "--quiet"], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    assert Image.open(out).size == (384, 320)
    bad = subprocess.run([sys.executable, "-m", "cli.main", "adapt", "nope.png", str(out),
                          "--kernel", "nope.npy"], capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_eval_table_and_json(tmp_path):
    """`intsr eval` on the bundled test images: a table row per configuration, JSON records,
    integer and float paths within a few hundredths of a dB of each other."""
    np.save(tmp_path / "k.npy", gaussian(1.6))
    js, md = tmp_path / "e.json", tmp_path / "e.md"
    res = _run(["eval", DATA, "--kernel", tmp_path / "k.npy", "--steps", "3",
                "--config", "bicubic", "--config", "fp", "--config", "int8-ours",
                "--json", js, "--markdown", md, "--quiet"])
    assert res.exit_code == 0, res.output
    recs = json.loads(js.read_text())["records"]
    assert len(recs) == 2 * 3
    by = {(r["image"], r["config"]): r for r in recs}
    for img in ("butterfly", "bridge_crop"):
        # The meta-learned default is a starting point for the steps, not an SR by itself.
        assert by[(img, "int8-ours")]["psnr"] > by[(img, "int8-ours")]["psnr_init"] + 1
        print(img, {c: round(by[(img, c)]["psnr"], 3) for c in ("bicubic", "fp", "int8-ours")})
        assert abs(by[(img, "int8-ours")]["psnr"] - by[(img, "fp")]["psnr"]) < 0.1
    assert "| int8-ours |" in md.read_text()
    bad = _run(["eval", DATA, "--kernel", tmp_path / "k.npy", "--config", "nope"])
    _assert_clean_failure(bad, None, "unknown config")


def test_eval_int8_ours_is_intsr_adapt(tmp_path, butterfly_lr):
    """The evaluation's int8-ours row runs exactly what `intsr adapt` runs with one final pass
    (`--ensemble 1`: the protocol tables score the network, not the self-ensemble)."""
    from PIL import Image as _Image

    from intsr.evaluate import evaluate
    from intsr.floatpath.degrade import lr_image
    from intsr.online import adapt
    from intsr.weights import load_model
    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    hr = np.asarray(_Image.open(DATA / "butterfly.png").convert("RGB"))
    _Image.fromarray(hr).save(hr_dir / "b.png")
    k = gaussian(1.6)
    w, masks, lr = load_model()
    from intsr.floatpath.metrics import psnr_y
    rec = next(evaluate(hr_dir, [("g", k)], weights=w, lr=lr, steps=2, configs=("int8-ours",)))
    sr = adapt(lr_image(hr, k, 4), k, steps=2, ensemble=1)
    assert rec["psnr"] == psnr_y(sr / 255.0, hr / 255.0, 4)


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_follow_the_umask(files, tmp_path, umask, mode):
    """Like any other tool: the atomic rename must not leave the temporary file's 0600."""
    old = os.umask(umask)
    try:
        out, rep = tmp_path / "o.png", tmp_path / "r.json"
        res = _run(["adapt", files / "lr.png", out, "--kernel", files / "k.npy", "--steps", "1",
                    "--quiet", "--json", rep])
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    assert (out.stat().st_mode & 0o777, rep.stat().st_mode & 0o777) == (mode, mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png", "r.json"]  # no temp left


def test_help_and_version_compile_nothing():
    code = ("import sys; from click.testing import CliRunner; from cli.main import main; "
            "r = CliRunner().invoke(main, ['--help']); "
            "v = CliRunner().invoke(main, ['--version']); "
            "assert r.exit_code == 0 and v.exit_code == 0; "
            "heavy = [m for m in sys.modules if m.startswith(('numba', 'intsr.kernels'))]; "
            "sys.exit(1 if heavy else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_command_summaries_survive_click_cutting():
    """click cuts a summary at its first period; every command gets a whole sentence."""
    res = CliRunner().invoke(main, ["--help"])
    lines = [line.strip() for line in res.output.split("Commands:")[1].strip().splitlines()]
    assert len(lines) == 5
    assert all(line.endswith(".") and not line.endswith("...") for line in lines)


@pytest.mark.slow
def test_adapt_methods_run_and_refuse_misplaced_options(tmp_path):
    """--method forward / mest run and say so in --json; an option of another method, or a
    bad value, is one line, exit 1, and the output file is untouched."""
    for method, extra in (("forward", ["--directions", "2", "--perturb", "7-8"]),
                          ("mest", ["--prune", "0.5", "--mutate-every", "1"])):
        out, rep = tmp_path / f"{method}.png", tmp_path / f"{method}.json"
        res = _run(["adapt", "--example", out, "--steps", "2", "--method", method, "--seed", "3",
                    "--json", rep, "--quiet"] + extra)
        assert res.exit_code == 0, res.output
        r = json.loads(rep.read_text())
        assert r["method"] == method and r["seed"] == 3 and len(r["losses"]) == 2
    out = tmp_path / "x.png"
    for args, needle in ((["--directions", "2"], "--method forward"),
                         (["--method", "mest", "--perturb", "8"], "--method forward"),
                         (["--method", "forward", "--mutate-every", "2"], "--method mest"),
                         (["--method", "forward", "--perturb", "0"], "numbered"),
                         (["--method", "forward", "--directions", "-1"], "directions"),
                         (["--method", "mest", "--prune", "0.5", "--mutate-every", "0"], "every"),
                         (["--method", "mest"], "give --prune"),
                         (["--seed", "-1"], "seed")):
        _assert_clean_failure(_run(["adapt", "--example", out] + args, out), out, needle)


@pytest.mark.slow
def test_precision_profiles_on_adapt_and_cost(tmp_path):
    """--precision picks a shipped profile on adapt (reported in --json, as is the scale's
    default without it) and cost; an unknown one is one line, exit 1, output untouched."""
    out, rep = tmp_path / "m.png", tmp_path / "m.json"
    res = _run(["adapt", "--example", out, "--steps", "1", "--precision", "mixed", "--json", rep,
                "--quiet"])
    assert res.exit_code == 0, res.output
    assert json.loads(rep.read_text())["precision"] == "mixed"
    # without --precision the report names the scale's own (weights/default.json)
    res = _run(["adapt", "--example", out, "--steps", "1", "--scale", "2", "--json", rep,
                "--quiet"])
    assert res.exit_code == 0, res.output
    assert json.loads(rep.read_text())["precision"] == "grouped-x2"
    res = _run(["cost", "--precision", "int16", "--json"])
    assert res.exit_code == 0, res.output
    wide, base = json.loads(res.output), json.loads(_run(["cost", "--json"]).output)
    assert wide["precision"] == "int16" and wide["memory_kb_table5"] > base["memory_kb_table5"]
    _assert_clean_failure(_run(["adapt", "--example", out, "--precision", "int4"], out), out,
                          "no precision profile")
    _assert_clean_failure(_run(["cost", "--precision", "int4"]), None, "no precision profile")
    _assert_clean_failure(_run(["adapt", "--example", out, "--precision", "int16", "--method",
                                "forward"], out), out, "8-bit forward weights")
