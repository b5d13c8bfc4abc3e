"""Float -> integer conversions at the boundary of the online path, done once per run:
weights (Eq. 14 / Eq. 10), the learning rate (an integer multiplier and shift) and the blur
kernel (fixed point). Nothing after these conversions touches a float value."""
import numpy as np

from intsr.kernels.noise_u8 import MAX_SIGMA_Q8
from intsr.quant import QTensor, ceil_log2, dynamic_scale, quantize

KERNEL_BITS = 16
# 255 * sum|k| * 2**KERNEL_BITS must stay below 2**31 in the int32 Eq. 1 accumulator.
_KERNEL_ABS_LIMIT = ((1 << 31) - 1) // 255


def weights_to_int(weights, mode="ours", rounding="nearest"):
    """Float HWIO weights -> QTensors: int32 masters (Eq. 14, mode 'ours') or int8 (Eq. 10,
    mode 'standard'), one Eq. 11 scale per layer."""
    bits = 32 if mode == "ours" else 8
    out = []
    for w in weights:
        s = dynamic_scale(w)
        out.append(QTensor(quantize(w, s, bits, rounding), s))
    return out


def lr_to_fixed(lr, n_outputs):
    """The SGD step size for the mean-L1 loss over ``n_outputs`` values as ``(mult, shift)``
    with ``lr_eff = mult * 2**-shift``, ``2**15 <= mult < 2**16`` (16 significant bits).

    ``lr_eff = lr * 2**ceil(log2 N) / N * 256 / 255``. The first factor: IntNet.loss_grad
    scales the L1 sign by 2**-ceil(log2 N) instead of 1/N. The second: the integer network reads
    pixels as p/256 while the float network reads p/255; the net is positively homogeneous, so
    activations shrink by 255/256 and so does the weight gradient."""
    if not np.isfinite(lr) or lr <= 0:
        raise ValueError("learning rate must be a positive finite number")
    x = float(lr) * (1 << ceil_log2(n_outputs)) / n_outputs * 256.0 / 255.0
    frac, e = np.frexp(x)  # x = frac * 2**e, frac in [0.5, 1)
    mult = int(np.floor(frac * 65536.0 + 0.5))
    shift = 16 - int(e)
    if mult == 65536:
        mult, shift = 32768, shift - 1
    if shift < 0 or shift > 62:
        raise ValueError(f"learning rate {lr} is out of the representable range")
    return mult, shift


def kernel_to_fixed(kernel):
    """Blur kernel -> int32 taps with KERNEL_BITS fractional bits summing to exactly
    2**KERNEL_BITS (the normalised kernel, rounded to nearest; the rounding residue goes to the
    largest tap so that flat regions keep their value exactly)."""
    k = np.asarray(kernel, np.float64)
    total = k.sum()
    kq = np.floor(k / total * (1 << KERNEL_BITS) + 0.5).astype(np.int64)
    kq[np.unravel_index(np.argmax(kq), kq.shape)] += (1 << KERNEL_BITS) - kq.sum()
    if np.abs(kq).sum() > _KERNEL_ABS_LIMIT:
        raise ValueError("kernel has too much negative mass for the integer correlation")
    return kq.astype(np.int32)


def noise_to_fixed(sigma):
    """Noise standard deviation in 8-bit levels -> ``sigma_q8``, 8 fractional bits, rounded to
    nearest (intsr.kernels.noise_u8), within [0, MAX_SIGMA_Q8]."""
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"noise must be a finite number of levels >= 0, not {sigma}")
    q = int(np.floor(float(sigma) * 256 + 0.5))
    if q > MAX_SIGMA_Q8:
        raise ValueError(f"noise of {sigma} levels is over the {MAX_SIGMA_Q8 // 256} the son "
                         f"generator takes")
    return q
