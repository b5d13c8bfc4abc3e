"""Damaged and hostile files on every loader a user reaches (issue 16): a short fuzz pass over
all of them, the crashers the long campaign found rebuilt as regression tests, the CLI's
top-level guard, and the MAT v5 / .npy readers against scipy and numpy on valid files.
The long campaign is benchmarks/fuzz_campaign.py; docs/fuzzing.md has its numbers."""
import io
import os
import struct
import subprocess
import sys
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from cli.main import main
from intsr import weights as W
from intsr.io import MAX_KERNEL_SIDE, InputError, read_image, read_kernel

import fuzz_inputs as F

FUZZ = Path(__file__).parent / "data" / "fuzz"
GOOD_IMAGE = F.ROOT / "intsr" / "data" / "example_lr.png"
GOOD_KERNEL = F.ROOT / "intsr" / "data" / "example_kernel.npy"
USER_LOADERS = [name for name in F.LOADERS if not name.startswith("_")]

# The CI pass: 300 inputs per loader (2,100 in all), a quarter of them structure-aware.
CI_PER_LOADER = 300


@pytest.fixture(scope="module")
def fuzz_report(tmp_path_factory):
    return F.run(F.plan_for(CI_PER_LOADER), seed=16, work=tmp_path_factory.mktemp("fuzz"),
                 cli_per_loader=1)


@pytest.mark.slow
@pytest.mark.parametrize("loader", USER_LOADERS)
def test_short_fuzz_pass(fuzz_report, loader):
    """No death, hang, bug or allocation past the cap on any input; the CLI refuses cleanly."""
    r = fuzz_report["loaders"][loader]
    bugs = [b for b in fuzz_report["bugs"] if b["loader"] == loader]
    cli_bad = [c for c in fuzz_report["cli"]["bad"] if c["file"].startswith(loader + "-")]
    assert r["inputs"] == CI_PER_LOADER, r
    assert (r["bugs"], r["deaths"], r["hangs"]) == (0, 0, 0), bugs[:5]
    assert r["peak_rss_mb"] < 1024, r
    assert r["accepted"] > 0 and r["clean"] > 0, r  # the pass reached both sides
    assert not cli_bad, cli_bad


@pytest.mark.slow
def test_harness_sees_crashes_bugs_and_hangs(tmp_path):
    """A loader that segfaults, raises a bug, or blocks in a way no signal interrupts: each
    is counted, the run goes on after it, and the input is kept."""
    rep = F.run([("_selftest", "mutate", 12)], seed=1, work=tmp_path, hard_limit=3)
    r = rep["loaders"]["_selftest"]
    assert r["inputs"] == 12
    assert r["deaths"] >= 1 and r["bugs"] >= 1 and r["hangs"] >= 1 and r["clean"] >= 1, r
    assert r["deaths"] + r["bugs"] + r["hangs"] + r["clean"] + r["accepted"] == 12
    for rec in rep["deaths"] + rep["hangs"]:
        kept = tmp_path / "found" / rec["file"]
        assert kept.read_bytes()[0] % 5 in (0, 4)
    assert all(d["exit"] < 0 for d in rep["deaths"])


# ----------------------------------------------------------------------------- the CLI, for real

def _cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(F.ROOT),
                                                        os.environ.get("PYTHONPATH", "")]))
    env.pop("INTSR_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "cli.main", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=env)


def _assert_clean_exit(res, out=None, needle=None):
    assert res.returncode == 1, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr
    if needle:
        assert needle.lower() in lines[0].lower(), lines[0]
    if out is not None:
        assert not Path(out).exists()


def _one_line_error(fn, path, exc=ValueError, needle=None):
    with pytest.raises(exc) as e:
        fn(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg
    if needle:
        assert needle.lower() in msg.lower(), msg
    return msg


# --------------------------------------------------- crasher 1: .mat kernels that killed scipy

@pytest.mark.parametrize("name", ["scipy_segv.mat", "scipy_sigbus.mat"])
def test_mat_that_crashed_scipy_is_refused_cleanly(name, tmp_path):
    """Mutations of an MZSR-style kernel on which scipy.io.loadmat (scipy 1.17.1) died with
    SIGSEGV (a sub-element whose byte count runs past its compressed variable) and SIGBUS (a
    top-level tag in the small-element form). The MAT reader of intsr.io never hands them to
    native code: one line, and the CLI exits 1 with nothing written."""
    path = FUZZ / name
    _one_line_error(read_kernel, path, InputError, "not a valid .mat kernel")
    out = tmp_path / "out.png"
    _assert_clean_exit(_cli("adapt", GOOD_IMAGE, out, "--kernel", path, "--quiet",
                            cwd=tmp_path), out, "not a valid .mat kernel")


def test_mat_v73_and_v4_are_refused_with_a_clear_line(tmp_path):
    g = F._gaussian(1.6, 15)
    v73 = tmp_path / "v73.mat"
    v73.write_bytes(F.mat_bytes([], version=0x0200, text=b"MATLAB 7.3 MAT-file")
                    + b"\x89HDF\r\n\x1a\n" + bytes(400))
    _one_line_error(read_kernel, v73, InputError, "MAT v7.3 (HDF5) is not supported")
    from scipy.io import savemat
    savemat(tmp_path / "v4.mat", {"kernel": g}, format="4")
    _one_line_error(read_kernel, tmp_path / "v4.mat", InputError, "not a MAT v5 file")


def test_mat_compression_bomb_is_not_inflated(tmp_path):
    """A compressed variable of 64 MB of zeros (65 KB on disk): only what a kernel can need
    is ever inflated."""
    big = F.mat_element(14, b"\0" * (64 << 20))
    p = tmp_path / "bomb.mat"
    p.write_bytes(F.mat_bytes([F.mat_element(15, __import__("zlib").compress(big, 9),
                                             pad=False)]))
    tracemalloc.start()
    try:
        _one_line_error(read_kernel, p, InputError)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


# -------------------------------------- crasher 2: zip "version needed" 10.3 (NotImplementedError)

def _with_version_needed(raw, version):
    """``raw`` with every central-directory entry's "version needed to extract" set."""
    b = bytearray(raw)
    at = b.find(b"PK\x01\x02")
    while at >= 0:
        b[at + 6:at + 8] = struct.pack("<H", version)
        at = b.find(b"PK\x01\x02", at + 4)
    return bytes(b)


@pytest.mark.parametrize("loader,src,cmd", [
    ("pt_weights", F.ROOT / "weights" / "meta.pt", ("info",)),
    ("npz_weights", F.ROOT / "weights" / "meta.npz", ("info",)),
    ("masks", F.ROOT / "weights" / "masks.npz", ("cost", "--prune", "0.5", "--masks")),
])
def test_zip_version_needed_10_3_is_one_line(tmp_path, loader, src, cmd):
    """The .pt mutation that gave users a traceback: zipfile raises NotImplementedError
    ("zip file version 10.3") for an archive that declares it needs version 10.3."""
    p = tmp_path / ("bad" + src.suffix)
    p.write_bytes(_with_version_needed(src.read_bytes(), 103))
    with pytest.raises(NotImplementedError, match="zip file version 10.3"):
        zipfile.ZipFile(p)
    _one_line_error(F.LOADERS[loader].load, p, ValueError, "zip file version 10.3")
    _assert_clean_exit(_cli(*cmd, p, cwd=tmp_path), None, "zip file version 10.3")


# ------------------------------------------- crasher 3: a .npy kernel that declares 6.7 GiB

def test_npy_header_of_30000_squared_is_refused_before_allocating(tmp_path):
    """A header declaring a 30000 x 30000 float64 array (6.7 GiB) followed by 16 bytes."""
    p = tmp_path / "huge.npy"
    p.write_bytes(F.npy_bytes({"descr": "<f8", "fortran_order": False,
                               "shape": (30000, 30000)}, bytes(16)))
    tracemalloc.start()
    try:
        _one_line_error(read_kernel, p, InputError, f"{MAX_KERNEL_SIDE}x{MAX_KERNEL_SIDE}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    out = tmp_path / "out.png"
    _assert_clean_exit(_cli("adapt", GOOD_IMAGE, out, "--kernel", p, "--quiet", cwd=tmp_path),
                       out, "30000x30000")


@pytest.mark.parametrize("raw,needle", [
    (F.npy_bytes({"descr": "<f8", "fortran_order": False, "shape": (15, 15)}, bytes(16)),
     "the file holds 16"),
    (b"\x93NUMPY\x02\x00\xfb\xfb\xfb\xfb" + b"{" * 20, "header length"),  # 4 GB header length
    (F.npy_bytes({"descr": "|O", "fortran_order": False, "shape": (3, 3)}, bytes(72)),
     "real numeric"),
    (F.npy_bytes({"descr": "<f8", "fortran_order": False, "shape": (3, 3)}, bytes(72),
                 version=(3, 0)), "version"),
    (F.npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (3,", bytes(72)), "valid"),
])
def test_damaged_npy_kernels(tmp_path, raw, needle):
    p = tmp_path / "k.npy"
    p.write_bytes(raw)
    _one_line_error(read_kernel, p, InputError, needle)


# ------------------------------------------------------------------ other bombs the fuzzer found

def test_pickle_memo_bomb_is_refused(tmp_path):
    """A 9-byte data.pkl whose LONG_BINPUT index makes the C unpickler grow its memo to 4 GB."""
    p = tmp_path / "memo.pt"
    p.write_bytes(F.pt_bytes(b"\x80\x02Nr\x00\x00\x00\x10.", {}))
    tracemalloc.start()
    try:
        _one_line_error(W.load_weights, p, ValueError, "memo index")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_zero_stride_tensor_cannot_expand_past_the_budget(tmp_path):
    """A tensor of 10^6 x 10^6 elements viewing one float (strides 0) would copy 4 TB."""
    tensors = F.shipped_tensors()
    key, stype, skey, numel, _, _, _ = tensors[0]
    tensors[0] = (key, stype, skey, numel, 0, (10 ** 6, 10 ** 6), (0, 0))
    storages = {t[2]: bytes(4 * t[3]) for t in tensors}
    p = tmp_path / "stride.pt"
    p.write_bytes(F.pt_bytes(F.torch_pickle(tensors), storages))
    _one_line_error(W.load_weights, p, ValueError, "MB in all")


def test_npz_zip_bomb_is_refused_before_inflating(tmp_path):
    """conv1 declared as 64 MB of deflated zeros (65 KB on disk) in an otherwise valid file."""
    raw = F.npz_weights_seeds()[0]
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        entries = [F.ZipEntry(i.filename.encode(), z.read(i)) for i in z.infolist()]
    entries[0] = F.ZipEntry(b"conv1.npy", F.npy_bytes(
        {"descr": "<f4", "fortran_order": False, "shape": (64, 3, 3, 3)}) + bytes(64 << 20),
        method=8)
    p = tmp_path / "bomb.npz"
    p.write_bytes(F.zip_bytes(entries))
    assert p.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        _one_line_error(W.load_weights, p, ValueError, "declares")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_npz_member_shape_is_checked_from_its_header(tmp_path):
    """A conv weight whose header says 30000^4 elements: refused from the header alone."""
    raw = F.npz_weights_seeds()[0]
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        entries = [F.ZipEntry(i.filename.encode(), z.read(i)) for i in z.infolist()]
    entries[1] = F.ZipEntry(b"conv2.npy", F.npy_bytes(
        {"descr": "<f4", "fortran_order": False, "shape": (30000,) * 4}, bytes(64)))
    p = tmp_path / "shape.npz"
    p.write_bytes(F.zip_bytes(entries))
    _one_line_error(W.load_weights, p, ValueError, "(30000, 30000, 30000, 30000)")


def test_image_decompression_bomb_is_refused_from_its_header(tmp_path):
    """A PNG declaring 20000 x 20000 pixels in under 1 KB."""
    from PIL import Image
    big = Image.new("L", (1, 1))
    buf = io.BytesIO()
    big.save(buf, "PNG")
    raw = bytearray(buf.getvalue())
    raw[16:24] = struct.pack(">II", 20000, 20000)
    raw[29:33] = struct.pack(">I", __import__("zlib").crc32(bytes(raw[12:29])))
    p = tmp_path / "bomb.png"
    p.write_bytes(bytes(raw))
    _one_line_error(read_image, p, InputError, "pixels this engine reads")


def test_progressive_jpeg_of_many_scans_is_refused_before_decoding(tmp_path):
    """Repeated scans: libjpeg decodes each over the whole image (2,000 take 32 s at 16 MP)."""
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), (120, 80, 40)).save(buf, "JPEG", progressive=True)
    raw = buf.getvalue()
    sos, eoi = raw.rfind(b"\xff\xda"), raw.rfind(b"\xff\xd9")
    p = tmp_path / "scans.jpg"
    p.write_bytes(raw[:eoi] + raw[sos:eoi] * 150 + raw[eoi:])
    _one_line_error(read_image, p, InputError, "scans")
    p.write_bytes(raw)
    assert read_image(p)[0].shape == (256, 256, 3)


def test_image_formats_outside_the_list_are_refused(tmp_path):
    from PIL import Image
    p = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(p, format="ICO")
    _one_line_error(read_image, p, InputError, "not one of PNG")


# ------------------------------------------------------------------------ the top-level guard

def test_unexpected_exception_is_one_internal_error_line(monkeypatch):
    import intsr.jobs

    def boom(*_a, **_k):
        raise RuntimeError("something\nunplanned")

    monkeypatch.setattr(intsr.jobs, "info_lines", boom)
    res = CliRunner().invoke(main, ["info", "w.npz"])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        "Error: internal error: RuntimeError: something unplanned"]
    assert "Traceback" not in res.output


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(monkeypatch, how):
    import intsr.jobs

    def boom(*_a, **_k):
        raise RuntimeError("unplanned")

    monkeypatch.setattr(intsr.jobs, "info_lines", boom)
    args, env = (["--debug", "info", "w.npz"], {}) if how == "flag" else \
        (["info", "w.npz"], {"INTSR_DEBUG": "1"})
    res = CliRunner().invoke(main, args, env=env)
    assert res.exit_code == 1
    assert "Traceback" in res.output and "in boom" in res.output
    assert res.output.strip().splitlines()[-1] == "Error: internal error: RuntimeError: unplanned"


def test_expected_errors_and_memory_errors_keep_their_lines(monkeypatch):
    import intsr.jobs

    for exc, line in [(InputError("bad input"), "Error: bad input"),
                      (MemoryError(), "Error: out of memory")]:
        def fail(*_a, _exc=exc, **_k):
            raise _exc
        monkeypatch.setattr(intsr.jobs, "info_lines", fail)
        res = CliRunner().invoke(main, ["info", "w.npz"])
        assert (res.exit_code, res.output.strip()) == (1, line)


# ---------------------------------------- the readers agree with scipy / numpy on valid files

_DTYPES = ["f8", "f4", "u1", "i2", "i4", "u8"]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(h=st.integers(1, MAX_KERNEL_SIDE), w=st.integers(1, MAX_KERNEL_SIDE),
       dtype=st.sampled_from(_DTYPES), compress=st.booleans(),
       name=st.sampled_from(["kernel", "Kernel"]), other=st.booleans(),
       data=st.data())
def test_mat_reader_matches_scipy(tmp_path_factory, h, w, dtype, compress, name, other, data):
    from scipy.io import loadmat, savemat
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    k = (rng.random((h, w)) * 100 + 1).astype(dtype)
    p = tmp_path_factory.mktemp("mat") / "k.mat"
    variables = {"aaa_first": np.ones((70, 70))} if other else {}
    variables[name] = k
    savemat(p, variables, do_compression=compress)
    ref = loadmat(p)[name].astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(read_kernel(p), ref / ref.sum(), rtol=1e-12)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(h=st.integers(1, MAX_KERNEL_SIDE), w=st.integers(1, MAX_KERNEL_SIDE),
       dtype=st.sampled_from(["<f8", ">f8", "<f4", "<f2", "<i4", "|u1", ">i2"]),
       fortran=st.booleans(), endian=st.sampled_from("<>"))
def test_mat_and_npy_readers_on_both_byte_orders(tmp_path_factory, h, w, dtype, fortran,
                                                 endian):
    d = tmp_path_factory.mktemp("k")
    k = (np.arange(h * w).reshape(h, w) % 7 + 1).astype(dtype)
    k = np.asfortranarray(k) if fortran else k
    np.save(d / "k.npy", k)
    want = k.astype(np.float64) / k.astype(np.float64).sum()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "kernel sums to ...; normalised"
        np.testing.assert_allclose(read_kernel(d / "k.npy"), want, rtol=1e-12)
        if dtype != "<f2":  # MAT files have no half floats
            native = k.astype(k.dtype.newbyteorder("="))
            (d / "k.mat").write_bytes(F.mat_bytes([F.mat_matrix(b"kernel", native,
                                                                endian=endian)], endian=endian))
            np.testing.assert_allclose(read_kernel(d / "k.mat"), want, rtol=1e-12)


def test_kernel_side_limit_is_documented_and_enforced(tmp_path):
    np.save(tmp_path / "ok.npy", np.ones((MAX_KERNEL_SIDE, MAX_KERNEL_SIDE)) / MAX_KERNEL_SIDE ** 2)
    assert read_kernel(tmp_path / "ok.npy").shape == (MAX_KERNEL_SIDE, MAX_KERNEL_SIDE)
    np.save(tmp_path / "big.npy", np.ones((MAX_KERNEL_SIDE + 1, 3)))
    _one_line_error(read_kernel, tmp_path / "big.npy", InputError, "over the")
