"""The implicit-GEMM kernels, bit-exact against the plain int64 references, on the register
tile of the compile target (AVX-512 VNNI or AVX2, kernels/isa.py).

They exist only where the target has one of the two; elsewhere the portable kernels are the
engine. tests/kernels/test_dispatch.py reruns this file with Numba compiling for an AVX2-only
CPU and for an AVX-VNNI one without AVX-512, so an AVX-512 VNNI machine checks every tile."""
import numpy as np
import pytest

from intsr.kernels import dispatch, igemm_emit, igemm_u8s8
from intsr.kernels.dispatch import PATH, conv3x3_ref
from intsr.kernels.gemm_x8s8 import wgrad_x8s8_ref
from intsr.kernels.im2col import im2col

from kernel_data import EXTREMES, GARBAGE

pytestmark = pytest.mark.skipif(PATH == "portable", reason="target without AVX2 or VNNI")

# (H, W, C_in, C_out): the net's layers, widths that are not a multiple of the 4-pixel tile,
# channel counts that are not multiples of 4 (padding) or 16 (partial register blocks), and
# widths and channels past 16 with tails (the weight gradient's 16 x 16 transpose blocks).
SHAPES = [(9, 11, 64, 64), (5, 8, 3, 64), (7, 5, 5, 3), (6, 13, 64, 3), (5, 6, 24, 40),
          (1, 1, 8, 16), (3, 2, 1, 1), (3, 37, 40, 24)]


def _input(fill, shape, xdtype, kind):
    # "u7": uint8 below 128, post-ReLU int8 activations as the conv reads them (the AVX2 tile's
    # whole-byte form); the others reach 255 or are shifted (its split form)
    if xdtype == "u7":
        return fill(shape, np.uint8, kind) & np.uint8(127)
    return fill(shape, xdtype, kind)


XDTYPES = [np.int8, np.uint8, "u7"]


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("xdtype", XDTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_conv3x3_bit_exact(fill, kind, xdtype, shape):
    h, w, c, n = shape
    x = _input(fill, (h, w, c), xdtype, kind)
    wt = fill((3, 3, c, n), np.int8, kind)
    got = igemm_u8s8.conv3x3(x, wt)
    assert got.dtype == np.int32 and got.shape == (h, w, n)
    np.testing.assert_array_equal(got.astype(np.int64), conv3x3_ref(x, wt))


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("xdtype", [np.uint8, "u7"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", [-1, 1, 3])
def test_conv3x3_padded_is_conv3x3(fill, kind, xdtype, shape, mode):
    """conv3x3_padded of an input already in the padded layout (what requant_relu_pad_u8
    writes) gives conv3x3's integers and Eq. 11 maximum."""
    h, w, c, n = shape
    x = _input(fill, (h, w, c), xdtype, kind)
    wt = fill((3, 3, c, n), np.int8, kind)
    xp = np.zeros(igemm_u8s8.padded_shape(h, w, c), np.uint8)
    xp[1:-1, 1:-1, :c] = x
    got, want = igemm_u8s8.conv3x3_padded(xp, wt, mode), igemm_u8s8.conv3x3(x, wt, mode)
    if mode == -1:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    if mode == 3:  # GATE_CHANNELS: each channel's ReLU maximum
        ref = conv3x3_ref(x, wt).reshape(-1, n)
        np.testing.assert_array_equal(got[1], np.maximum(ref.max(0), 0))
    with pytest.raises(ValueError, match="channels"):
        igemm_u8s8.conv3x3_padded(np.zeros((h + 2, w + 2, xp.shape[2] + 4), np.uint8), wt)


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("xdtype", XDTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_wgrad3x3_bit_exact(fill, kind, xdtype, shape):
    h, w, c, n = shape
    x = _input(fill, (h, w, c), xdtype, kind)
    g = fill((h, w, n), np.int8, kind)
    got = igemm_u8s8.wgrad3x3(x, g)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, wgrad_x8s8_ref(im2col(x), g.reshape(-1, n)))




@pytest.mark.parametrize("xdtype", [np.int8, np.uint8])
@pytest.mark.parametrize("shape", SHAPES)
def test_operand_packing_writes_every_byte(fill, xdtype, shape):
    """_pad_x8 (both layouts), _pack_grad and _pack_w fill buffers allocated uninitialised:
    against plain NumPy forms built from zeros, on buffers that start as garbage."""
    h, w, c, n = shape
    x = fill((h, w, c), xdtype, "mixed")
    c4, wp = -(-c // 4) * 4, -(-w // 4) * 4
    flip = 128 if xdtype == np.int8 else 0
    ref = np.full((h + 2, wp + 2, c4), flip, np.uint8)
    ref[:, :, c:] = 0
    ref[1:-1, 1:w + 1, :c] = x.view(np.uint8) ^ np.uint8(flip)
    for chw, want in ((False, ref[:, :w + 2]), (True, ref.transpose(2, 0, 1))):
        got = np.full(want.shape, GARBAGE, np.uint8)
        igemm_u8s8._pad_x8(x.view(np.uint8), np.uint8(flip), got, chw)
        np.testing.assert_array_equal(got, want)
    g = fill((h, w, n), np.int8, "mixed")
    npad = -(-n // 8) * 8
    gp = np.zeros((h, wp, npad), np.int8)
    gp[:, :w, :n] = g
    got = np.full((h, wp // 4, npad, 4), GARBAGE, np.int8)
    igemm_u8s8._pack_grad(g, got)
    np.testing.assert_array_equal(got, gp.reshape(h, wp // 4, 4, npad).transpose(0, 1, 3, 2))
    wt = fill((3, 3, c, n), np.int8, "mixed")
    wk = np.zeros((3, 3, c4, npad), np.int8)
    wk[:, :, :c, :n] = wt
    got, wsum = np.full((9 * c4 // 4, npad, 4), GARBAGE, np.int8), np.full(npad, 7, np.int64)
    igemm_u8s8._pack_w(wt, c4, got, wsum)
    np.testing.assert_array_equal(got, wk.reshape(9 * c4 // 4, 4, npad).transpose(0, 2, 1))
    np.testing.assert_array_equal(wsum[:n], 128 * wt.reshape(-1, n).astype(np.int64).sum(0))
    assert not wsum[n:].any()


@pytest.mark.parametrize("xdtype,val", [(np.int8, -128), (np.uint8, 255)])
def test_wgrad3x3_chunks_past_int32(xdtype, val):
    """More pixels than one int32 accumulator holds at the extremes (400 x 400 products of
    -128 * -128 or 255 * -128 exceed 2**31): the chunked int32 sums widened to int64 stay
    exact."""
    h = w = 400
    x = np.full((h, w, 4), val, xdtype)
    g = np.full((h, w, 16), -128, np.int8)
    got = igemm_u8s8.wgrad3x3(x, g)
    center = got[4 * 4]  # tap (1, 1): every pixel contributes
    assert abs(h * w * int(val) * -128) > 2 ** 31
    assert (center == h * w * int(val) * -128).all()
    np.testing.assert_array_equal(got, wgrad_x8s8_ref(im2col(x), g.reshape(-1, 16)))


def test_small_chunks_equal_one_chunk(fill, monkeypatch):
    x = fill((9, 11, 8), np.uint8, "random")
    g = fill((9, 11, 16), np.int8, "random")
    whole = igemm_u8s8.wgrad3x3(x, g)
    monkeypatch.setattr(igemm_u8s8, "WGRAD_CHUNK", 16)  # one row of 12 padded pixels a chunk
    np.testing.assert_array_equal(igemm_u8s8.wgrad3x3(x, g), whole)


def test_too_many_output_channels():
    with pytest.raises(ValueError):
        igemm_u8s8.conv3x3(np.zeros((2, 2, 4), np.uint8), np.zeros((3, 3, 4, 65), np.int8))


@pytest.mark.parametrize("split", [0, 1])
def test_kernel_uses_the_targets_instructions(split):
    """The register tile really compiles to vpdpbusd on 512-bit registers (VNNI), to the VEX
    vpdpbusd on 256-bit ones (AVX-VNNI) or to vpmaddubsw + vpmaddwd on 256-bit ones (AVX2),
    with A bytes whole or split (a fresh,
    uncached function: Numba cannot show the assembly of cached code)."""
    from numba import njit

    @njit
    def tile(a, segs, b, out):
        igemm_emit.tile(a, 0, 4, segs, 1, b, 256, out, 0, 64, 4, 8, split)

    a = np.arange(16, dtype=np.uint8) * (16 if split else 1)  # bytes to 240 when split
    b = np.ones(256, np.int8)
    out = np.zeros(256, np.int32)
    tile(a, np.zeros(1, np.int64), b, out)
    # row r, any column: one group of four bytes a[4r:4r+4] times ones
    np.testing.assert_array_equal(out.reshape(4, 64)[:, 0], a.reshape(4, 4).sum(axis=1))
    asm = "".join(tile.inspect_asm().values())
    if PATH == "vnni":
        assert "vpdpbusd" in asm and "zmm" in asm
    elif PATH == "avxvnni":
        assert "vpdpbusd" in asm and "ymm" in asm and "zmm" not in asm
    else:
        assert "vpmaddubsw" in asm and "vpmaddwd" in asm and "ymm" in asm
        assert "zmm" not in asm and "vpdpbusd" not in asm


def test_avx2_pair_sums_at_the_saturation_bound():
    """The AVX2 tile's exactness bound: a vpmaddubsw pair sum of two A bytes of 127 (or of the
    split parts of 255) and B bytes of -128 is -32,512 / -65,280 in int32, never the int16
    saturation -32,768. Checked at the extremes on whichever tile this target runs."""
    for a_val, split_needed in ((127, False), (255, True)):
        x = np.full((3, 5, 8), a_val, np.uint8)
        w = np.full((3, 3, 8, 16), -128, np.int8)
        assert igemm_u8s8._split(x, False) == (PATH == "avx2" and split_needed)
        got = igemm_u8s8.conv3x3(x, w)
        assert got[1, 1, 0] == 9 * 8 * a_val * -128
        np.testing.assert_array_equal(got.astype(np.int64), conv3x3_ref(x, w))


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("shape", [(9, 11, 64, 64), (7, 5, 5, 3), (5, 6, 24, 40)])
def test_conv3x3_row_maxima_are_eq11s_maximum(fill, kind, mode, shape):
    """The maximum the tile takes row by row (Eq. 11's max |gated(acc)|) equals the plain
    reference's for every gate mode, and the output is unchanged by taking it."""
    from intsr.kernels.requant import max_abs_s32_ref
    h, w, c, n = shape
    x = fill((h, w, c), np.int8, kind)
    wt = fill((3, 3, c, n), np.int8, kind)
    gate = fill((h * w, n), np.int8, "random") if mode == 2 else None
    out, m = igemm_u8s8.conv3x3(x, wt, mode, gate)
    np.testing.assert_array_equal(out, igemm_u8s8.conv3x3(x, wt))
    assert m == max_abs_s32_ref(out.reshape(h * w, n), gate, mode)


def test_conv3x3_x16_int32_output_at_its_bound():
    """fits_s32_x16 at the edge: a column whose |w| sum times 65535 is just below 2**31 gets
    an int32 output, exact where every input is 65535 (the centre pixel reaches 65535 * 32768);
    one more unit of weight and the output is int64, exact too (an int32 would wrap)."""
    x = np.full((3, 3, 64), 65535, np.uint16)
    for extra, dtype in ((0, np.int32), (1, np.int64)):
        w = np.zeros((3, 3, 64, 2), np.int8)
        flat = w.reshape(-1, 2)
        flat[:258, 0] = 127
        flat[258, 0] = 2 + extra  # 258 * 127 + 2 = 32768
        got = igemm_u8s8.conv3x3_x16(x, w)
        assert got.dtype == dtype and igemm_u8s8.fits_s32_x16(x, w) == (dtype == np.int32)
        assert int(got[1, 1, 0]) == 65535 * (32768 + extra)
        np.testing.assert_array_equal(got, conv3x3_ref(x, w))


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("xdtype", [np.uint16, np.int16])
@pytest.mark.parametrize("shape", [(9, 11, 64, 64), (5, 8, 3, 64), (6, 13, 64, 3), (5, 6, 24, 40)])
def test_conv3x3_x16_both_planes_in_one_pass(fill, kind, xdtype, shape):
    """16-bit data x int8 weights, the two byte planes combined in the tile's row loop: exact
    against the int64 reference at the extremes (-32768, 65535), maximum included."""
    from intsr.kernels.requant import max_abs_s32_ref
    h, w, c, n = shape
    x = fill((h, w, c), xdtype, kind)
    wt = fill((3, 3, c, n), np.int8, kind)
    got = igemm_u8s8.conv3x3_x16(x, wt)
    assert got.dtype == (np.int32 if igemm_u8s8.fits_s32_x16(x, wt) else np.int64)
    np.testing.assert_array_equal(got, conv3x3_ref(x, wt))
    out, m = igemm_u8s8.conv3x3_x16(x, wt, 0)
    assert m == max_abs_s32_ref(got.reshape(h * w, n), None, 0)


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("gsize", [4, 8, 16])
@pytest.mark.parametrize("shape", [(9, 11, 64, 64), (6, 13, 64, 3), (3, 37, 32, 24)])
@pytest.mark.parametrize("mode", [-1, 1, 3])
def test_conv3x3_grouped_bit_exact(fill, kind, gsize, shape, mode):
    """The Horner tile (tile_shifted) against conv3x3_ref per group combined by shifts, the
    groups in a shuffled order, with the scales as far apart as the int32 headroom allows
    (2**6 at 64 channels): with "max" / "min" inputs every product is 255 x +-128 and the
    finest sum reaches 9 * 64 * 255 * 128 * 2**6, above 2**30."""
    h, w, c, n = shape
    xp = np.zeros(igemm_u8s8.padded_shape(h, w, c), np.uint8)
    xp[1:-1, 1:-1] = fill((h, w, c), np.uint8, kind)
    wt = fill((3, 3, c, n), np.int8, kind)
    rng = np.random.default_rng(c + gsize)
    order = rng.permutation(c // gsize)
    steps = np.zeros(c // gsize, np.int64)
    budget = 6 if c == 64 else 7
    for _ in range(budget):  # spread the largest total shift the headroom allows
        steps[1 + rng.integers(c // gsize - 1)] += 1
    assert igemm_u8s8.grouped_headroom(c, steps)
    got = igemm_u8s8.conv3x3_grouped(xp, wt, order, gsize, steps, mode)
    want = dispatch.conv3x3_grouped_ref(xp, wt, order, gsize, steps)
    out = got if mode == -1 else got[0]
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out.astype(np.int64), want)
    if mode == 1:  # GATE_RELU: Eq. 11's maximum
        assert got[1] == max(0, int(want.max()))
    if mode == 3:  # GATE_CHANNELS: each channel's
        np.testing.assert_array_equal(got[1], np.maximum(want.reshape(-1, n).max(0), 0))
    # one group, or every step zero: the plain conv's integers
    zero = np.zeros_like(steps)
    np.testing.assert_array_equal(igemm_u8s8.conv3x3_grouped(xp, wt, order, gsize, zero),
                                  igemm_u8s8.conv3x3_padded(xp, wt))


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("n", [64, 3])
def test_conv3x3_grouped_runs_of_groups(fill, kind, n):
    """Groups in channel order with no step between them run as one segment per tap (_runs:
    segments of different lengths, each with its own step count in the tile), bit-exact
    against the groups one by one; a step, or a group out of channel order, starts a run."""
    h, w, c, gsize = 5, 9, 64, 4
    xp = np.zeros(igemm_u8s8.padded_shape(h, w, c), np.uint8)
    xp[1:-1, 1:-1] = fill((h, w, c), np.uint8, kind)
    wt = fill((3, 3, c, n), np.int8, kind)
    order = np.array([0, 1, 2, 5, 6, 3, 4, 7, 8, 9, 10, 11, 12, 13, 14, 15])
    steps = np.zeros(16, np.int64)
    steps[[5, 9]] = 3, 3  # before group 3, and inside the run 7..15
    starts, lens, run_steps = igemm_u8s8._runs(order, gsize, steps)
    np.testing.assert_array_equal(starts, [0, 20, 12, 28, 36])
    np.testing.assert_array_equal(lens, [12, 8, 8, 8, 28])
    np.testing.assert_array_equal(run_steps, [0, 0, 3, 0, 3])
    want = dispatch.conv3x3_grouped_ref(xp, wt, order, gsize, steps)
    got = igemm_u8s8.conv3x3_grouped(xp, wt, order, gsize, steps)
    np.testing.assert_array_equal(got.astype(np.int64), want)


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("xdtype", [np.int8, np.uint8])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 6])
@pytest.mark.parametrize("mode", [-1, 0, 1, 2, 3])
def test_few_outputs_spread_over_the_tile(fill, kind, xdtype, n, mode):
    """A conv with at most SPREAD_MAX_N outputs takes its horizontal taps as tile columns and
    sums them per output afterwards (_conv_spread): bit-exact against the plain reference at
    the extremes, with sign-shifted inputs (each column's own correction), in every gate mode
    (the maxima taken from the summed rows), at widths 1 and 2 (the row ends); 6 outputs take
    the nine-tap tile, the boundary."""
    from intsr.kernels.requant import max_abs_s32_ref
    assert igemm_u8s8.SPREAD_MAX_N == 5
    for h, w, c in [(6, 11, 64), (3, 1, 8), (2, 2, 3)]:
        x = fill((h, w, c), xdtype, kind)
        wt = fill((3, 3, c, n), np.int8, kind)
        gate = fill((h * w, n), np.int8, "random") if mode == 2 else None
        want = conv3x3_ref(x, wt)
        got = igemm_u8s8.conv3x3(x, wt, mode, gate)
        out = got if mode == -1 else got[0]
        assert out.dtype == np.int32
        np.testing.assert_array_equal(out.astype(np.int64), want)
        if mode == 3:
            np.testing.assert_array_equal(got[1], np.maximum(want.reshape(-1, n).max(0), 0))
        elif mode != -1:
            assert got[1] == max_abs_s32_ref(want.reshape(h * w, n), gate, mode)


def test_conv3x3_grouped_refuses_what_int32_cannot_hold():
    xp = np.zeros(igemm_u8s8.padded_shape(2, 2, 64), np.uint8)
    wt = np.zeros((3, 3, 64, 8), np.int8)
    steps = np.array([0] + [1] * 7)  # 2**7 at 64 channels: 1.2e9 * 2 > 2**31
    assert not igemm_u8s8.grouped_headroom(64, steps)
    with pytest.raises(ValueError, match="int32"):
        igemm_u8s8.conv3x3_grouped(xp, wt, np.arange(8), 8, steps)
    with pytest.raises(ValueError, match="whole groups"):
        igemm_u8s8.conv3x3_grouped(xp, wt, np.arange(8), 6, steps)


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("shape", [(9, 11, 3, 64), (5, 6, 28, 24), (4, 7, 5, 3), (1, 1, 1, 8)])
@pytest.mark.parametrize("mode", [-1, 1, 3])
def test_conv3x3_w16_bit_exact(fill, kind, shape, mode):
    """The image against 16-bit weights in one Horner pass (hi, ones, lo planes; shifts 1 and
    7) against conv3x3_ref, at the extremes of both dtypes and at the 28 channels the headroom
    allows; with the maximum of each mode."""
    h, w, c, n = shape
    x = fill((h, w, c), np.uint8, kind)
    wt = fill((3, 3, c, n), np.int16, kind)
    got = igemm_u8s8.conv3x3_w16(x, wt, mode)
    out = got if mode == -1 else got[0]
    want = conv3x3_ref(x, wt)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out.astype(np.int64), want)
    if mode == 1:
        assert got[1] == max(0, int(want.max()))
    if mode == 3:
        np.testing.assert_array_equal(got[1], np.maximum(want.reshape(-1, n).max(0), 0))
    with pytest.raises(ValueError, match="28 inputs"):
        igemm_u8s8.conv3x3_w16(np.zeros((2, 2, 29), np.uint8), np.zeros((3, 3, 29, 8), np.int16))
