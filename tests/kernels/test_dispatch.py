import numpy as np
import pytest

from intsr.kernels.dispatch import (
    PATH,
    agrad3x3,
    agrad_weights,
    conv3x3_ref,
    wgrad3x3_ref,
    wgrad3x3_u8s8,
)
from intsr.kernels.fixedpoint import WGRAD_CHUNK
from intsr.kernels.gemm_x8s8 import wgrad3x3_portable, wgrad_x8s8, wgrad_x8s8_ref
from intsr.kernels.im2col import im2col

from helpers import host_runs
from kernel_data import EXTREMES


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("cdtype", [np.int8, np.uint8])
def test_wgrad_bit_exact(fill, kind, cdtype):
    cols = fill((301, 27), cdtype, kind)
    g = fill((301, 5), np.int8, kind)
    got = wgrad_x8s8(cols, g)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, wgrad_x8s8_ref(cols, g))


@pytest.mark.parametrize("cdtype,val", [(np.int8, -128), (np.uint8, 255)])
def test_wgrad_no_overflow_past_int32(cdtype, val):
    """More rows than one int32 accumulator can hold at the extremes: 3 * 2**16 + 5 rows of
    |product| 2**14 (or 255 * 128) sum to more than 2**31; chunking keeps it exact."""
    m = 3 * WGRAD_CHUNK + 5
    cols = np.full((m, 2), val, cdtype)
    g = np.full((m, 2), -128, np.int8)
    got = wgrad_x8s8(cols, g)
    expect = m * int(val) * -128
    assert abs(expect) > 2 ** 31
    assert (got == expect).all()


@pytest.mark.parametrize("kind", EXTREMES)
def test_agrad_is_transposed_correlation(fill, kind):
    """The activation gradient over kept channels equals the plain transposed-conv sum
    dX[q, ci] = sum_{dy,dx,co} g[q - (dy,dx) + 1, co] * w[dy, dx, ci, co]."""
    g = fill((6, 7, 10), np.int8, kind)
    w = fill((3, 3, 12, 16), np.int8, kind)
    kin = np.array([0, 3, 4, 11])
    kout = np.array([1, 2, 5, 6, 7, 8, 9, 10, 12, 15])
    got = agrad3x3(g, w, kin, kout)
    h, wd = g.shape[:2]
    ref = np.zeros((h, wd, kin.size), np.int64)
    gp = np.zeros((h + 2, wd + 2, g.shape[2]), np.int64)
    gp[1:-1, 1:-1] = g
    for dy in range(3):
        for dx in range(3):
            # forward: y[p] += x[p + d - 1] w[d]  =>  dx[q] += g[q - d + 1] w[d]^T
            win = gp[2 - dy:2 - dy + h, 2 - dx:2 - dx + wd]
            ref += win @ w[dy, dx][np.ix_(kin, kout)].T.astype(np.int64)
    np.testing.assert_array_equal(got.astype(np.int64), ref)
    assert agrad_weights(w, kin, kout).shape == (3, 3, kout.size, kin.size)
    np.testing.assert_array_equal(got.astype(np.int64),
                                  conv3x3_ref(g, agrad_weights(w, kin, kout)))


@pytest.mark.parametrize("dtype", [np.int8, np.int16])
def test_agrad_weights_gather_flip_transpose(fill, dtype):
    """agrad_weights (one Numba pass) against NumPy's gathers, flip and transpose, for random
    kept sets, the kept-first prefixes the model passes, and none kept."""
    w = fill((3, 3, 12, 16), dtype, "mixed")
    rng = np.random.default_rng(7)
    sets = [(np.sort(rng.choice(12, k, replace=False)), np.sort(rng.choice(16, m, replace=False)))
            for k, m in ((1, 16), (12, 1), (5, 9))] + [(np.arange(4), np.arange(7)),
                                                      (np.arange(0), np.arange(3))]
    for kin, kout in sets:
        want = np.ascontiguousarray(w[:, :, kin][:, :, :, kout][::-1, ::-1].transpose(0, 1, 3, 2))
        got = agrad_weights(w, kin, kout)
        assert got.dtype == dtype and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("portable", [False, True])
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_conv_with_maximum_on_every_path(fill, mode, portable, monkeypatch):
    """conv3x3 with a gate mode: the conv and Eq. 11's gated maximum, the same on either
    path."""
    from intsr.kernels import dispatch
    from intsr.kernels.requant import max_abs_s32_ref
    if portable:
        monkeypatch.setattr(dispatch, "PATH", "portable")
    x = fill((6, 7, 16), np.uint8, "mixed")
    w = fill((3, 3, 16, 24), np.int8, "mixed")
    gate = fill((42, 24), np.uint8, "random") if mode == 2 else None
    out, m = dispatch.conv3x3(x, w, mode, gate)
    np.testing.assert_array_equal(out, conv3x3_ref(x, w))
    assert m == max_abs_s32_ref(out.reshape(42, 24), gate, mode)


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("xdtype", [np.int8, np.uint8])
@pytest.mark.parametrize("wgrad", [wgrad3x3_u8s8, wgrad3x3_portable])
def test_wgrad3x3_from_image(fill, kind, xdtype, wgrad, monkeypatch):
    """From the layer input directly (either kernel), in several im2col bands."""
    import intsr.kernels.im2col as im2col_mod
    monkeypatch.setattr(im2col_mod, "BAND_BYTES", 7 * 9 * 6)  # 1 row a band
    x = fill((5, 7, 6), xdtype, kind)
    g = fill((5, 7, 9), np.int8, kind)
    np.testing.assert_array_equal(wgrad(x, g), wgrad_x8s8_ref(im2col(x), g.reshape(-1, 9)))
    np.testing.assert_array_equal(wgrad(x, g), wgrad3x3_ref(x, g))


_TARGET_SCRIPT = """
import hashlib, sys, numpy as np
sys.path.insert(0, {tests!r})
from test_no_float import _random_setup
from intsr.floatpath.convert import kernel_to_fixed, lr_to_fixed, weights_to_int
from intsr.kernels import dispatch
from intsr.model import IntNet
from intsr.online import make_training_pair
weights, masks, lr, k = _random_setup(np.random.default_rng(0))
from intsr.precision import INT8, uniform
h = hashlib.sha256()
inp, target = make_training_pair(lr, kernel_to_fixed(k), 2)
# int8, then every 16-bit byte-plane combination (kernels/planes_x16.py) in one step
for prec in (INT8, uniform(16, 16, 16, 16)):
    net = IntNet(weights_to_int(weights), masks, precision=prec)
    net.step(inp, target, *lr_to_fixed(0.01, target.size))
    h.update(b"".join(w.value.tobytes() for w in net.weights) + net.predict(inp).tobytes())
print(dispatch.PATH, h.hexdigest())
"""


def _step_digest(env_extra, tmp_path):
    import os
    import subprocess
    import sys
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), **env_extra)
    env.pop("INTSR_NO_VNNI", None)
    res = subprocess.run([sys.executable, "-c", _TARGET_SCRIPT.format(tests=tests)], env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout.split()


@pytest.mark.slow
@pytest.mark.parametrize("cpu,path", [("haswell", "avx2"), ("alderlake", "avxvnni"),
                                      ("x86-64", "portable")])
def test_each_target_chooses_its_tile_and_computes_the_same_integers(tmp_path, cpu, path):
    """Dispatch asks the target Numba compiles for (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES), not
    the host: an AVX2-only target takes the AVX2 tile, an AVX-VNNI one without AVX-512 the
    ymm VNNI tile, a baseline x86-64 (SSE2) the portable kernels, none aborts in LLVM on the
    host's AVX-512 VNNI, and one masked step gives the same
    integers as this machine's own path, at int8 and with every tensor 16-bit."""
    if not host_runs(cpu):
        pytest.skip(f"this CPU cannot run code built for {cpu}")
    got_path, digest = _step_digest({"NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": ""},
                                    tmp_path / cpu)
    assert got_path == path
    native_path, native = _step_digest({}, tmp_path / "native")
    assert native_path == PATH and digest == native


@pytest.mark.slow
@pytest.mark.parametrize("cpu", ["haswell", "alderlake"])
def test_the_ymm_tiles_are_bit_exact_at_every_extreme(tmp_path, cpu):
    """tests/kernels/test_igemm_u8s8.py (and the byte transpose its padding calls) again,
    compiled for an AVX2-only CPU (haswell) and an AVX-VNNI one without AVX-512 (alderlake): on
    an AVX-512 VNNI machine this is where those tiles meet the extremes (and their
    instructions are checked)."""
    if not host_runs(cpu):
        pytest.skip(f"this CPU cannot run code built for {cpu}")
    import os
    import subprocess
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), NUMBA_CPU_NAME=cpu,
               NUMBA_CPU_FEATURES="")
    env.pop("INTSR_NO_VNNI", None)
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          os.path.join(here, "test_igemm_u8s8.py"),
                          os.path.join(here, "test_transpose_u8.py")], env=env, cwd=here,
                         capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-3000:]
    assert " passed" in res.stdout and "skipped" not in res.stdout


def test_target_feature_parsing():
    from intsr.kernels.isa import tile_isa
    assert tile_isa("haswell", "") == "avx2"
    assert tile_isa("skylake-avx512", "") == "avx2"  # AVX-512 without VNNI
    assert tile_isa("cascadelake", "") == "vnni" and tile_isa("znver4", "") == "vnni"
    assert tile_isa("sapphirerapids", "+avx2,-avx512vnni") == "avx2"
    assert tile_isa("generic", "+avx512f,+avx512vnni") == "vnni"
    assert tile_isa("x86-64", "") is None and tile_isa("generic", "") is None
    assert tile_isa("haswell", "-avx2") is None
    assert tile_isa("alderlake", "") == "avxvnni" and tile_isa("generic", "+avx2,+avxvnni") == \
        "avxvnni"
    assert tile_isa("sapphirerapids", "") == "vnni"  # both: the zmm tile
    assert tile_isa("cortex-a76", "+neon,+dotprod") is None


def test_conv3x3_grouped_portable_is_the_reference(fill):
    """Past one register tile (72 outputs) dispatch runs one portable conv per group: the
    reference's integers and Eq. 11 maximum, as the tile gives below it."""
    from intsr.kernels.dispatch import conv3x3_grouped, conv3x3_grouped_ref
    xp = np.zeros((7, 8, 16), np.uint8)
    xp[1:-1, 1:-1] = fill((5, 6, 16), np.uint8)
    wt = fill((3, 3, 16, 72), np.int8)
    order, steps = np.array([2, 0, 3, 1]), np.array([0, 3, 0, 2])
    out, m = conv3x3_grouped(xp, wt, order, 4, steps, 1)
    want = conv3x3_grouped_ref(xp, wt, order, 4, steps)
    np.testing.assert_array_equal(out.astype(np.int64), want)
    assert m == max(0, int(want.max()))


@pytest.mark.parametrize("xdt,wdt", [(np.uint8, np.int8), (np.uint16, np.int8),
                                     (np.uint8, np.int16), (np.int16, np.int16)])
def test_conv3x3_channel_maxima_on_every_path(fill, xdt, wdt):
    """GATE_CHANNELS (each output channel's ReLU maximum) from every path of dispatch.conv3x3:
    the tile takes it row by row, the byte-plane and portable paths after the conv."""
    from intsr.kernels.dispatch import conv3x3
    x, w = fill((5, 7, 6), xdt), fill((3, 3, 6, 72 if xdt == np.int16 else 12), wdt)
    out, m = conv3x3(x, w, 3)
    ref = conv3x3_ref(x, w)
    np.testing.assert_array_equal(out.astype(np.int64), ref)
    np.testing.assert_array_equal(m, np.maximum(ref.reshape(-1, w.shape[3]).max(0), 0))
