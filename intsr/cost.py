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
    for l in range(NUM_LAYERS):
        c_in, c_out = CHANNELS[l], CHANNELS[l + 1]
        rows.append((c_in, c_out, c_in if l == 0 else kept[l - 1], kept[l]))
    return rows


def memory_bits(size=32, bits_f=8, bits_w=32, masks=None, reading="table5"):
    """Eq. 16 per layer, in bits (divide the sum by 8 for bytes)."""
    if reading not in ("printed", "table5"):
        raise ValueError("reading must be 'printed' or 'table5'")
    k2 = KSIZE * KSIZE if reading == "table5" else 1
    hw = size * size
    return [hw * co_k * bits_f + k2 * co_k * ci_k * bits_w + k2 * hw * ci * bits_f
            for ci, _, ci_k, co_k in layer_channels(masks)]


def memory_kb(size=32, bits_f=8, bits_w=32, masks=None, reading="table5"):
    """Eq. 16 total in KB (1000 bytes)."""
    return sum(memory_bits(size, bits_f, bits_w, masks, reading)) / 8 / 1000


def cost(size=32, bits_f=8, masks=None):
    """Eq. 17 per layer, as printed:
    b_F {h w c_in (2 c~_out - 1) + c~_in c~_out (2 h w - 1)}."""
    hw = size * size
    return [bits_f * (hw * ci * (2 * co_k - 1) + ci_k * co_k * (2 * hw - 1))
            for ci, _, ci_k, co_k in layer_channels(masks)]


def step_macs(h, w, masks=None):
    """Multiply-accumulates one IntNet step executes on an h x w image: the forward convs, the
    weight gradients of the kept filters, the activation gradients between kept channels.
    The backward pass stops at the first layer (from the top) that keeps nothing."""
    k2, hw = KSIZE * KSIZE, h * w
    rows = layer_channels(masks)
    fwd = sum(hw * k2 * ci * co for ci, co, _, _ in rows)
    back = 0
    for l in range(NUM_LAYERS - 1, -1, -1):
        ci, _, ci_k, co_k = rows[l]
        if co_k == 0:
            break
        back += hw * k2 * ci * co_k
        if l == 0 or ci_k == 0:
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
    copies = sum(k2 * rows[l][0] * rows[l][1] * bits_f for l in layers)
    est = max(k2 * rows[l][0] * rows[l][3] * (8 + 64) for l in layers)
    return act + copies + est


def forward_memory_kb(size=32, tile=128, layers=tuple(range(NUM_LAYERS)), masks=None,
                      bits_f=8):
    """forward_memory_bits in KB (1000 bytes)."""
    return forward_memory_bits(size, tile, layers, masks, bits_f) / 8 / 1000
