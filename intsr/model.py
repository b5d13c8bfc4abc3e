"""The network, once: 8 conv layers 3x3, channels 3-64x7-3, no biases, ReLU between layers,
output = input + net(input), where input is the bicubic-upsampled image (RGB in [0, 1]).

Weight layout inside intsr is HWIO, ``(3, 3, c_in, c_out)``: the paper's
``f_h x f_w x c_in x c_out`` (Section IV-B). Files exchanged with PyTorch hold OIHW; the float
path converts at the boundary.
"""
CHANNELS = (3, 64, 64, 64, 64, 64, 64, 64, 3)
NUM_LAYERS = len(CHANNELS) - 1
KSIZE = 3


def layer_shapes():
    """HWIO shape of every layer's weight, first to last."""
    return [(KSIZE, KSIZE, CHANNELS[i], CHANNELS[i + 1]) for i in range(NUM_LAYERS)]


def num_weights():
    return sum(KSIZE * KSIZE * CHANNELS[i] * CHANNELS[i + 1] for i in range(NUM_LAYERS))
