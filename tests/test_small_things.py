"""Issue 30's small things a user hit, each pinned: the public names importable from intsr,
documented paths that work from any folder, options that used to do nothing or the wrong
thing silently, error lines that name the right option, and internal errors called internal."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import intsr
from cli.main import main


def _run(args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def lr_png(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (40, 44, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "in.png")
    return tmp_path / "in.png"


def test_public_names_import_from_intsr_after_a_plain_import(tmp_path):
    code = ("import intsr; intsr.online.estimate_kernel; intsr.Adapter; intsr.estimate_kernel; "
            "print(intsr.__version__)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, check=True)
    assert res.stdout.strip() and res.stdout.strip()[0].isdigit()
    with pytest.raises(AttributeError):
        intsr.no_such_thing  # noqa: B018


def test_info_of_the_readmes_weights_path_works_outside_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = _run(["info", "weights/meta.npz"])
    assert res.exit_code == 0, res.output
    assert "architecture" in res.output


def test_mest_without_prune_is_refused_instead_of_running_backprop(lr_png, tmp_path):
    res = _run(["adapt", lr_png, tmp_path / "o.png", "--kernel", "bicubic", "--method", "mest"])
    assert res.exit_code != 0 and "give --prune" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_weights_of_another_scale_are_named_in_a_warning(lr_png, tmp_path):
    from intsr.weights import WEIGHTS_DIR
    res = _run(["adapt", lr_png, tmp_path / "o.png", "--kernel", "bicubic", "--steps", "1",
                "--weights", WEIGHTS_DIR / "x2_meta.npz", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "x2_meta.npz was trained for x2, not x4" in res.output


@pytest.mark.parametrize("option", ["--save-kernel", "--json", "--save-state"])
def test_a_missing_folder_names_its_option(lr_png, tmp_path, option):
    args = ["adapt", lr_png, tmp_path / "o.png", option, tmp_path / "nodir" / "k.npy"]
    if option == "--save-state":
        args += ["--kernel", "bicubic"]
    res = _run(args)
    assert res.exit_code != 0 and f"{option} " in res.output and "does not exist" in res.output


@pytest.mark.parametrize("args, message", [
    (["--weights", "nowhere.npz"], "no such weights file"),
    (["--noise", "-1"], "noise must be"),
    (["--steps", "-1"], "steps must be"),
])
def test_blind_mode_fails_before_it_reports_an_estimate(lr_png, tmp_path, args, message):
    res = _run(["adapt", lr_png, tmp_path / "o.png", *args])
    assert res.exit_code != 0 and message in res.output
    assert "estimating" not in res.output and len(res.output.strip().splitlines()) == 1


def test_a_bug_is_reported_as_internal(lr_png, tmp_path, monkeypatch):
    import intsr.jobs

    def broken(*args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(intsr.jobs, "adapt_paths", broken)
    res = _run(["adapt", lr_png, tmp_path / "o.png"])
    assert res.exit_code != 0 and "internal error: KeyError" in res.output


_NEW_SIGNATURES = """
import importlib, pkgutil
import numpy as np
import intsr, intsr.kernels
from numba.core.registry import CPUDispatcher
from PIL import Image
lr = np.asarray(Image.open("intsr/data/example_lr.png").convert("RGB"))  # read-only, as a user's
intsr.adapt(lr, np.load("intsr/data/example_kernel.npy"), steps=1)
kernels = [v for m in pkgutil.iter_modules(intsr.kernels.__path__)
           for v in vars(importlib.import_module("intsr.kernels." + m.name)).values()
           if isinstance(v, CPUDispatcher)]
before = {k: set(map(str, k.signatures)) for k in kernels}
intsr.estimate_kernel(lr, scale=4)
for k in kernels:
    for s in set(map(str, k.signatures)) - before[k]:
        print(k.py_func.__name__, s)
"""


def test_the_first_blind_run_compiles_almost_nothing_more_than_a_told_one():
    """The first blind run after a told one compiled new signatures of three kernels for ~6 s
    without the "compiling" notice (a read-only image, the maximum taken by a separate pass):
    now the estimator runs the told path's, except requant_s32 storing uint8 (its unsigned
    activations; ~1.3 s once, then cached)."""
    root = Path(__file__).resolve().parent.parent
    res = subprocess.run([sys.executable, "-c", _NEW_SIGNATURES], capture_output=True,
                         text=True, cwd=root)
    assert res.returncode == 0, res.stderr
    new = [line.split(" ", 1) for line in res.stdout.strip().splitlines()]
    assert all(name == "requant_s32" and "uint8, 2, 'C'" in sig for name, sig in new), new


def _small():
    return np.random.default_rng(1).integers(0, 256, (40, 44, 3), dtype=np.uint8)


def test_adapt_result_is_adapt_with_its_report_as_an_object():
    """intsr.adapt_result: the image adapt() returns, and the fields adapt(report=) fills
    (losses, MACs, weights, degradation, estimate), as attributes instead of a dict in place."""
    lr, report = _small(), {}
    image = intsr.adapt(lr, steps=2, report=report)
    res = intsr.adapt_result(lr, steps=2)
    assert isinstance(res, intsr.AdaptResult)
    np.testing.assert_array_equal(res.image, image)
    assert res.losses == report["losses"] and res.macs == report["macs"] > 0
    assert res.estimate == report["kernel_estimate"] and res.degradation == report["degradation"]
    assert res.check == report["check"] and res.weights == report["weights"]
    assert set(res.report()) == set(report) and set(res.seconds) == set(report["seconds"])
    assert res.peak_bytes is None and intsr.adapt_result(lr, steps=1, trace_memory=True).peak_bytes


@pytest.mark.parametrize("given, name", [({"lr": 0.01}, "lr"), ({"prune": 0.5}, "prune"),
                                         ({"method": "forward"}, "method"), ({"seed": 3}, "seed"),
                                         ({"precision": "int8"}, "precision"),
                                         ({"options": {}}, "options")])
def test_an_adapter_and_what_would_build_another_are_exclusive(given, name):
    ad = intsr.Adapter()
    with pytest.raises(intsr.io.InputError, match=f"adapter= carries its own {name}"):
        intsr.adapt(_small(), "bicubic", steps=1, adapter=ad, **given)


@pytest.mark.parametrize("given", [{"scale": 2}, {"grid": "corner"}])
def test_an_adapter_of_another_scale_or_grid_is_refused(given):
    with pytest.raises(intsr.io.InputError, match="differ from the adapter's"):
        intsr.adapt(_small(), "bicubic", steps=1, adapter=intsr.Adapter(), **given)


def test_memory_tracing_stops_when_adapt_fails():
    import tracemalloc
    with pytest.raises(intsr.io.InputError):
        intsr.adapt_result(_small(), "nonsense", steps=1, trace_memory=True)
    assert not tracemalloc.is_tracing()


@pytest.mark.slow
def test_each_first_run_says_it_compiles_and_only_the_first(tmp_path):
    """In an empty kernel cache: the first run says it compiles, the second says nothing; the
    first blind run after told ones says it compiles the estimator's kernel, the next nothing."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    told = ["adapt", "--example", str(tmp_path / "t.png"), "--steps", "1"]
    blind = ["adapt", "intsr/data/example_lr.png", str(tmp_path / "b.png"), "--steps", "1"]
    said = []
    for args in (told, told, blind, blind):
        res = subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,
                             text=True, cwd=root, env=env)
        assert res.returncode == 0, res.stderr
        said.append([line for line in res.stderr.splitlines() if "compiling" in line])
    assert said[0] == ["compiling kernels (first run only; about a minute)..."]
    assert said[1] == [] and said[3] == []
    assert said[2] == ["compiling the kernel estimator's kernels (first blind run only)..."]
