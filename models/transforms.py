"""Main and hyper transforms (ELIC-style): g_a, g_s, h_a, h_s.

Strides: g_a downsamples by 16, h_a by another 4, so inputs are padded to multiples of 64.
"""
from __future__ import annotations

from torch import nn

from stcm.models.config import ModelConfig
from stcm.models.layers import AttentionBlock, ResidualBottleneck, conv, deconv
from stcm.models.quant import ActQuant

DOWNSAMPLE = 16
HYPER_DOWNSAMPLE = 4
PAD_MULTIPLE = DOWNSAMPLE * HYPER_DOWNSAMPLE


def _blocks(n: int, count: int) -> list[nn.Module]:
    return [ResidualBottleneck(n) for _ in range(count)]


def _attention(n: int, cfg: ModelConfig) -> list[nn.Module]:
    return [AttentionBlock(n)] if cfg.attention else []


def analysis(cfg: ModelConfig) -> nn.Sequential:
    """g_a: image (in_channels, H, W) -> latent y (M, H/16, W/16)."""
    n, b = cfg.N, cfg.res_blocks
    return nn.Sequential(
        conv(cfg.in_channels, n, 5, 2), *_blocks(n, b),
        conv(n, n, 5, 2), *_blocks(n, b), *_attention(n, cfg),
        conv(n, n, 5, 2), *_blocks(n, b),
        conv(n, cfg.M, 5, 2), *_attention(cfg.M, cfg),
    )


def synthesis(cfg: ModelConfig) -> nn.Sequential:
    """g_s: latent (M, h, w) -> image (in_channels, 16h, 16w); mirrors g_a."""
    n, b = cfg.N, cfg.res_blocks
    return nn.Sequential(
        *_attention(cfg.M, cfg),
        deconv(cfg.M, n), *_blocks(n, b),
        deconv(n, n), *_attention(n, cfg), *_blocks(n, b),
        deconv(n, n), *_blocks(n, b),
        deconv(n, cfg.in_channels),
    )


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
