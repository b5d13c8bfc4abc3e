"""Eq. 16 (back-propagation memory), Eq. 17 (back-propagation cost) and the analytic MAC count
of one adaptation step, for any gradient masks.

Channel counts per layer l (1-based): ``c_in``, ``c_out`` of the architecture; ``c~_out`` the
kept output channels of mask l (all for the last layer); ``c~_in`` = ``c~_out`` of layer l-1
(the channels whose gradient reaches layer l-1; ``c_in`` for the first layer). Pure integer
arithmetic on counts; KB = 1000 bytes.

Eq. 16 as printed does not give the paper's Table 5. Two readings are provided:
  "printed": sum_l (h w c~_out b_F + c~_out c~_in b_theta + h w c_in b_F) / 8
  "table5" : sum_l (h w c~_out b_F + k^2 c~_out c~_in b_theta + k^2 h w c_in b_F) / 8
i.e. k^2 on the weight term and on the (im2col) input term. With h = w = 32 and all 8 layers,
"table5" gives 19,371.52 / 4,842.88 / 5,516.80 KB for FP32 / 8-bit / ours against the paper's
19,371 / 4,840 / 5,517.
"""
import numpy as np

from intsr.arch import CHANNELS, HALO, KSIZE, NUM_LAYERS


def kept_counts(masks=None):
    """Kept output channels per layer from bool masks (or counts); None: nothing pruned."""
    if masks is None:
        return list(CHANNELS[1:])
    counts = [int(np.sum(m)) if np.ndim(m) else int(m) for m in masks]
    if len(counts) != NUM_LAYERS:
        raise ValueError(f"need {NUM_LAYERS} masks, got {len(counts)}")
    return counts


def layer_channels(masks=None):
    """[(c_in, c_out, c~_in, c~_out)] per layer."""
    kept = kept_counts(masks)
    rows = []
    for layer in range(NUM_LAYERS):
        c_in, c_out = CHANNELS[layer], CHANNELS[layer + 1]
        rows.append((c_in, c_out, c_in if layer == 0 else kept[layer - 1], kept[layer]))
    return rows


def layer_widths(bits_f=8, bits_w=32, precision=None):
    """[(b_in, b_grad, b_theta, b_fwd)] per layer: the stored input activation, the output
    gradient, the masters and the forward weights. Without ``precision`` (intsr.precision) the
    paper's two widths b_F, b_theta (forward weights counted at b_F). With one: the image and the
    L1 sign stay 8-bit, the rest as the precision says."""
    if precision is None:
        return [(bits_f, bits_f, bits_w, bits_f)] * NUM_LAYERS
    p = precision
    return [(8 if layer == 0 else p.act[layer - 1],
             8 if layer == NUM_LAYERS - 1 else p.grad[layer], p.master[layer], p.fwd[layer])
            for layer in range(NUM_LAYERS)]


def memory_bits(size=32, bits_f=8, bits_w=32, masks=None, reading="table5", precision=None):
    """Eq. 16 per layer, in bits (divide the sum by 8 for bytes).

    Per-tensor widths (``precision``): h w c~_out b_grad + k^2 c~_out c~_in b_theta +
    k^2 h w c_in b_in, plus k^2 c_in c_out (b_fwd - 8) for forward weights wider than 8 bits
    (Eq. 16 leaves the int8 forward copy out; a wider one is counted by what it adds). With
    INT8 this is Eq. 16 at b_F = 8, b_theta = 32 exactly."""
    if reading not in ("printed", "table5"):
        raise ValueError("reading must be 'printed' or 'table5'")
    k2 = KSIZE * KSIZE if reading == "table5" else 1
    hw = size * size
    return [hw * co_k * b_g + k2 * co_k * ci_k * b_t + k2 * hw * ci * b_in
            + (KSIZE * KSIZE * ci * co * (b_fwd - 8) if precision is not None else 0)
            for (ci, co, ci_k, co_k), (b_in, b_g, b_t, b_fwd)
            in zip(layer_channels(masks), layer_widths(bits_f, bits_w, precision), strict=True)]


def memory_kb(size=32, bits_f=8, bits_w=32, masks=None, reading="table5", precision=None):
    """Eq. 16 total in KB (1000 bytes)."""
    return sum(memory_bits(size, bits_f, bits_w, masks, reading, precision)) / 8 / 1000


def cost(size=32, bits_f=8, masks=None, precision=None):
    """Eq. 17 per layer, as printed:
    b_F {h w c_in (2 c~_out - 1) + c~_in c~_out (2 h w - 1)}.
    Per-tensor widths: the first term (weight gradient: input x output gradient) at
    max(b_in, b_grad), the second (activation gradient: output gradient x weights) at
    max(b_grad, b_fwd)."""
    hw = size * size
    return [max(b_in, b_g) * hw * ci * (2 * co_k - 1) + max(b_g, b_f) * ci_k * co_k * (2 * hw - 1)
            for (ci, _, ci_k, co_k), (b_in, b_g, _, b_f)
            in zip(layer_channels(masks), layer_widths(bits_f, 32, precision), strict=True)]


def step_work(h, w, masks=None, precision=None):
    """step_macs counted in 8-bit kernel MACs: a 16-bit operand runs its product as two byte
    planes (kernels/planes_x16.py), so each conv, weight gradient and activation gradient
    costs its MACs times the planes of its two operands (the +128 correction, a single output
    channel, is left out). With INT8 (or None) this is step_macs."""
    if precision is None:
        return step_macs(h, w, masks)
    k2, hw = KSIZE * KSIZE, h * w
    rows = layer_channels(masks)
    widths = layer_widths(precision=precision)
    def planes(*bits):
        return np.prod([b // 8 for b in bits])
    total = sum(hw * k2 * ci * co * planes(b_in, b_f)
                for (ci, co, _, _), (b_in, _, _, b_f) in zip(rows, widths, strict=True))
    for layer in range(NUM_LAYERS - 1, -1, -1):
        ci, _, ci_k, co_k = rows[layer]
        b_in, b_g, _, b_f = widths[layer]
        if co_k == 0:
            break
        total += hw * k2 * ci * co_k * planes(b_in, b_g)
        if layer == 0 or ci_k == 0:
            break
        total += hw * k2 * co_k * ci_k * planes(b_g, b_f)
    return int(total)


def step_macs(h, w, masks=None):
    """Multiply-accumulates one IntNet step executes on an h x w image: the forward convs, the
    weight gradients of the kept filters, the activation gradients between kept channels.
    The backward pass stops at the first layer (from the top) that keeps nothing."""
    k2, hw = KSIZE * KSIZE, h * w
    rows = layer_channels(masks)
    fwd = sum(hw * k2 * ci * co for ci, co, _, _ in rows)
    back = 0
    for layer in range(NUM_LAYERS - 1, -1, -1):
        ci, _, ci_k, co_k = rows[layer]
        if co_k == 0:
            break
        back += hw * k2 * ci * co_k
        if layer == 0 or ci_k == 0:
            break
        back += hw * k2 * co_k * ci_k
    return fwd + back


def forward_memory_bits(size=32, tile=128, layers=tuple(range(NUM_LAYERS)), masks=None,
                        bits_f=8):
    """Transient memory of one forward-gradient step (intsr.forwardgrad), in bits: what Eq. 16
    counts for back-propagation, for a method that stores no activation.

        max_l  h' w' (c_in b_F + c_out (b_F + 32))       one layer of one loss pass: its input,
                                                          int32 accumulator and output
      + sum_{l in P} k^2 c_in c_out b_F                  the perturbed int8 copy of each layer
      + max_{l in P} k^2 c_in c~_out (8 + 64)            one direction and the int64 estimate

    h' = min(size, tile + 2 HALO): a loss pass runs tile by tile. P: the perturbed ``layers``
    (0-based), c~_out their kept channels (``masks``). Eq. 16 leaves the accumulator out; a
    loss-only pass has nothing else, so it is counted here. Independent of ``size`` once a tile
    (with its margin) is smaller than the image."""
    side = min(size, tile + 2 * HALO)
    hw, k2 = side * side, KSIZE * KSIZE
    rows = layer_channels(masks)
    act = max(hw * (ci * bits_f + co * (bits_f + 32)) for ci, co, _, _ in rows)
    copies = sum(k2 * rows[layer][0] * rows[layer][1] * bits_f for layer in layers)
    est = max(k2 * rows[layer][0] * rows[layer][3] * (8 + 64) for layer in layers)
    return act + copies + est


def forward_memory_kb(size=32, tile=128, layers=tuple(range(NUM_LAYERS)), masks=None,
                      bits_f=8):
    """forward_memory_bits in KB (1000 bytes)."""
    return forward_memory_bits(size, tile, layers, masks, bits_f) / 8 / 1000
