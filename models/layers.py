"""Building blocks: convolutions, ELIC residual bottlenecks, attention and masked convolutions.

The entropy path's layers take an optional ``ActQuant`` (``quant.py``): given one they are
exact integer layers, without it ordinary float layers.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from stcm.config import QuantSpec
from stcm.models.quant import ActQuant, QConv2d, QConvTranspose2d


def conv(cin: int, cout: int, k: int = 5, stride: int = 1, act: ActQuant | None = None,
         weight_bits: int = 8, bias: bool = True, groups: int = 1) -> nn.Conv2d:
    if act is not None:
        return QConv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias, act=act,
                       weight_bits=weight_bits, groups=groups)
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias, groups=groups)


def deconv(cin: int, cout: int, k: int = 5, stride: int = 2, act: ActQuant | None = None,
           weight_bits: int = 8) -> nn.ConvTranspose2d:
    # output_padding makes the output exactly stride x the input size.
    if act is not None:
        return QConvTranspose2d(cin, cout, k, stride, k // 2, stride - 1, act=act,
                                weight_bits=weight_bits)
    return nn.ConvTranspose2d(cin, cout, k, stride=stride, padding=k // 2,
                              output_padding=stride - 1)


def conv1x1(cin: int, cout: int, act: ActQuant | None = None, weight_bits: int = 8,
            bias: bool = True) -> nn.Conv2d:
    if act is not None:
        return QConv2d(cin, cout, 1, bias=bias, act=act, weight_bits=weight_bits)
    return nn.Conv2d(cin, cout, 1, bias=bias)


def qconv(spec: QuantSpec | None, cin: int, cout: int, k: int, signed: bool,
          parts: tuple[int, ...] | None = None, **kwargs) -> nn.Module:
    """``conv`` (k > 1) or ``conv1x1``, exact when ``spec`` is given; ``signed`` says whether
    its input can be negative (False right after a ReLU)."""
    act = ActQuant.of(spec, signed, parts) if spec is not None else None
    bits = spec.weight_bits if spec is not None else 8
    if k == 1:
        return conv1x1(cin, cout, act, bits, **kwargs)
    return conv(cin, cout, k, act=act, weight_bits=bits, **kwargs)


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


class MaskedConv2d(QConv2d):
    """A convolution whose kernel taps outside ``mask`` are forced to zero.

    The mask multiplies the weight in every forward, so masked taps get no gradient and stay
    zero in exported weights (the export bakes ``weight * mask``, quantized when exact).
    """

    def __init__(self, cin: int, cout: int, mask: np.ndarray, bias: bool = True,
                 act: ActQuant | None = None, weight_bits: int = 8):
        k = mask.shape[0]
        super().__init__(cin, cout, k, padding=k // 2, bias=bias, act=act,
                         weight_bits=weight_bits)
        self.register_buffer("mask", torch.from_numpy(np.ascontiguousarray(mask, np.float32))
                             .view(1, 1, k, k), persistent=False)

    def raw_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def masked_weight(self) -> torch.Tensor:
        """The kernel the layer computes with: masked, and quantized when exact."""
        return self.coded_weights()[0]


class MaskedResidualBlock(nn.Module):
    """A residual bottleneck whose 3x3 convolution is masked (paper section 3.2): placed between
    stacked masked layers it prevents the degradation of deep context stacks (paper Table 4)
    while keeping causality (1x1 convolutions and the skip read only the current position)."""

    def __init__(self, n: int, mask3: np.ndarray, spec: QuantSpec | None = None):
        super().__init__()
        h = max(n // 2, 1)
        self.reduce = qconv(spec, n, h, 1, signed=True)
        self.masked = masked_conv(spec, h, h, mask3, signed=False)
        self.expand = qconv(spec, h, n, 1, signed=False)
        # Exact: both terms of the skip sum on one grid, so the sum is exact in any order.
        self.sum_q = ActQuant.of(spec, signed=True) if spec is not None else None

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.sum_q is None else self.sum_q(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.skip(x)
        h = torch.relu(self.reduce(x))
        h = torch.relu(self.masked(h))
        return x + self.skip(self.expand(h))


def masked_conv(spec: QuantSpec | None, cin: int, cout: int, mask: np.ndarray, signed: bool,
                bias: bool = True) -> MaskedConv2d:
    """A masked convolution, exact when ``spec`` is given."""
    if spec is None:
        return MaskedConv2d(cin, cout, mask, bias)
    return MaskedConv2d(cin, cout, mask, bias, act=ActQuant.of(spec, signed),
                        weight_bits=spec.weight_bits)
