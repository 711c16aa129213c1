"""Transposed convolutions as one convolution + pixel shuffle (sub-pixel form).

The same function, computed as plain convolutions: the torch backend runs g_s's narrow
layers so (oneDNN's transposed kernels are slow for few outputs), and the int8 synthesis
(``export.int8``) quantizes g_s in this form, since onnxruntime quantizes convolutions but
not transposed ones.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class SubpixelConvTranspose(nn.Module):
    """A stride-s ConvTranspose2d (padding k//2, output_padding s-1) as one convolution with
    s*s phases of outputs followed by a pixel shuffle: output phase (a, b) is a plain
    correlation of the input with the kernel taps that land on it."""

    def __init__(self, deconv: nn.ConvTranspose2d):
        super().__init__()
        (k, _), (s, _), (p, _) = deconv.kernel_size, deconv.stride, deconv.padding
        if deconv.output_padding != (s - 1, s - 1) or deconv.groups != 1 or p != k // 2:
            raise ValueError(f"no sub-pixel form for {deconv}")
        w = deconv.weight.detach()  # (Cin, Cout, k, k)
        radius = max(abs(e) for a in range(s) for e in _offsets(a, k, s, p))
        weight = w.new_zeros(w.shape[1], s, s, w.shape[0], 2 * radius + 1, 2 * radius + 1)
        for a in range(s):
            for e in _offsets(a, k, s, p):
                for b in range(s):
                    for f in _offsets(b, k, s, p):
                        weight[:, a, b, :, e + radius, f + radius] = \
                            w[:, :, a + p - s * e, b + p - s * f].t()
        self.weight = nn.Parameter(weight.flatten(0, 2), requires_grad=False)
        self.bias = None if deconv.bias is None else nn.Parameter(
            deconv.bias.detach().repeat_interleave(s * s), requires_grad=False)
        self.radius, self.stride = radius, s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(F.conv2d(x, self.weight, self.bias, padding=self.radius),
                               self.stride)


def _offsets(a: int, k: int, s: int, p: int) -> range:
    """Input offsets e feeding output phase a: kernel tap a + p - s*e must lie in [0, k)."""
    return range(-((k - 1 - a - p) // s), (a + p) // s + 1)


def subpixel_synthesis(g_s: nn.Module, max_channels: int | None = None) -> nn.Module:
    """A copy of g_s (either backbone) with its transposed convolutions of fewer than
    ``max_channels`` outputs (None: all of them) in sub-pixel form; the model's own modules
    are left as they are."""
    fast = copy.deepcopy(g_s)
    for parent in list(fast.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.ConvTranspose2d) and (
                    max_channels is None or child.out_channels < max_channels):
                setattr(parent, name, SubpixelConvTranspose(child))
    return fast
