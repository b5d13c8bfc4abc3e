"""IntNet: the network of intsr.arch on integers only, forward / backward / SGD step.

One step, as data: uint8 image -> 8 x [conv3x3 into int32 -> ReLU + Eq. 11 scale +
requantization to 8 bits] -> residual add in int64 -> L1 sign (int8, exact) -> 8 x [masked weight
gradient (int64, exact) -> Eq. 14 int32 -> Eq. 15 update of the int32 masters; masked activation
gradient -> Eq. 11 + requantization] -> int8 forward weights from the masters (Eq. 15 -> 8 bits).
docs/integer-semantics.md states every rounding and accumulator width used here. With a
precision profile (intsr.precision) any of the 8-bit tensors above may be 16-bit and the masters
16-bit; the products then run as byte planes (kernels/planes_x16.py), the same integers. Every
convolution goes through kernels/dispatch.py (conv3x3, agrad3x3, wgrad3x3), which picks the
register tile or the portable path.
"""
import collections

import numpy as np

from intsr.arch import HALO, NUM_LAYERS, layer_shapes
from intsr.kernels.dispatch import (
    agrad3x3,
    conv3x3,
    conv3x3_grouped,
    conv3x3_padded,
    padded_shape,
    takes_padded,
    wgrad3x3,
)
from intsr.kernels.elementwise import l1_grad_s64, pixels_s64, residual_add_u8s32
from intsr.kernels.requant import (
    GATE_CHANNELS,
    GATE_MASK,
    GATE_NONE,
    GATE_RELU,
    channel_max_relu_s32,
    max_abs_s32,
    no_gate,
    requant_relu_pad_u8,
    requant_relu_pad_u8_grouped,
    requant_s32,
)
from intsr.kernels.update import sgd_update_s32
from intsr.precision import INT8
from intsr.quant import QTensor, ceil_log2, saturate, shift_round
from intsr.threads import map_tiles, side_thread

MODES = ("ours", "standard")  # 32-bit master weights (Eq. 14-15) or 8-bit weights (Eq. 12-13)


def requantize(acc, exp, gate, mode, nearest, static_scale=None, unsigned=False, bits=8,
               max_abs=None):
    """int32/int64 accumulator (real = acc * 2**exp), 2-D -> ``bits``-bit QTensor (8 or 16):
    signed, or unsigned (real = v * 2**(s - bits)) for a post-ReLU activation when ``unsigned``.

    Dynamic (Eq. 11 on integers): s = ceil(log2(max|acc|)) + exp, v = acc * 2**(7 - ceil_log2)
    (2**(8 - ...) unsigned; 15 / 16 at 16 bits). Static: s fixed, out-of-range values
    saturate."""
    if gate is None:
        gate = no_gate(acc.shape)
    scale, shift, lo, hi, dt, _ = _requant_params(acc, exp, gate, mode, static_scale, unsigned,
                                                  bits, max_abs)
    out = np.empty(acc.shape, dt)
    requant_s32(acc, gate, mode, shift, nearest, lo, hi, out)
    return QTensor(out, scale)


def _requant_params(acc, exp, gate, mode, static_scale, unsigned, bits, max_abs):
    """requantize's scale, shift, range, dtype and fraction bits (exp = scale - frac)."""
    if unsigned:
        frac, lo, hi, dt = bits, 0, (1 << bits) - 1, np.uint8 if bits == 8 else np.uint16
    else:
        frac, lo, hi = bits - 1, -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        dt = np.int8 if bits == 8 else np.int16
    if static_scale is None:
        c = ceil_log2(max_abs_s32(acc, gate, mode) if max_abs is None else max_abs)
        scale, shift = c + exp, frac - c
    else:
        scale, shift = static_scale, exp - (static_scale - frac)
    return scale, shift, lo, hi, dt, frac


def requantize_padded(acc, width, exp, nearest, static_scale=None, unsigned=False,
                      max_abs=None):
    """requantize of a ReLU forward output to 8 bits (GATE_RELU), written as the next
    convolution's zero-padded input (dispatch.conv3x3_padded): (scale, exp, xp), the same
    bytes as requantize's at xp[1:-1, 1:-1, :C] and the exp its QTensor would have."""
    gate = no_gate(acc.shape)
    scale, shift, _, hi, _, frac = _requant_params(acc, exp, gate, GATE_RELU, static_scale,
                                                   unsigned, 8, max_abs)
    xp = np.empty(padded_shape(acc.shape[0] // width, width, acc.shape[1]), np.uint8)
    requant_relu_pad_u8(acc, width, shift, nearest, hi, xp)
    return scale, scale - frac, xp


GROUP_DEPTH = 6  # the finest group at most 2**6 finer than the coarsest: int32 headroom of
# conv3x3_grouped at 64 input channels (9 * 64 * 255 * 128 * 2**6 < 2**31; 2**7 would not fit)


def requantize_grouped(acc, width, exp, nearest, gsize, unsigned=False, cmax=None):
    """requantize_padded with Eq. 11 per group of ``gsize`` adjacent channels instead of per
    tensor (the SR pass with ``Precision.sr_groups``): group g's scale c_g = ceil(log2(its
    maximum)), at least the coarsest group's (the tensor's own Eq. 11 scale) minus
    GROUP_DEPTH; its values shifted by frac - c_g and rounded as requantize. Returns (scale,
    exp, xp, groups): the tensor's scale, the finest group's exp, the padded bytes (channels
    in place), and (order, gsize, steps) for conv3x3_grouped: the groups coarsest first
    (stable, so equal scales keep their order and need no shift between them). With every c_g
    equal the bytes are requantize_padded's and the next conv's sum the same integers.
    ``cmax``: each channel's ReLU maximum, if the convolution took it (GATE_CHANNELS)."""
    c = acc.shape[1]
    if cmax is None:
        cmax = np.empty(c, np.int64)
        channel_max_relu_s32(acc, cmax)
    cl = np.array([ceil_log2(m) for m in cmax.reshape(-1, gsize).max(1)], np.int64)
    cl = np.maximum(cl, cl.max() - GROUP_DEPTH)
    frac, hi = (8, 255) if unsigned else (7, 127)
    xp = np.empty(padded_shape(acc.shape[0] // width, width, c), np.uint8)
    requant_relu_pad_u8_grouped(acc, width, np.repeat(frac - cl, gsize), nearest, hi, xp)
    order = np.argsort(-cl, kind="stable")
    top = cl[order]
    steps = np.concatenate([[0], top[:-1] - top[1:]])
    return int(top[0]) + exp, int(top[-1]) + exp - frac, xp, (order, gsize, steps)


def _macs_per_pixel(w8):
    """Multiply-accumulates of one forward pass per pixel: 9 taps x C_in x C_out per layer."""
    return sum(9 * wq.shape[2] * wq.shape[3] for wq in w8)


def _as_unsigned(v):
    """Layer inputs are the uint8 image or post-ReLU activations, never negative, so their
    int8 (int16) bytes read as uint8 (uint16) are the same numbers: the u8 x s8 kernels need no
    sign shift."""
    return v.view(np.uint8 if v.itemsize == 1 else np.uint16) if v.dtype.kind == "i" else v


def _weight_grad(dw, exp, bits, nearest, static_scale=None):
    """Exact int64 weight gradient -> `bits`-bit QTensor (Eq. 11 + Eq. 14, or Eq. 10 for 8)."""
    frac = bits - 1
    if static_scale is None:
        c = ceil_log2(int(np.abs(dw).max())) if dw.size else 0
        scale, shift = c + exp, frac - c
    else:
        scale, shift = static_scale, exp - (static_scale - frac)
    return QTensor(saturate(shift_round(dw, shift, "nearest" if nearest else "floor"), bits), scale)


class Cache:
    """What the forward pass keeps for the backward pass: the layer inputs (int8 QTensors, the
    image as uint8), the final residual sum (int64 with exponent), and the channel orders and
    forward weights those inputs were computed in (_kept_first)."""

    def __init__(self, acts, out, out_exp, order=None, w8=None):
        self.acts, self.out, self.out_exp = acts, out, out_exp
        self.order, self.w8 = order, w8


def _kept_first(kept, c):
    """The order a pruned layer's output channels are stored in during a training pass: its
    kept channels first (ascending), then the others; None (as computed) when all or none are
    kept. The activation gradient's ReLU gate then is the stored activation's first columns,
    a view, instead of a gather of scattered kept columns on every step. Convolutions sum
    channels exactly in integers and Eq. 11 takes one maximum per tensor, so the order changes
    no integer of the step."""
    if kept.size in (0, c):
        return None
    rest = np.ones(c, bool)
    rest[kept] = False
    return np.concatenate([kept, np.flatnonzero(rest)])


def _reordered(w8, order):
    """Forward weights in the storage order: a layer's input channels in order[layer - 1], its
    output channels in order[layer] (None: as they are)."""
    out = []
    for layer, wq in enumerate(w8):
        v = wq.value
        if layer > 0 and order[layer - 1] is not None:
            v = v[:, :, order[layer - 1]]
        if order[layer] is not None:
            v = v[:, :, :, order[layer]]
        out.append(wq if v is wq.value else QTensor(np.ascontiguousarray(v), wq.scale))
    return out


def new_record():
    """Per-site lists of the scales seen: forward activations of layers 1-7, activation
    gradients of layers 1-7, weight gradients of layers 1-8."""
    return {"act": [[] for _ in range(NUM_LAYERS - 1)],
            "grad": [[] for _ in range(NUM_LAYERS - 1)],
            "wgrad": [[] for _ in range(NUM_LAYERS)]}


def calibrate(net, pairs):
    """Static quantization (Section V-B): run dynamic steps' forward and backward on calibration
    pairs without updating, record each tensor's Eq. 11 scale, keep the maximum per tensor."""
    record = new_record()
    for inp, target in pairs:
        cache = net.forward(inp, record)
        net.backward(cache, net.loss_grad(cache, target)[2], record)
    return {site: [max(v) if v else 0 for v in lists] for site, lists in record.items()}


class IntNet:
    """The network on integers: int8 forward weights derived from int32 master weights (mode
    'ours', Eq. 14-15) or plain int8 weights (mode 'standard', Eq. 12-13); dynamic (Eq. 11) or
    static per-tensor scales; per-layer gradient masks (Eq. 6).

    ``weights``: list of QTensors in HWIO (int32 for 'ours', int8 for 'standard').
    ``masks``: list of NUM_LAYERS bool arrays over output channels, or None (train all).
    ``unsigned``: store post-ReLU activations as uint8 (one more bit; never negative) instead
    of the paper's int8; gradients stay int8.
    ``precision``: per-tensor widths (intsr.precision; None: INT8, the paper's). 32-bit
    ``weights`` are rounded (half up) to 16-bit masters where the precision says so."""

    def __init__(self, weights, masks=None, *, mode="ours", rounding="nearest", static=None,
                 unsigned=False, precision=None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if rounding not in ("floor", "nearest"):
            raise ValueError("rounding must be 'floor' or 'nearest'")
        shapes = layer_shapes()
        if len(weights) != NUM_LAYERS or any(w.shape != s
                                             for w, s in zip(weights, shapes, strict=True)):
            raise ValueError("weights do not match the architecture")
        want = np.int32 if mode == "ours" else np.int8
        if any(w.value.dtype != want for w in weights):
            raise TypeError(f"mode {mode!r} needs {np.dtype(want)} weights")
        self.mode, self.nearest, self.static = mode, rounding == "nearest", static
        self.unsigned = unsigned
        self.prec = INT8 if precision is None else precision
        if self.prec != INT8 and (mode != "ours" or static is not None):
            raise ValueError("bit widths other than int8 need mode 'ours' and dynamic scales")
        rnd = "nearest" if self.nearest else "floor"
        self.weights = [QTensor(w.value.copy(), w.scale) if b == 32 else
                        QTensor(saturate(shift_round(w.value, b - 32, rnd), b), w.scale)
                        for w, b in zip(weights, self.prec.master, strict=True)]
        if masks is None:
            masks = [np.ones(s[3], bool) for s in shapes]
        masks = [np.asarray(m, bool) for m in masks]
        if len(masks) != NUM_LAYERS or any(m.shape != (s[3],)
                                           for m, s in zip(masks, shapes, strict=True)):
            raise ValueError("masks do not match the architecture")
        if not masks[-1].all():
            raise ValueError("the last layer is never pruned")
        self.kept = [np.flatnonzero(m).astype(np.int64) for m in masks]
        self.macs = 0
        self._derive_forward_weights()

    # -- weights ------------------------------------------------------------------------------
    def _derive_forward_weights(self):
        """int8 weights for the forward pass: the masters rounded from 32 to 8 bits."""
        if self.mode == "standard":
            self.w8 = list(self.weights)  # a snapshot: updates replace entries of self.weights
            return
        self.w8 = []
        for w, f in zip(self.weights, self.prec.fwd, strict=True):
            flat = w.value.reshape(-1, w.shape[3])
            out = np.empty(flat.shape, np.int8 if f == 8 else np.int16)
            requant_s32(flat, no_gate(flat.shape), GATE_NONE, f - w.bits, self.nearest,
                        -(1 << (f - 1)), (1 << (f - 1)) - 1, out)
            self.w8.append(QTensor(out.reshape(w.shape), w.scale))

    # -- forward ------------------------------------------------------------------------------
    def forward(self, image, record=None, w8=None, keep=True, act_bits=None, count=True,
                groups=0, maxima=None):
        """image: (H, W, 3) uint8, read as p / 256 (scale 0). Returns a Cache.

        ``w8``: forward weights to use instead of the network's own (a perturbed copy);
        ``keep=False``: store no layer input (a loss-only pass: one layer's buffers alive; an
        8-bit layer output goes straight into the next conv's padded input, the same bytes);
        ``act_bits``: activation widths instead of the training ones (the SR pass's);
        ``count=False``: leave ``macs`` alone (tiles on several threads: their caller counts);
        ``groups``: with keep=False, the 8-bit activations' Eq. 11 per group of this many
        channels (requantize_grouped; ``Precision.sr_groups``); ``maxima``: a list that gets
        each ReLU layer's per-channel maxima (int64, the accumulators') appended."""
        x = QTensor(np.ascontiguousarray(image), 0)
        h, w, _ = image.shape
        acts = [x] if keep else []
        w8 = self.w8 if w8 is None else w8
        act_bits = self.prec.act if act_bits is None else act_bits
        if count:
            self.macs += h * w * _macs_per_pixel(w8)
        order = [None] * NUM_LAYERS  # the last layer is never pruned
        if keep:  # a training pass: its backward gates on the kept channels
            order[:-1] = [_kept_first(k, wq.shape[3])
                          for k, wq in zip(self.kept[:-1], w8[:-1], strict=True)]
            w8 = _reordered(w8, order)
        # A pass that keeps no activation requantizes an 8-bit layer output straight into the
        # next convolution's zero-padded input (xp), skipping the padding copy (the same bytes)
        xp, x_exp, grp = None, x.exp, None  # grp: xp's channel groups (requantize_grouped)
        for layer in range(NUM_LAYERS - 1):
            wq = w8[layer]
            st = None if self.static is None else self.static["act"][layer]
            # Eq. 11 per channel group for this output: its convolution gives each channel's
            # maximum instead of the tensor's
            grouped = not keep and groups and act_bits[layer] == 8 and st is None and \
                w8[layer + 1].value.dtype == np.int8 and wq.value.shape[3] % groups == 0
            mode = GATE_CHANNELS if grouped or maxima is not None else GATE_RELU
            if xp is None:
                acc, m = conv3x3(_as_unsigned(x.value), wq.value, mode)
            elif grp is None:
                acc, m = conv3x3_padded(xp, wq.value, mode)
            else:
                acc, m = conv3x3_grouped(xp, wq.value, *grp, mode)
            flat = acc.reshape(h * w, -1)
            if mode == GATE_CHANNELS:
                cmax, m = m, int(m.max(initial=0))
                if maxima is not None:
                    maxima.append(cmax)
            grp = None
            if grouped:
                scale, x_exp, xp, grp = requantize_grouped(flat, w, x_exp + wq.exp, self.nearest,
                                                           groups, self.unsigned, cmax)
            elif not keep and act_bits[layer] == 8 and takes_padded(w8[layer + 1].value):
                scale, x_exp, xp = requantize_padded(flat, w, x_exp + wq.exp, self.nearest, st,
                                                     self.unsigned, m)
            else:
                q = requantize(flat, x_exp + wq.exp, None, GATE_RELU, self.nearest, st,
                               self.unsigned, act_bits[layer], m)
                x, xp = QTensor(q.value.reshape(h, w, -1), q.scale), None
                scale, x_exp = q.scale, q.exp
            del acc, flat  # one int32 accumulator alive at a time (peak memory)
            if record is not None:
                record["act"][layer].append(scale)
            if keep:
                acts.append(x)
        wq = w8[-1]
        if xp is None:
            acc = conv3x3(_as_unsigned(x.value), wq.value)
        else:
            acc = conv3x3_padded(xp, wq.value) if grp is None else \
                conv3x3_grouped(xp, wq.value, *grp)
        exp = x_exp + wq.exp
        # Residual (image + net) at the finer of the two exponents, exact in int64.
        e = min(-8, exp)
        # |acc| < 2**31 (int32); an int64 accumulator of 16-bit operands has its own bound
        acc_bits = 31 if acc.dtype == np.int32 else int(np.abs(acc).max(initial=0)).bit_length()
        if -8 - e > 54 or exp - e + acc_bits > 62:  # beyond residual_add_u8s32's headroom
            if acc.any():
                raise ArithmeticError("residual operands too far apart in scale")
            # An all-zero output (a flat black tile: every activation 0, so every Eq. 11 scale
            # fell to the accumulator's exponent) is exact at any exponent: use the image's.
            exp = e = -8
        out = np.empty((h * w, 3), np.int64)
        residual_add_u8s32(image.reshape(h * w, 3), acc.reshape(h * w, 3), -8 - e, exp - e, out)
        return Cache(acts, out, e, order, w8)

    def predict(self, image, tile=None):
        """Super-resolve an upsampled (H, W, 3) uint8 image: uint8 output, rounded half up.

        ``tile``: process tiles of at most ``tile`` x ``tile`` output pixels, each computed on
        a crop with a HALO-pixel margin (the receptive field of the 8 convs), so memory stays
        bounded for any image size. Each tile gets its own dynamic scales (Eq. 11 over the
        tile's own values), so a tiled result can differ from the untiled one in the last bit
        where a tile's maxima are smaller than the image's (docs/integer-semantics.md).
        Activations have the precision's SR widths (``Precision.sr_act``). Tiles run in
        parallel, one per thread (threads.map_tiles): the result does not depend on the number
        of threads, and memory is bounded by the tile size times the threads."""
        h, w, _ = image.shape
        w8 = _reordered(self.w8, self._group_order(image)) if self.prec.sr_groups else self.w8
        if tile is None or (h <= tile and w <= tile):
            return self._predict_crop(image, w8)
        out = np.empty((h, w, 3), np.uint8)
        crops = [(y, x, max(0, y - HALO), max(0, x - HALO), min(h, y + tile + HALO),
                  min(w, x + tile + HALO)) for y in range(0, h, tile) for x in range(0, w, tile)]
        self.macs += sum((y1 - y0) * (x1 - x0) for _, _, y0, x0, y1, x1 in crops) * \
            _macs_per_pixel(self.w8)

        def one(crop):
            y, x, y0, x0, y1, x1 = crop
            part = self._predict_crop(np.ascontiguousarray(image[y0:y1, x0:x1]), w8, False)
            out[y:y + tile, x:x + tile] = part[y - y0:y - y0 + tile, x - x0:x - x0 + tile]
        map_tiles(one, crops)
        return out

    def _group_order(self, image):
        """The hidden channels of each layer sorted by their maximum on a subsample of
        ``image`` (every k-th pixel, k >= 4, about 128 x 128 of them): the SR pass with
        ``sr_groups`` runs on weights permuted so (model._reordered), and its groups of
        adjacent channels then hold channels of similar range. A permutation of hidden
        channels changes no integer of the network (exact sums; each channel's own values);
        only which channels share a group's Eq. 11 scale. Measured on Set5 x2 (g^d_2.0):
        34.86 dB in the stored order, 34.88 so, 34.89 with the whole image's maxima
        (docs/precision.md). One order per image, before any tile: the tiles' results do
        not depend on the threads."""
        h, w, _ = image.shape
        k = 4
        while h * w > (1 << 14) * k * k:
            k += 1
        maxima = []
        self.forward(np.ascontiguousarray(image[::k, ::k]), keep=False,
                     act_bits=self.prec.sr_widths, maxima=maxima)
        return [np.argsort(-m, kind="stable") for m in maxima] + [None]

    def _predict_crop(self, image, w8=None, count=True):
        h, w, _ = image.shape
        cache = self.forward(image, w8=w8, keep=False, act_bits=self.prec.sr_widths,
                             count=count, groups=self.prec.sr_groups)
        pix = np.empty((h * w, 3), np.uint8)
        # pixel = out_real * 256 (input read as p/256; the net is positively homogeneous)
        pixels_s64(cache.out, cache.out_exp + 8, pix)
        return pix.reshape(h, w, 3)

    def loss(self, inp, target, w8=None, tile=None):
        """The L1 loss numerator of (inp -> target) without keeping any activation: (sum, exp),
        real loss sum * 2**exp. ``tile``: as in predict, tile by tile with a HALO margin, each
        tile with its own Eq. 11 scales; the tiles' integer sums are added exactly."""
        h, w, _ = inp.shape
        tile = tile or max(h, w)
        parts = []
        for y in range(0, h, tile):
            for x in range(0, w, tile):
                y0, x0 = max(0, y - HALO), max(0, x - HALO)
                y1, x1 = min(h, y + tile + HALO), min(w, x + tile + HALO)
                cache = self.forward(np.ascontiguousarray(inp[y0:y1, x0:x1]), w8=w8, keep=False)
                ty, tx = min(tile, h - y), min(tile, w - x)
                out = cache.out.reshape(y1 - y0, x1 - x0, 3)[y - y0:y - y0 + ty,
                                                              x - x0:x - x0 + tx]
                out = np.ascontiguousarray(out).reshape(-1, 3)
                e = cache.out_exp
                if -8 - e > 54:
                    raise ArithmeticError("target shift out of range")
                scratch = np.empty(out.shape, np.int8)
                tgt = np.ascontiguousarray(target[y:y + ty, x:x + tx]).reshape(-1, 3)
                parts.append((int(l1_grad_s64(out, tgt, -8 - e, scratch)), e))
        e = min(p[1] for p in parts)
        return sum(t << (pe - e) for t, pe in parts), e

    # -- loss and backward ----------------------------------------------------------------------
    def loss_grad(self, cache, target):
        """L1 loss numerator and its gradient.

        The mean-L1 gradient is sign(out - target) / N. Its power-of-two part goes into the
        scale: the int8 sign gets scale 7 - ceil(log2 N), i.e. real value sign * 2**-ceil(log2 N);
        the rest, 2**ceil(log2 N) / N in (1/2, 1], is folded into the learning rate
        (floatpath.convert.lr_to_fixed). Without it the summed gradient would be N times the
        mean and saturate when Eq. 15 moves it to the (much smaller) scale of the weights.

        Returns (sum |out - target| as int, its exponent, grad)."""
        h, w, _ = target.shape
        e = cache.out_exp
        if -8 - e > 54:
            raise ArithmeticError("target shift out of range")
        grad = np.empty((h * w, 3), np.int8)
        total = l1_grad_s64(cache.out, target.reshape(h * w, 3), -8 - e, grad)
        return int(total), e, QTensor(grad.reshape(h, w, 3), 7 - ceil_log2(target.size))

    def backward(self, cache, grad, record=None, update=None, observe=None):
        """Masked backward pass (Eq. 6, 9); consumes ``cache`` (each layer's stored input is
        released once used). Returns one weight-gradient QTensor per layer
        ((9*C_in, n_kept), int32 for 'ours', int8 for 'standard'; None if nothing is kept).

        ``update=(lr_mult, lr_shift)``: apply each layer's SGD update to its master weights as
        soon as its gradient exists (and return nothing), so few weight gradients are alive.
        The result equals ``apply(backward(...))``: the activation gradients use the int8
        forward weights, which are only re-derived by the caller afterwards. Updating, each
        layer's weight gradient and update may run on threads.side_thread() while the next
        activation gradient is computed (under load; the same integers: nothing in the chain
        reads them). ``observe(layer, gq)`` sees each layer's weight gradient before it is
        applied (intsr.mest), in order, on the caller's thread."""
        h, w, _ = grad.shape
        grads = [None] * NUM_LAYERS
        side = side_thread() if update is not None and observe is None else None
        pending, todo = [], collections.deque()  # side futures; weight gradients not begun

        def weight_grad(layer, x, g, order):
            dw = wgrad3x3(_as_unsigned(x.value), g.value)
            if order is not None:  # rows back to the masters' order
                c = x.shape[2]
                dw = dw.reshape(9, c, -1)[:, np.argsort(order)].reshape(9 * c, -1)
            st = None if self.static is None else self.static["wgrad"][layer]
            gq = _weight_grad(dw, x.exp + g.exp, self._master_bits(layer), self.nearest, st)
            del dw
            if record is not None:
                record["wgrad"][layer].append(gq.scale)
            if observe is not None:
                observe(layer, gq)
            if update is None:
                grads[layer] = gq
            else:
                self._update_layer(layer, gq, *update)

        def take_one():
            try:
                args = todo.popleft()  # atomic: each layer is taken by one thread
            except IndexError:
                return
            weight_grad(*args)

        g = grad
        try:
            for layer in range(NUM_LAYERS - 1, -1, -1):
                kept = self.kept[layer]
                if kept.size == 0:
                    break  # nothing trained here, and no gradient reaches the layers below
                x = cache.acts[layer]
                self.macs += h * w * 9 * x.shape[2] * kept.size
                args = (layer, x, g, cache.order[layer - 1] if layer > 0 else None)
                if side is None:
                    weight_grad(*args)
                else:
                    todo.append(args)
                    pending.append(side.submit(take_one))
                if layer == 0:
                    break
                kin = self.kept[layer - 1]
                if kin.size == 0:
                    break
                # Stored in kept-first order, the kept channels are the first columns on both
                # sides of the product, and the ReLU gate is a view.
                act = cache.acts[layer].value.reshape(h * w, -1)
                gate = act[:, :kin.size]
                wq = cache.w8[layer]
                acc, m = agrad3x3(g.value, wq.value, np.arange(kin.size), np.arange(kept.size),
                                  GATE_MASK, gate)
                self.macs += h * w * 9 * kept.size * kin.size
                st = None if self.static is None else self.static["grad"][layer - 1]
                gq = requantize(acc.reshape(h * w, -1), g.exp + wq.exp, gate, GATE_MASK,
                                self.nearest, st, bits=self.prec.grad[layer - 1], max_abs=m)
                if record is not None:
                    record["grad"][layer - 1].append(gq.scale)
                g = QTensor(gq.value.reshape(h, w, -1), gq.scale)
                # Peak memory: the int32 accumulator (4x the int8 gradient) and this layer's
                # stored input (last used as the gate above) must not outlive the layer.
                del acc, act, gate, gq
                cache.acts[layer] = None
            while todo:  # the chain is done: this thread takes what the side has not
                take_one()
        finally:
            todo.clear()
            for f in pending:  # every update is in before the step returns, or raises
                f.result()
        return grads

    # -- update -------------------------------------------------------------------------------
    def apply(self, grads, lr_mult, lr_shift):
        """SGD step, Eq. 15 ('ours') or Eq. 12-13 ('standard'), on the kept columns only."""
        for layer, gq in enumerate(grads):
            if gq is not None:
                self._update_layer(layer, gq, lr_mult, lr_shift)
        self._derive_forward_weights()

    def _master_bits(self, layer):
        """Width of ``layer``'s trained weights: its masters' ('ours'), or 8 ('standard')."""
        return self.prec.master[layer] if self.mode == "ours" else 8

    def _update_layer(self, layer, gq, lr_mult, lr_shift):
        bits = self._master_bits(layer)
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        wq = self.weights[layer]
        flat = wq.value.reshape(-1, wq.shape[3])
        out = np.empty(flat.shape, np.int64)
        # Eq. 15 line 1 / Eq. 12: the gradient moves from its scale to the weight's.
        g_shift = gq.scale - wq.scale
        sgd_update_s32(flat, gq.value, self.kept[layer], g_shift, lr_mult, lr_shift,
                       self.nearest, lo, hi, out)
        scale = wq.scale
        if bits > 8:
            # Eq. 15 line 2, Q32(., s_theta): if a master outgrew its bits, the scale grows.
            m = max(int(out.max()), -int(out.min()))  # no |out| temporary
            if m > (1 << (bits - 1)) - 1:
                extra = m.bit_length() - (bits - 1)
                out = shift_round(out, -extra, "nearest" if self.nearest else "floor")
                scale += extra
        self.weights[layer] = QTensor(saturate(out, bits).reshape(wq.shape), scale)

    def step(self, inp, target, lr_mult, lr_shift, record=None, observe=None):
        """One SGD step on (inp -> target), both (H, W, 3) uint8. Returns (loss_num, loss_exp)."""
        cache = self.forward(inp, record)
        total, e, grad = self.loss_grad(cache, target)
        self.backward(cache, grad, record, update=(lr_mult, lr_shift), observe=observe)
        self._derive_forward_weights()
        return total, e

