"""The 8-layer SR network (ZSSR/MZSR body without biases), torch side.

The architecture (channels, kernel size) is ``intsr.arch``'s, declared there once. State-dict
keys are ``convs.0.weight`` .. ``convs.7.weight`` (OIHW), the format ``intsr.weights`` reads.
Convolutions are KSIZE x KSIZE (3x3) with zero 'same' padding.
"""
import torch
import torch.nn.functional as F
from torch import nn

from intsr.arch import CHANNELS, KSIZE


class SRNet(nn.Module):
    def __init__(self, channels=CHANNELS):
        super().__init__()
        self.channels = tuple(channels)
        self.convs = nn.ModuleList(
            nn.Conv2d(channels[i], channels[i + 1], KSIZE, padding=KSIZE // 2, bias=False)
            for i in range(len(channels) - 1))
        for c in self.convs:
            nn.init.kaiming_normal_(c.weight, nonlinearity="relu")
        # A near-zero last layer makes the untrained net the bicubic baseline, not noise on it.
        with torch.no_grad():
            self.convs[-1].weight.mul_(0.1)

    def forward(self, x):
        return functional_forward(x, [c.weight for c in self.convs])


def functional_forward(x, weights, grad_masks=None):
    """output = x + net(x) with explicit weights, so MAML can run on adapted copies.

    ``grad_masks``: per layer, a float tensor [c_out] of 0/1. The backward pass then carries
    each layer's output gradient over the kept channels only, as the engine does (Eq. 6 and
    Eq. 9: pruned filters get no weight gradient and pass no activation gradient down)."""
    h = x
    last = len(weights) - 1
    for i, w in enumerate(weights):
        h = F.conv2d(h, w, padding=KSIZE // 2)
        if grad_masks is not None and h.requires_grad:
            m = grad_masks[i][None, :, None, None]
            h.register_hook(lambda g, m=m: g * m)
        if i != last:
            h = F.relu(h)
    return x + h
