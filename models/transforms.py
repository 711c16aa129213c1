"""Main and hyper transforms: g_a, g_s (one of two backbones), h_a, h_s.

Strides: g_a downsamples by 16, h_a by another 4, so inputs are padded to multiples of 64.
Both backbones map an image to the same latent contract, (M, H/16, W/16):

- ``elic``: ELIC's four strided 5x5 convolutions with residual bottlenecks between them.
- ``hl``: HL-RSCompNet-style (Xiang et al., the paper's ref [44]). A Haar split
  (models/wavelet.py) halves the resolution into the low band LL and the three high bands;
  a low- and a high-frequency branch (three strided stages each) process them separately and
  a 3x3 convolution fuses both into y. The synthesis mirrors it: a 3x3 convolution splits the
  latent into the two branches, which rebuild LL and the high bands, merged back exactly.
  Every strided stage runs at half the resolution of ELIC's (hl-small's transforms count
  40 % of small's MACs); the branches see edges and smooth content apart.
"""
from __future__ import annotations

import torch
from torch import nn

from stcm.config import BACKBONES, ModelConfig
from stcm.models.layers import AttentionBlock, ResidualBottleneck, conv, deconv
from stcm.models.quant import ActQuant
from stcm.models.wavelet import HaarMerge, HaarSplit

DOWNSAMPLE = 16
HYPER_DOWNSAMPLE = 4
PAD_MULTIPLE = DOWNSAMPLE * HYPER_DOWNSAMPLE


def _blocks(n: int, count: int) -> list[nn.Module]:
    return [ResidualBottleneck(n) for _ in range(count)]


def _attention(n: int, cfg: ModelConfig) -> list[nn.Module]:
    return [AttentionBlock(n)] if cfg.attention else []


def elic_analysis(cfg: ModelConfig) -> nn.Sequential:
    n, b = cfg.N, cfg.res_blocks
    return nn.Sequential(
        conv(cfg.in_channels, n, 5, 2), *_blocks(n, b),
        conv(n, n, 5, 2), *_blocks(n, b), *_attention(n, cfg),
        conv(n, n, 5, 2), *_blocks(n, b),
        conv(n, cfg.M, 5, 2), *_attention(cfg.M, cfg),
    )


def elic_synthesis(cfg: ModelConfig) -> nn.Sequential:
    n, b = cfg.N, cfg.res_blocks
    return nn.Sequential(
        *_attention(cfg.M, cfg),
        deconv(cfg.M, n), *_blocks(n, b),
        deconv(n, n), *_attention(n, cfg), *_blocks(n, b),
        deconv(n, n), *_blocks(n, b),
        deconv(n, cfg.in_channels),
    )


def _down_branch(cin: int, n: int, blocks: int) -> nn.Sequential:
    """Three strided stages: (cin, H, W) -> (n, H/8, W/8)."""
    return nn.Sequential(conv(cin, n, 5, 2), *_blocks(n, blocks),
                         conv(n, n, 5, 2), *_blocks(n, blocks),
                         conv(n, n, 5, 2), *_blocks(n, blocks))


def _up_branch(n: int, cout: int, blocks: int) -> nn.Sequential:
    """Mirror of ``_down_branch``: (n, h, w) -> (cout, 8h, 8w)."""
    return nn.Sequential(*_blocks(n, blocks), deconv(n, n), *_blocks(n, blocks),
                         deconv(n, n), *_blocks(n, blocks), deconv(n, cout))


class HLAnalysis(nn.Module):
    """g_a of the ``hl`` backbone: Haar split, a branch per band group, 3x3 fusion."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c, b = cfg.in_channels, cfg.res_blocks
        self.split = HaarSplit(c)
        self.low = _down_branch(c, cfg.N, b)
        self.high = _down_branch(3 * c, cfg.high_features, b)
        self.fuse = conv(cfg.N + cfg.high_features, cfg.M, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.split(x)
        return self.fuse(torch.cat([self.low(low), self.high(high)], 1))


class HLSynthesis(nn.Module):
    """g_s of the ``hl`` backbone: 3x3 split of the latent, a branch per band group, the
    exact Haar merge."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c, b = cfg.in_channels, cfg.res_blocks
        self.widths = (cfg.N, cfg.high_features)
        self.unfuse = conv(cfg.M, sum(self.widths), 3)
        self.low = _up_branch(cfg.N, c, b)
        self.high = _up_branch(cfg.high_features, 3 * c, b)
        self.merge = HaarMerge(c)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        low, high = torch.split(self.unfuse(latent), self.widths, 1)
        return self.merge(self.low(low), self.high(high))


# The backbone is chosen here and nowhere else: (g_a builder, g_s builder) per name.
_BACKBONES = {"elic": (elic_analysis, elic_synthesis), "hl": (HLAnalysis, HLSynthesis)}
assert set(_BACKBONES) == set(BACKBONES)


def analysis(cfg: ModelConfig) -> nn.Module:
    """g_a: image (in_channels, H, W) -> latent y (M, H/16, W/16)."""
    return _BACKBONES[cfg.backbone][0](cfg)


def synthesis(cfg: ModelConfig) -> nn.Module:
    """g_s: latent (M, h, w) -> image (in_channels, 16h, 16w); mirrors g_a."""
    return _BACKBONES[cfg.backbone][1](cfg)


def hyper_analysis(cfg: ModelConfig) -> nn.Sequential:
    """h_a: y (M, h, w) -> z (N, h/4, w/4)."""
    n = cfg.N
    return nn.Sequential(conv(cfg.M, n, 3), nn.ReLU(), conv(n, n, 5, 2), nn.ReLU(), conv(n, n, 5, 2))


def hyper_synthesis(cfg: ModelConfig) -> nn.Sequential:
    """h_s: z_hat (N, h/4, w/4) -> hyper prior features Psi (2M, h, w); exact integer layers
    when ``cfg.exact`` (it decides the coded distributions)."""
    n = cfg.N
    mid = n * 3 // 2
    spec = cfg.quant_spec()

    def act(signed):
        return ActQuant.of(spec, signed) if spec is not None else None

    bits = spec.weight_bits if spec is not None else 8
    return nn.Sequential(deconv(n, n, act=act(True), weight_bits=bits), nn.ReLU(),
                         deconv(n, mid, act=act(False), weight_bits=bits), nn.ReLU(),
                         conv(mid, 2 * cfg.M, 3, act=act(False), weight_bits=bits))
