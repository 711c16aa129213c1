"""Building blocks: convolutions, ELIC residual bottlenecks, attention and masked convolutions."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def conv(cin: int, cout: int, k: int = 5, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def deconv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    # output_padding makes the output exactly stride x the input size.
    return nn.ConvTranspose2d(cin, cout, k, stride=stride, padding=k // 2,
                              output_padding=stride - 1)


def conv1x1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1)


class ResidualBottleneck(nn.Module):
    """ELIC's residual bottleneck: 1x1 N->N/2, ReLU, 3x3, ReLU, 1x1 N/2->N, plus skip."""

    def __init__(self, n: int):
        super().__init__()
        h = max(n // 2, 1)
        self.body = nn.Sequential(conv1x1(n, h), nn.ReLU(), conv(h, h, 3), nn.ReLU(), conv1x1(h, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class AttentionBlock(nn.Module):
    """Simplified attention (Cheng et al. 2020, used by ELIC): a trunk and a sigmoid mask
    branch of residual units, out = x + trunk(x) * sigmoid(mask(x))."""

    def __init__(self, n: int):
        super().__init__()
        self.trunk = nn.Sequential(*[ResidualBottleneck(n) for _ in range(3)])
        self.mask = nn.Sequential(*[ResidualBottleneck(n) for _ in range(3)], conv1x1(n, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.trunk(x) * torch.sigmoid(self.mask(x))


class MaskedConv2d(nn.Conv2d):
    """A convolution whose kernel taps outside ``mask`` are forced to zero.

    The mask multiplies the weight in every forward, so masked taps get no gradient and stay
    zero in exported weights (the export bakes ``weight * mask``).
    """

    def __init__(self, cin: int, cout: int, mask: np.ndarray, bias: bool = True):
        k = mask.shape[0]
        super().__init__(cin, cout, k, padding=k // 2, bias=bias)
        self.register_buffer("mask", torch.from_numpy(np.ascontiguousarray(mask, np.float32))
                             .view(1, 1, k, k), persistent=False)

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.masked_weight(), self.bias)


class MaskedResidualBlock(nn.Module):
    """A residual bottleneck whose 3x3 convolution is masked (paper section 3.2): placed between
    stacked masked layers it prevents the degradation of deep context stacks (paper Table 4)
    while keeping causality (1x1 convolutions and the skip read only the current position)."""

    def __init__(self, n: int, mask3: np.ndarray):
        super().__init__()
        h = max(n // 2, 1)
        self.reduce = conv1x1(n, h)
        self.masked = MaskedConv2d(h, h, mask3)
        self.expand = conv1x1(h, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.reduce(x))
        h = torch.relu(self.masked(h))
        return x + self.expand(h)
