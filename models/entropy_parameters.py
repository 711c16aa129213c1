"""The entropy-parameter network: per channel group, hyper prior + channel context + temporal
context + spatial context -> (mean, scale) of the group's Gaussian (paper Fig. 1b, ELIC).

Decode order and what each group may see:

    for group k = 0 .. K-1:
        side_k  = [Psi, chan_k(y_hat[groups < k]), temp_k(y_ref)]     once per group
        for each step of the group's spatial order:
            spat_k  = spatial_k(y_hat_k decoded so far)                  new positions only
            mean, scale = aggregate_k(side_k, spat_k)

The first 1x1 layer of ``aggregate_k`` is split into a side projection (with bias) and a
spatial projection (no bias): their sum equals one 1x1 convolution over the concatenation,
but the side part is computed once per group, not once per step.
"""
from __future__ import annotations

import torch
from torch import nn

from stcm.models.config import ModelConfig
from stcm.models.context import SpatialContext
from stcm.models.layers import conv, conv1x1


class ChannelContext(nn.Module):
    """Reads all decoded groups before k (ELIC's channel context): three 5x5 convolutions."""

    def __init__(self, cin: int, width: int, cout: int):
        super().__init__()
        self.net = nn.Sequential(conv(cin, width, 5), nn.ReLU(), conv(width, width, 5), nn.ReLU(),
                                 conv(width, cout, 5))

    def forward(self, y_prev: torch.Tensor) -> torch.Tensor:
        return self.net(y_prev)


class TemporalContext(nn.Module):
    """Reads the fully decoded latent of the reference image (paper section 3.3); every
    position of it is known before decoding starts, so no mask is needed."""

    def __init__(self, cin: int, width: int, cout: int):
        super().__init__()
        self.net = nn.Sequential(conv(cin, width, 3), nn.ReLU(), conv(width, cout, 3))

    def forward(self, y_ref: torch.Tensor) -> torch.Tensor:
        return self.net(y_ref)


class ParamAggregation(nn.Module):
    """Three 1x1 convolutions -> (mean, scale) of the group; the first one split in two."""

    def __init__(self, side_in: int, spatial_in: int, hidden: int, channels: int):
        super().__init__()
        self.side_proj = conv1x1(side_in, hidden)
        self.spatial_proj = nn.Conv2d(spatial_in, hidden, 1, bias=False) if spatial_in else None
        self.tail = nn.Sequential(nn.ReLU(), conv1x1(hidden, hidden), nn.ReLU(),
                                  conv1x1(hidden, 2 * channels))
        self.channels = channels

    def forward(self, side_pre: torch.Tensor, spatial: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``side_pre`` is ``side_proj(side)``; ``spatial`` the spatial context features."""
        h = side_pre if spatial is None else side_pre + self.spatial_proj(spatial)
        out = self.tail(h)
        return out[:, : self.channels], out[:, self.channels:]


class EntropyParameters(nn.Module):
    """All groups' context branches and aggregations."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.groups = cfg.groups
        self.channel = nn.ModuleList()
        self.temporal = nn.ModuleList()
        self.spatial = nn.ModuleList()
        self.aggregate = nn.ModuleList()
        for k, ck in enumerate(cfg.groups):
            prev = sum(cfg.groups[:k])
            chan_out = 2 * ck if k > 0 else 0
            temp_out = 2 * ck if cfg.temporal else 0
            feats = cfg.context_features(k)
            self.channel.append(ChannelContext(prev, cfg.channel_context_width, chan_out)
                                if k > 0 else nn.Identity())
            self.temporal.append(TemporalContext(cfg.M, cfg.temporal_width, temp_out)
                                 if cfg.temporal else nn.Identity())
            self.spatial.append(
                SpatialContext(cfg.context, ck, feats, cfg.context_layers, cfg.context_residual,
                               cfg.context_kernel) if feats else nn.Identity())
            side_in = 2 * cfg.M + chan_out + temp_out
            hidden = max(cfg.aggregation_mult * ck, 16)
            self.aggregate.append(ParamAggregation(side_in, feats, hidden, ck))

    def group_slices(self) -> list[slice]:
        starts = [sum(self.groups[:k]) for k in range(len(self.groups))]
        return [slice(s, s + c) for s, c in zip(starts, self.groups)]

    def side(self, k: int, hyper: torch.Tensor, y_prev: torch.Tensor | None,
             y_ref: torch.Tensor | None) -> torch.Tensor:
        """Side projection of group k (its first aggregation layer before the spatial term).

        Args:
            hyper: Psi, the hyper prior features (B, 2M, h, w).
            y_prev: decoded latent of groups < k (B, sum(groups[:k]), h, w); None for k = 0.
            y_ref: the reference image's decoded latent (B, M, h, w), or None (zeros: the
                first image of a series, paper section 3.3).
        """
        parts = [hyper]
        if k > 0:
            parts.append(self.channel[k](y_prev))
        if self.cfg.temporal:
            if y_ref is None:
                y_ref = hyper.new_zeros(hyper.shape[0], self.cfg.M, *hyper.shape[-2:])
            parts.append(self.temporal[k](y_ref))
        return self.aggregate[k].side_proj(torch.cat(parts, dim=1))

    def forward(self, y_hat: torch.Tensor, hyper: torch.Tensor, y_ref: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-tensor (training / reference) computation of all groups' (means, scales).

        ``y_hat`` is the complete quantized latent; the masks make each position's parameters
        depend only on what the decoder has at that position's step. This is the oracle that
        the runtime's step-by-step wavefront must reproduce.
        """
        means, scales = [], []
        for k, sl in enumerate(self.group_slices()):
            side = self.side(k, hyper, y_hat[:, : sl.start] if k else None, y_ref)
            spatial = self.spatial[k](y_hat[:, sl]) if self.cfg.context != "none" else None
            mean, scale = self.aggregate[k](side, spatial)
            means.append(mean)
            scales.append(scale)
        return torch.cat(means, dim=1), torch.cat(scales, dim=1)
