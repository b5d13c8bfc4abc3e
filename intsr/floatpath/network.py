"""NumPy float32 reference of the network: forward, masked backward (the same pruned
back-propagation as the integer engine, Eq. 6 and 9) and SGD. The yardstick for the integer
path, and the 'FP' rows of the evaluation."""
import numpy as np

from intsr.arch import NUM_LAYERS
from intsr.kernels.im2col import im2col_3x3_ref as im2col  # plain NumPy, any dtype


def conv3x3(x, w):
    h, wd, _ = x.shape
    return (im2col(x) @ w.reshape(-1, w.shape[3])).reshape(h, wd, -1)


class FloatNet:
    """Float32 twin of model.IntNet. ``weights``: list of HWIO arrays; ``masks`` as IntNet."""

    def __init__(self, weights, masks=None):
        self.weights = [np.array(w, np.float32) for w in weights]
        if masks is None:
            masks = [np.ones(w.shape[3], bool) for w in self.weights]
        self.kept = [np.flatnonzero(m) for m in masks]

    def forward(self, x):
        x = np.asarray(x, np.float32)
        acts = [x]
        h = x
        for layer, w in enumerate(self.weights):
            h = conv3x3(h, w)
            if layer < NUM_LAYERS - 1:
                h = np.maximum(h, 0)
                acts.append(h)
        return acts, x + h

    def predict(self, x):
        return self.forward(x)[1]

    def gradients(self, x, target):
        """Mean-L1 loss and masked weight gradients (None where a layer keeps nothing)."""
        acts, out = self.forward(x)
        diff = out - np.asarray(target, np.float32)
        loss = float(np.abs(diff).mean())
        g = (np.sign(diff) / diff.size).astype(np.float32)
        grads = [None] * NUM_LAYERS
        for layer in range(NUM_LAYERS - 1, -1, -1):
            kept = self.kept[layer]
            if kept.size == 0:
                break
            a = acts[layer]
            h, w, _ = a.shape
            # One long-K product: OpenBLAS is slow on the nine (C, HW) x (HW, n) pieces.
            dw = im2col(a).T @ g.reshape(h * w, -1)
            grads[layer] = dw.reshape(self.weights[layer].shape[:3] + (kept.size,))
            if layer == 0 or self.kept[layer - 1].size == 0:
                break
            kin = self.kept[layer - 1]
            wt = self.weights[layer][:, :, kin][:, :, :, kept][::-1, ::-1].transpose(0, 1, 3, 2)
            dx_ = conv3x3(g, np.ascontiguousarray(wt))
            g = dx_ * (acts[layer][:, :, kin] > 0)
        return loss, grads

    def step(self, x, target, lr):
        loss, grads = self.gradients(x, target)
        for layer, dw in enumerate(grads):
            if dw is not None:
                self.weights[layer][:, :, :, self.kept[layer]] -= lr * dw
        return loss
