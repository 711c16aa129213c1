"""One level of the orthonormal 2-D Haar wavelet transform, as fixed convolutions.

The HL backbone (models/transforms.py) splits the image into its low-frequency band LL and
its three high-frequency bands (LH, HL, HH) before any learned layer, and its synthesis ends
by merging the bands back. The Haar filters are orthonormal, so the merge is the exact
inverse of the split (up to float rounding) and the split costs the backbone no capacity.

Both directions are one convolution with the same fixed (4C, C, 2, 2) kernel, stride 2 -
forward ``conv2d``, inverse ``conv_transpose2d`` (the kernel's transpose is its inverse) -
so they export to ONNX as plain Conv/ConvTranspose nodes that every backend and TensorRT
run. Output channels are band-major: ``[LL of every channel, LH.., HL.., HH..]``, so
``bands[:, :C]`` is the low band and ``bands[:, C:]`` the high ones.

Example:
    >>> import torch
    >>> x = torch.rand(1, 3, 8, 8)
    >>> low, high = haar_split(x)
    >>> low.shape, high.shape
    (torch.Size([1, 3, 4, 4]), torch.Size([1, 9, 4, 4]))
    >>> torch.allclose(haar_merge(low, high), x, atol=1e-6)
    True
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Rows: LL, LH (detail across columns), HL (across rows), HH; each a 2x2 filter, norm 1.
_FILTERS = torch.tensor([[[1.0, 1.0], [1.0, 1.0]],
                         [[1.0, -1.0], [1.0, -1.0]],
                         [[1.0, 1.0], [-1.0, -1.0]],
                         [[1.0, -1.0], [-1.0, 1.0]]]) / 2


def haar_kernel(channels: int) -> torch.Tensor:
    """The (4C, C, 2, 2) kernel: output channel ``k*C + c`` is filter k on input channel c."""
    kernel = torch.zeros(4 * channels, channels, 2, 2)
    for k in range(4):
        for c in range(channels):
            kernel[k * channels + c, c] = _FILTERS[k]
    return kernel


def haar_split(x: torch.Tensor, kernel: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) with even H, W -> low (B, C, H/2, W/2), high (B, 3C, H/2, W/2)."""
    c = x.shape[1]
    kernel = haar_kernel(c).to(x) if kernel is None else kernel
    bands = F.conv2d(x, kernel, stride=2)
    return bands[:, :c], bands[:, c:]


def haar_merge(low: torch.Tensor, high: torch.Tensor, kernel: torch.Tensor | None = None
               ) -> torch.Tensor:
    """Inverse of ``haar_split``: low (B, C, h, w), high (B, 3C, h, w) -> (B, C, 2h, 2w)."""
    c = low.shape[1]
    if high.shape[1] != 3 * c:
        raise ValueError(f"high bands need 3x the low band's {c} channels, got {high.shape[1]}")
    kernel = haar_kernel(c).to(low) if kernel is None else kernel
    return F.conv_transpose2d(torch.cat([low, high], 1), kernel, stride=2)


class HaarSplit(nn.Module):
    """``haar_split`` as a module with its kernel as a (non-persistent) buffer, so traced
    graphs hold it as a constant and checkpoints do not store it."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("kernel", haar_kernel(channels), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return haar_split(x, self.kernel)


class HaarMerge(nn.Module):
    """``haar_merge`` as a module (see ``HaarSplit``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("kernel", haar_kernel(channels), persistent=False)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return haar_merge(low, high, self.kernel)
