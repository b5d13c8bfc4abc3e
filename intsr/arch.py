"""The network's architecture, once: 8 convolutions 3x3, channels 3-64x7-3, no biases, ReLU
between layers, output = input + net(input) with input the bicubic-upsampled image.

Everything that needs a layer count or a shape (the integer model, the float reference, the
pruning solver, the cost model, the weight files, the PyTorch trainer) takes it from here.
Imports nothing: ``import intsr.arch`` costs nothing.

Weight layout inside intsr is HWIO, ``(3, 3, c_in, c_out)``: the paper's
``f_h x f_w x c_in x c_out`` (Section IV-B). Files exchanged with PyTorch hold OIHW; the
conversion happens where files are read and written (intsr.weights).
"""
CHANNELS = (3, 64, 64, 64, 64, 64, 64, 64, 3)
NUM_LAYERS = len(CHANNELS) - 1
KSIZE = 3
HALO = NUM_LAYERS * (KSIZE // 2)  # pixels one output depends on, in each direction


def layer_shapes():
    """HWIO shape of every layer's weight, first to last."""
    return [(KSIZE, KSIZE, CHANNELS[i], CHANNELS[i + 1]) for i in range(NUM_LAYERS)]


def oihw_shapes():
    """OIHW shape of every layer's weight (PyTorch's ``Conv2d.weight``), first to last."""
    return [(co, ci, kh, kw) for kh, kw, ci, co in layer_shapes()]


def num_weights():
    """224,640 for the paper's network."""
    return sum(kh * kw * ci * co for kh, kw, ci, co in layer_shapes())
